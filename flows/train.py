"""Train flow: profile → fit codec → train (GPU when present) → verify → seal → register → report."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from iae_privacy import progress
from iae_privacy.analysts.report import plot_loss
from iae_privacy.codec import CodecConfig
from iae_privacy.errors import IaeError
from iae_privacy.model.pipeline import fit_model
from iae_privacy.model.registry import transform_key
from iae_privacy.model.verify import verify_roundtrip
from iae_privacy.network.train import TrainConfig
from iae_privacy_flows.common import SAFE_TASK, no_data_in_errors, open_workspace


@task(**SAFE_TASK)
@no_data_in_errors
def train_and_seal(data: str, model: str, home: str, epochs: int, device: str, public_dims: int | None,
                   config: str | None, seconds: float | None) -> dict:
    logger = get_run_logger()
    workspace, keyring = open_workspace(home)
    registry = workspace.models
    version = registry.next_version(registry.check_name(model))

    started: list[bool] = []

    def on_rows(done: int, planned: int) -> None:
        if not started:  # the first batch: the run has started, whatever an epoch will take
            started.append(True)
            logger.info("training started: %d rows per epoch, at most %d epochs", planned // max(epochs, 1), epochs)
        progress.report(f"training {model}: rows", done, planned)

    def on_epoch(s) -> None:
        logger.info("epoch %d: loss %.4f, validation %.4f, %.0f rows/s", s.epoch, s.train_loss,
                    s.validation_loss, s.rows_per_second)
        progress.report(f"training {model}", s.epoch, epochs, "epochs")

    trained, report = fit_model(
        data, transform_key(keyring, model, version), CodecConfig.load(config) if config else None,
        TrainConfig(epochs=epochs, device=device, max_seconds=seconds), public_dims, on_epoch=on_epoch,
        on_rows=on_rows)
    # beyond the network's validation rows: codec and network together on the file's first rows
    check = verify_roundtrip(data, trained.encode, trained.decode, limit_rows=20_000)
    if report.worse_than_pca:
        logger.warning("z_public reconstructs the features worse than PCA with the same k on the validation "
                       "rows (mean R2 %.2f vs %.2f)", report.mean_r2, report.pca_r2)
    if not check.exact:
        raise IaeError(f"{model}:v{version} does not restore {data} exactly ({check.difference}); not sealed")
    path = registry.save(trained, model, version, keyring, report)
    curve = plot_loss(report.history, path.with_suffix(".loss.png"), f"{model}:v{version}")
    logger.info("sealed %s:v%d (%d validation rows restored bit for bit)", model, version,
                report.exact_rows_checked)
    return {"model": model, "version": version, "path": str(path), "loss_curve": str(curve),
            "device": report.device,
            "epochs": len(report.history), "best_epoch": report.best_epoch,
            "public_dims": trained.network.config.public_dims,
            "mean_r2": report.mean_r2, "pca_r2": report.pca_r2, "worse_than_pca": report.worse_than_pca,
            "threads": report.threads,
            "features": [{"name": f.name, "levels": f.levels, "exact_match": f.exact_match, "r2": f.r2}
                         for f in report.features],
            "loss": [(e.train_loss, e.validation_loss) for e in report.history]}


@flow(name="iae-train")
@no_data_in_errors
def train_flow(data: str, model: str, home: str = ".", epochs: int = 30, device: str = "auto",
               public_dims: int | None = None, config: str | None = None, seconds: float | None = None) -> dict:
    """Train and seal a model version from a Parquet file; report per-feature reconstruction."""
    result = train_and_seal(data, model, home, epochs, device, public_dims, config, seconds)
    rows = "\n".join(f"| {f['name']} | {f['levels']} | {f['exact_match']:.1%} | {f['r2']:.2f} |"
                     for f in result["features"])
    create_markdown_artifact(
        key=f"train-{result['model']}".lower().replace("_", "-").replace(".", "-"),
        markdown=(f"# {result['model']}:v{result['version']}\n\n"
                  f"device {result['device']}, {result['epochs']} epochs (best {result['best_epoch']}), "
                  f"{result['public_dims']} public latent columns; loss curve: {result['loss_curve']}\n\n"
                  f"Mean R2 from z_public {result['mean_r2']:.3f}; PCA with the same k on the same rows "
                  + ("n/a" if result["pca_r2"] is None else f"{result['pca_r2']:.3f}")
                  + (" (**worse than PCA**)" if result["worse_than_pca"] else "") + "\n\n"
                  "| feature | levels | exact from z_public | R2 from z_public |\n| --- | --- | --- | --- |\n"
                  + rows),
        description="What z_public alone reconstructs, per feature (validation rows)")
    return result
