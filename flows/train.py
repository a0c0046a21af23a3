"""Train flow: fit the codec and train the network (GPU when present) → verify and seal → report.

Two tasks: training (the long part, not retried: a rerun is a new training) and sealing, which
checks the round trip, seals and registers, and is retried on its own (a full disk or a busy
keyring folder does not cost a retraining). The trained model passes from one to the other in
memory; nothing of it reaches Prefect's storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from iae_privacy import progress
from iae_privacy.analysts.report import plot_loss
from iae_privacy.codec import CodecConfig
from iae_privacy.errors import IaeError
from iae_privacy.model.pipeline import Model, fit_model
from iae_privacy.model.registry import transform_key
from iae_privacy.model.verify import verify_roundtrip
from iae_privacy.network.train import TrainConfig, TrainReport
from iae_privacy_flows.common import SAFE_TASK, no_data_in_errors, open_workspace


@dataclass(frozen=True)
class FeatureFit:
    """How well z_public alone gives one feature back (validation rows)."""

    name: str
    levels: int
    exact_match: float
    r2: float


@dataclass(frozen=True)
class TrainResult:
    """A sealed model version and what its training measured (aggregates and names only)."""

    model: str
    version: int
    path: str
    loss_curve: str
    device: str
    threads: int
    epochs: int
    best_epoch: int
    public_dims: int
    mean_r2: float | None
    pca_r2: float | None
    worse_than_pca: bool
    features: list[FeatureFit] = field(default_factory=list)
    loss: list[tuple[float, float]] = field(default_factory=list)
    protection: dict = field(default_factory=dict)
    """For protected columns: the attacks' figures on held-out rows (iae_privacy.analysts.protection)."""
    target: dict = field(default_factory=dict)
    """For a declared analysis target: its favoured predictors and its held-out scores, latent and raw."""


@dataclass(frozen=True)
class Trained:
    """What training hands to sealing, in memory."""

    model: Model
    report: TrainReport
    version: int


@task(**SAFE_TASK, task_run_name="train {model}")
@no_data_in_errors
def train(data: str, model: str, home: str, epochs: int, device: str, public_dims: int | None,
          config: str | None, seconds: float | None, protect: list[str] | None = None,
          target: str | None = None) -> Trained:
    """Fit the codec and train the keyed network (the version's key: the transform is keyed)."""
    logger = get_run_logger()
    workspace, keyring = open_workspace(home)
    registry = workspace.models
    version = registry.next_version(registry.check_name(model))
    artifact = create_progress_artifact(0.0, key=_key("training", model), description=f"training {model}:v{version}")
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
        update_progress_artifact(artifact, 100.0 * s.epoch / max(epochs, 1))

    codec_config = CodecConfig.load(config) if config else CodecConfig()
    if protect:
        codec_config = replace(codec_config, protected=(*codec_config.protected, *protect))
    if target:
        codec_config = replace(codec_config, target=target)
    trained, report = fit_model(
        data, transform_key(keyring, model, version), codec_config,
        TrainConfig(epochs=epochs, device=device, max_seconds=seconds), public_dims, on_epoch=on_epoch,
        on_rows=on_rows)
    update_progress_artifact(artifact, 100.0)
    if report.worse_than_pca:
        logger.warning("z_public reconstructs the features worse than PCA with the same k on the validation "
                       "rows (mean R2 %.2f vs %.2f)", report.mean_r2, report.pca_r2)
    return Trained(trained, report, version)


@task(**SAFE_TASK, retries=2, retry_delay_seconds=5, task_run_name="verify and seal {model}")
@no_data_in_errors
def verify_and_seal(trained: Trained, data: str, model: str, home: str) -> TrainResult:
    """Check codec and network together on the file's first rows (beyond the network's validation
    rows), then seal and register the version. Retried alone: it does not retrain."""
    logger = get_run_logger()
    workspace, keyring = open_workspace(home)
    version, report = trained.version, trained.report
    check = verify_roundtrip(data, trained.model.encode, trained.model.decode, limit_rows=20_000)
    if not check.exact:
        raise IaeError(f"{model}:v{version} does not restore {data} exactly ({check.difference}); not sealed")
    path = workspace.models.save(trained.model, model, version, keyring, report)
    curve = plot_loss(report.history, path.with_suffix(".loss.png"), f"{model}:v{version}")
    logger.info("sealed %s:v%d (%d validation rows restored bit for bit)", model, version,
                report.exact_rows_checked)
    return TrainResult(
        model, version, str(path), str(curve), report.device, report.threads, len(report.history), report.best_epoch,
        trained.model.network.config.public_dims, report.mean_r2, report.pca_r2, report.worse_than_pca,
        [FeatureFit(f.name, f.levels, f.exact_match, f.r2) for f in report.features],
        [(e.train_loss, e.validation_loss) for e in report.history], report.protection, report.target)


def _key(kind: str, model: str) -> str:
    """An artifact key (lower case letters, digits and dashes)."""
    return f"{kind}-{model}".lower().replace("_", "-").replace(".", "-")


@flow(name="iae-train")
@no_data_in_errors
def train_flow(data: str, model: str, home: str = ".", epochs: int = 30, device: str = "auto",
               public_dims: int | None = None, config: str | None = None, seconds: float | None = None,
               protect: list[str] | None = None, target: str | None = None) -> TrainResult:
    """Train and seal a model version from a Parquet file; report per-feature reconstruction and,
    for PROTECT (column names, with any the config declares), what attacks recover of them."""
    trained = train(data, model, home, epochs, device, public_dims, config, seconds, protect, target)
    result = verify_and_seal(trained, data, model, home)
    pca = "n/a" if result.pca_r2 is None else f"{result.pca_r2:.3f}"
    create_table_artifact(
        key=_key("train", model),
        table=[{"feature": f.name, "levels": f.levels, "exact from z_public": round(f.exact_match, 4),
                "R2 from z_public": round(f.r2, 4)} for f in result.features],
        description=(f"{result.model}:v{result.version}: device {result.device}, {result.epochs} epochs (best "
                     f"{result.best_epoch}), {result.public_dims} public latent columns; mean R2 from z_public "
                     f"{result.mean_r2:.3f}, PCA with the same k on the same rows {pca}"
                     + (" (worse than PCA)" if result.worse_than_pca else "") + f"; loss curve {result.loss_curve}"))
    if result.protection:
        create_table_artifact(key=_key("protection", model), table=protection_rows(result.protection),
                              description=f"{result.model}:v{result.version}: what attacks recover of the protected "
                              "columns from the exact z_public and from the release analysts get (held-out rows)"
                              + (f"; proxies given no weight in z_public: {', '.join(result.protection['proxies'])}"
                                 if result.protection.get("proxies") else "")
                              + "".join(f"; warning: {w}" for w in protection_warnings(result.protection)))
    return result


def protection_warnings(protection: dict) -> list[str]:
    """One line per protected column that the passthrough columns alone, the declared target alone,
    or the identifier tokens give away beyond the release's tolerance: no release can take that back
    (docs/threat-model.md)."""
    from iae_privacy.model.protection import TOLERANCE

    lines = []
    for c in protection.get("columns", []):
        alone = c.get("known_plaintext_passthrough")
        if alone is None or alone <= c["baseline"] + TOLERANCE:
            continue
        lines.append(f"the passthrough columns alone give {c['column']} away ({_told(c, alone)}, known plaintext): "
                     "analysts get them as they are, and the release only adds no more than its tolerance to what "
                     "they tell. Declare the columns that carry it protected, or leave them out of the table")
    for c in protection.get("columns", []):
        alone = c.get("known_plaintext_target")
        if alone is not None and alone > c["baseline"] + TOLERANCE:
            lines.append(f"the declared target {c['target']} alone tells {c['column']} ({_told(c, alone)}, known "
                         "plaintext): the latent table keeps the target for analysts to model, so they can tell "
                         "this much. If that is too much, declare no target: the release then blurs it like any "
                         "other correlate")
    for c in protection.get("columns", []):
        lookup = c.get("known_plaintext_released_with_tokens")
        if lookup is None:
            continue
        before = c.get("known_plaintext_released_with_passthrough", c["known_plaintext_released"])
        if lookup > before + TOLERANCE:
            lines.append(f"the identifier tokens carry {c['column']} from leaked rows to the rows that share them "
                         f"({lookup:.3f} against {before:.3f} without them, known plaintext; {c['token_rows']:.1%} "
                         "of attacked rows share a telling token with a leaked row): a value constant per identifier "
                         "travels with its token. Declare such an identifier vault (sealed, no token) unless analysts "
                         "must join on it")
    return lines


def _told(column: dict, figure: float) -> str:
    return f"{figure:.1%} against {column['baseline']:.1%} for always guessing the most common value" \
        if column["kind"] == "category" else f"R2 {figure:.2f} against 0 for the mean"


def protection_rows(protection: dict) -> list[dict]:
    """The protection figures as table rows: one per protected column and attack."""
    rows = []
    for c in protection.get("columns", []):
        score = "accuracy" if c["kind"] == "category" else "R2"
        rows.append({"column": c["column"], "attack": f"known plaintext, {c['leaked_rows']:,} leaked ({score})",
                     "exact z_public": round(c["known_plaintext_exact"], 4),
                     "released": round(c["known_plaintext_released"], 4), "baseline": round(c["baseline"], 4)})
        if "ranking_released" in c:
            rows.append({"column": c["column"], "attack": "ranking, 0 leaked (accuracy)",
                         "exact z_public": round(c["ranking_exact"], 4), "released": round(c["ranking_released"], 4),
                         "baseline": round(c["ranking_baseline"], 4)})
        if "known_plaintext_passthrough" in c:  # baseline: what the passthrough columns tell on their own
            rows.append({"column": c["column"],
                         "attack": f"known plaintext with the passthrough columns ({score}; baseline: them alone)",
                         "exact z_public": round(c["known_plaintext_exact_with_passthrough"], 4),
                         "released": round(c["known_plaintext_released_with_passthrough"], 4),
                         "baseline": round(c["known_plaintext_passthrough"], 4)})
        if "known_plaintext_target" in c:  # the declared target's own values: analysts model it
            alone = round(c["known_plaintext_target"], 4)
            rows.append({"column": c["column"],
                         "attack": f"known plaintext, the declared target {c['target']} alone ({score}; the latent "
                                   "table keeps it for analysts to model: theirs by design)",
                         "exact z_public": alone, "released": alone, "baseline": round(c["baseline"], 4)})
        if "known_plaintext_released_with_tokens" in c:  # what leaked rows' tokens carry to the rows sharing them
            rows.append({"column": c["column"],
                         "attack": "known plaintext with the identifier tokens"
                                   + (" and the passthrough columns" if "known_plaintext_passthrough" in c else "")
                                   + f" ({score}; {c['token_rows']:.1%} of rows share a telling token with a leaked "
                                     "row)",
                         "exact z_public": round(c["known_plaintext_exact_with_tokens"], 4),
                         "released": round(c["known_plaintext_released_with_tokens"], 4),
                         "baseline": round(c["baseline"], 4)})
    return rows
