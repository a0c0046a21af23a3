"""Pictures for reports: the training loss curve (values are losses, never data)."""

from __future__ import annotations

from pathlib import Path

from iae_privacy.network.train import EpochStats

__all__ = ["plot_loss"]


def plot_loss(history: list[EpochStats], path: Path, title: str) -> Path:
    """Train and validation loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = [s.epoch for s in history]
    ax.plot(epochs, [s.train_loss for s in history], marker="o", label="train")
    ax.plot(epochs, [s.validation_loss for s in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
