"""Pictures for reports: training loss, and the evaluation's curves (losses and rates, never data);
the synthesis fidelity report's scores are drawn in :mod:`iae_privacy.analysts.quality`."""

from __future__ import annotations

from pathlib import Path

from iae_privacy.network.train import EpochStats

__all__ = ["pyplot", "plot_loss", "plot_tradeoff", "plot_inversion"]


def plot_loss(history: list[EpochStats], path: Path, title: str) -> Path:
    """Train and validation loss per epoch, as a PNG."""
    plt = pyplot()
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


def pyplot():
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(points: list, metric: str, path: Path) -> Path:
    """The paired curve: utility ratio (latent / raw) against each attack's success, one point per k;
    a solid line for z_public, dashed for PCA-k, dotted for the autoencoder-k, a star for a sealed model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    attacks = [("inversion exact match (largest m)", lambda p: p.inversion[-1]["exact"], "o", "C0"),
               ("linkage to own record", lambda p: p.linkage, "s", "C1"),
               ("quasi-identifier combination recovered", lambda p: p.qi_recovery, "^", "C2"),
               ("attribute inference accuracy", lambda p: p.attribute, "D", "C3")]
    styles = {"latent": ("-", "z_public"), "pca": ("--", "PCA-k"), "autoencoder": (":", "autoencoder-k"),
              "sealed": ("none", "sealed model")}
    for kind, (line, name) in styles.items():
        series = [p for p in points if p.kind == kind]
        if not series:
            continue
        utility = [p.utility_ratio for p in series]
        for label, success, marker, colour in attacks:
            xs = [success(p) for p in series]
            ax.plot(xs, utility, marker="*" if kind == "sealed" else marker, linestyle=line, color=colour,
                    label=f"{label} ({name})" if kind == "latent" else None,
                    markersize=10 if kind == "sealed" else 5, alpha=1.0 if kind == "latent" else 0.6)
            if kind in ("latent", "sealed"):
                for p, x, u in zip(series, xs, utility):
                    ax.annotate(p.label, (x, u), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.plot([], [], linestyle=line if line != "none" else "", marker="*" if kind == "sealed" else None,
                color="grey", label=name)
    ax.set_xlabel("attack success (share of held-out rows)")
    ax.set_ylabel(f"utility: {metric} on latent / on raw")
    ax.set_title("utility against attack success, over k (z_public beside PCA-k and autoencoder-k)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_inversion(point, path: Path) -> Path:
    """Per feature, for one k: exact-match rate of the known-plaintext inversion against its baseline."""
    plt = pyplot()
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
