"""Evaluate flow: sweep k, measure utility and attacks, write the report, publish it as an artifact.

The report holds aggregates and column names only; models trained here use a throwaway key and
are never sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from iae_privacy.analysts.evaluate import (
    EvaluationConfig,
    codec_config_of,
    evaluate,
    markdown,
    middle_point,
    write_report,
)
from iae_privacy.codec import CodecConfig
from iae_privacy_flows.common import SAFE_TASK, no_data_in_errors, open_workspace


@dataclass(frozen=True)
class PointSummary:
    """One point of the sweep, as the CLI shows it (aggregates)."""

    label: str
    k: int
    utility_ratio: float
    inversion_exact: float
    linkage: float


@dataclass(frozen=True)
class EvaluationResult:
    report: str
    """The report's path (report.md; evaluation.json and the plots beside it)."""
    markdown: str = ""
    points: list[PointSummary] = field(default_factory=list)


@task(**SAFE_TASK)
@no_data_in_errors
def run_evaluation(data: str, out: str, target: str, sensitive: str | None, quasi_identifiers: list[str],
                   ks: list[int] | None, rows: int, epochs: int, leaked: list[int], config: str | None,
                   model: str | None, home: str, declare_target: bool = True) -> EvaluationResult:
    logger = get_run_logger()
    codec = CodecConfig.load(config) if config else CodecConfig()
    sealed = None
    if model is not None:  # its roles and codec settings for the sweep, and itself as one more point
        workspace, keyring = open_workspace(home)
        name, version = workspace.models.resolve(model)
        loaded = workspace.models.load(f"{name}:v{version}", keyring)
        sealed = (f"{name}:v{version}", loaded.model)
        codec = codec if config else codec_config_of(loaded.model)
    settings = EvaluationConfig(target=target, sensitive=sensitive, quasi_identifiers=tuple(quasi_identifiers),
                                ks=tuple(ks) if ks else None, rows=rows, epochs=epochs, leaked=tuple(leaked),
                                codec=codec, declare_target=declare_target)
    evaluation = evaluate(data, settings, on_step=logger.info, sealed=sealed)
    report = write_report(evaluation, Path(out))
    logger.info("report written to %s", report)
    return EvaluationResult(str(report), markdown(evaluation, middle_point(evaluation).k),
                            [PointSummary(p.label, p.k, p.utility_ratio, p.inversion[-1]["exact"], p.linkage)
                             for p in evaluation.points])


@flow(name="iae-evaluate")
@no_data_in_errors
def evaluate_flow(data: str, out: str, target: str, sensitive: str | None = None,
                  quasi_identifiers: list[str] | None = None, ks: list[int] | None = None, rows: int = 20_000,
                  epochs: int = 0, leaked: list[int] | None = None, config: str | None = None,
                  model: str | None = None, home: str = ".", declare_target: bool = True) -> EvaluationResult:
    """Utility against privacy attacks over k for DATA, predicting TARGET; report under OUT.
    With MODEL (a sealed NAME[:vN] of the workspace HOME): its roles, and itself as one more point.
    DECLARE_TARGET: the sweep's models are trained with TARGET declared (as ``train --target``)."""
    result = run_evaluation(data, out, target, sensitive, quasi_identifiers or [], ks, rows, epochs,
                            leaked or [10, 100, 1_000], config, model, home, declare_target)
    create_markdown_artifact(key="evaluation-" + Path(data).stem.lower().replace("_", "-").replace(".", "-"),
                             markdown=result.markdown, description="Utility and attack success over k")
    return EvaluationResult(result.report, points=result.points)
