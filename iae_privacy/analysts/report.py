"""Pictures for reports: training loss, and the evaluation's curves (losses and rates, never data)."""

from __future__ import annotations

from pathlib import Path

from iae_privacy.network.train import EpochStats

__all__ = ["plot_loss", "plot_tradeoff", "plot_inversion"]


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(points: list, metric: str, path: Path) -> Path:
    """The paired curve: utility ratio (latent / raw) against each attack's success, one point per k."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    attacks = [("inversion exact match (largest m)", lambda p: p.inversion[-1]["exact"], "o"),
               ("linkage to own record", lambda p: p.linkage, "s"),
               ("quasi-identifier combination recovered", lambda p: p.qi_recovery, "^"),
               ("attribute inference accuracy", lambda p: p.attribute, "D")]
    utility = [p.utility_ratio for p in points]
    for label, success, marker in attacks:
        xs = [success(p) for p in points]
        ax.plot(xs, utility, marker=marker, label=label)
        for p, x, u in zip(points, xs, utility):
            ax.annotate(p.label, (x, u), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("attack success (share of held-out rows)")
    ax.set_ylabel(f"utility: {metric} on latent / on raw")
    ax.set_title("utility against attack success, over k (z_public columns)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_inversion(point, path: Path) -> Path:
    """Per feature, for one k: exact-match rate of the known-plaintext inversion against its baseline."""
    plt = _pyplot()
    names = list(point.inversion_columns)
    attack = [point.inversion_columns[n]["exact"] for n in names]
    baseline = [point.inversion_columns[n]["baseline_exact"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4), dpi=100)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], attack, width=0.4, label=f"inversion from {point.inversion[-1]['m']} leaked rows")
    ax.bar([i + 0.2 for i in x], baseline, width=0.4, label="baseline: most common code")
    ax.set_xticks(list(x), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("exact match (share of rows)")
    ax.set_title(f"known-plaintext inversion per feature, k={point.k}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
