"""Encode flow: one Parquet file or a folder of them → an encoded dataset (latent, vault, manifest).

Plan (skip what is already encoded, clear what a killed run left) → encode each source in its own
task (mapped: a thread pool by default, a Dask cluster with prefect-dask) → commit the manifest.
On a Dask cluster every worker must see the workspace and the data at the same paths (a shared
file system); tasks still pass only paths, and each opens the keyring itself.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task

from flows.common import SAFE_TASK, open_workspace, progress_logger
from iae_privacy.errors import IaeError
from iae_privacy.store import EncodedDataset, PartRecord


def sources_of(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise IaeError(f"{path}: no .parquet files to encode")
        return files
    if not path.exists():
        raise IaeError(f"{path}: no such file or folder")
    return [path]


@task(**SAFE_TASK)
def plan_parts(source: str, out: str, model: str, home: str, dataset: str) -> list[dict]:
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    todo = EncodedDataset(out).plan(sources_of(source), keyring, dataset, name, version)
    get_run_logger().info("%d source file(s) to encode", len(todo))
    return [{"source": str(s), "sha256": digest, "part": part} for s, digest, part in todo]


@task(**SAFE_TASK, retries=1)
def encode_part(source: str, sha256: str, part: int, out: str, model: str, home: str, dataset: str) -> dict:
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    loaded = workspace.models.load(f"{name}:v{version}", keyring)
    logger = get_run_logger()
    rows = pq.ParquetFile(source).metadata.num_rows
    record = EncodedDataset(out).encode_source(Path(source), part, loaded.model, name, version, keyring,
                                               dataset, source_sha256=sha256,
                                               on_rows=progress_logger(f"encoding part {part}", rows, logger))
    logger.info("part %d: %d rows in %d batches", record.part, record.rows, record.batches)
    return asdict(record)


@task(**SAFE_TASK)
def commit_parts(records: list[dict], out: str, model: str, home: str, dataset: str) -> dict:
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    manifest = EncodedDataset(out).commit([PartRecord(**r) for r in records], keyring, dataset, name, version)
    workspace.register_dataset(out)  # so that key rotation reaches its vault parts
    return {"parts": len(manifest.parts), "rows": sum(p.rows for p in manifest.parts)}


def run_encode(source: str, model: str, out: str, home: str = ".", dataset: str | None = None,
               runner: str = "local", dask_address: str | None = None) -> dict:
    """Run :func:`encode_flow` on the local thread pool or on a Dask cluster (``runner="dask"``:
    the cluster at ``dask_address``, or a temporary local one with two worker processes)."""
    if runner == "local":
        return encode_flow(source, model, out, home, dataset)
    if runner != "dask":
        raise IaeError(f"runner must be local or dask, got {runner!r}")
    from prefect_dask import DaskTaskRunner

    task_runner = DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})
    return encode_flow.with_options(task_runner=task_runner)(source, model, out, home, dataset)


@flow(name="iae-encode")
def encode_flow(source: str, model: str, out: str, home: str = ".", dataset: str | None = None) -> dict:
    """Encode SOURCE (a file or a folder of Parquet files) with MODEL into the dataset folder OUT."""
    dataset = dataset or Path(out).name
    plan = plan_parts(source, out, model, home, dataset)
    futures = encode_part.map([p["source"] for p in plan], [p["sha256"] for p in plan],
                              [p["part"] for p in plan], out, model, home, dataset)
    records = [f.result() for f in futures]
    totals = commit_parts(records, out, model, home, dataset)
    return {"encoded_parts": len(records), "encoded_rows": sum(r["rows"] for r in records),
            "skipped_sources": len(sources_of(source)) - len(records), **totals}
