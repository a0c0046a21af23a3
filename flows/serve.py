"""Scheduled operation: deployments that encode a landing folder on a cron schedule, and optionally
retrain the model periodically.

``iae-privacy serve`` registers them with the Prefect API it is pointed at and serves them from
this process (``prefect.serve``). Schedules need a long-lived Prefect server: run
``prefect server start`` and set ``PREFECT_API_URL`` first. The encode deployment sees the whole
landing folder each time; files already encoded with the model version are skipped, so every new
file is encoded exactly once. With ``concurrency_limit=1`` runs never overlap.
"""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment

from iae_privacy_flows.encode import encode_flow
from iae_privacy_flows.train import train_flow


def build_deployments(landing: str, model: str, out: str, home: str, cron: str = "*/15 * * * *",
                      retrain_cron: str | None = None, retrain_data: str | None = None,
                      dataset: str | None = None) -> list[RunnerDeployment]:
    """The deployments ``serve`` runs: encode LANDING with MODEL (NAME, or NAME:vN pinned) into OUT
    on ``cron``; retrain MODEL from ``retrain_data`` on ``retrain_cron`` when given. Parameters are
    paths and names. A retrain adds a version; OUT keeps encoding with the version it was started
    with (an encoded dataset holds one model version's parts), until a new OUT is served."""
    home = str(Path(home).resolve())
    deployments = [encode_flow.to_deployment(
        name=f"encode-{Path(out).name}", cron=cron, concurrency_limit=1,
        parameters={"source": str(Path(landing).resolve()), "model": model,
                    "out": str(Path(out).resolve()), "home": home, "dataset": dataset or Path(out).name,
                    "skip_unreadable": True, "check": True},
        description="Encode every new Parquet file in the landing folder (each exactly once).",
        tags=["iae-privacy", "encode"])]
    if retrain_cron:
        if not retrain_data:
            raise ValueError("retrain_cron needs retrain_data")
        deployments.append(train_flow.to_deployment(
            name=f"retrain-{model.split(':')[0]}", cron=retrain_cron, concurrency_limit=1,
            parameters={"data": str(Path(retrain_data).resolve()), "model": model.split(":")[0], "home": home},
            description="Train a new model version (an existing encoded dataset keeps its own version; "
            "serve a new output folder to encode with the new one).",
            tags=["iae-privacy", "train"]))
    return deployments
