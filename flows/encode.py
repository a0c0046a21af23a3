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

from iae_privacy.codec import parquet_rows
from iae_privacy.dataset.store import EncodedDataset, PartRecord
from iae_privacy.errors import IaeError
from iae_privacy.keys.keyring import ENV_PASSPHRASE, env_passphrase
from iae_privacy_flows.common import SAFE_TASK, no_data_in_errors, open_workspace, progress_logger


def sources_of(source: str, skip_unreadable: bool = False) -> tuple[list[Path], list[str]]:
    """(the Parquet files to encode, why each other one was skipped). ``source`` is a file or a
    folder of ``*.parquet`` files. A file that cannot be read (empty, not Parquet, still being
    copied, a folder of that name) or has no rows is an error naming it, or with
    ``skip_unreadable`` (scheduled runs) a reason in the second list, to be tried again next run."""
    path = Path(source)
    if not path.exists():
        raise IaeError(f"{path}: no such file or folder")
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith(".")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise IaeError(f"{path}: no .parquet files to encode")
    good, skipped = [], []
    for file in files:
        try:
            if parquet_rows(file) == 0:
                raise IaeError(f"{file}: has no rows to encode")
        except IaeError as exc:
            if not skip_unreadable:
                raise
            skipped.append(str(exc))
            continue
        good.append(file)
    return good, skipped


@task(**SAFE_TASK)
@no_data_in_errors
def plan_parts(source: str, out: str, model: str, home: str, dataset: str, skip_unreadable: bool) -> dict:
    """The parts to encode, and how many readable sources there were (paths, digests, counts)."""
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    sources, skipped = sources_of(source, skip_unreadable)
    logger = get_run_logger()
    for reason in skipped:
        logger.warning("skipped %s (tried again next run)", reason)
    todo = EncodedDataset(out).plan(sources, keyring, dataset, name, version)
    logger.info("%d source file(s) to encode", len(todo))
    return {"parts": [{"source": str(s), "digest": digest, "part": part} for s, digest, part in todo],
            "sources": len(sources)}


@task(**SAFE_TASK, retries=1)
@no_data_in_errors
def encode_part(source: str, digest: str, part: int, out: str, model: str, home: str, dataset: str) -> dict:
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    loaded = workspace.models.load(f"{name}:v{version}", keyring)
    logger = get_run_logger()
    rows = pq.ParquetFile(source).metadata.num_rows
    record = EncodedDataset(out).encode_source(Path(source), part, loaded.model, name, version, keyring,
                                               dataset, source_digest=digest,
                                               on_rows=progress_logger(f"encoding part {part}", rows, logger))
    logger.info("part %d: %d rows in %d batches", record.part, record.rows, record.batches)
    return asdict(record)


@task(**SAFE_TASK)
@no_data_in_errors
def commit_parts(records: list[dict], out: str, model: str, home: str, dataset: str) -> dict:
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    manifest = EncodedDataset(out).commit([PartRecord(**r) for r in records], keyring, dataset, name, version)
    workspace.register_dataset(out)  # so that key rotation reaches its vault parts
    return {"parts": len(manifest.parts), "rows": sum(p.rows for p in manifest.parts)}


def run_encode(source: str, model: str, out: str, home: str = ".", dataset: str | None = None,
               runner: str = "local", dask_address: str | None = None, skip_unreadable: bool = False) -> dict:
    """Run :func:`encode_flow` on the local thread pool or on a Dask cluster (``runner="dask"``:
    the cluster at ``dask_address``, or a temporary local one with two worker processes)."""
    if runner == "local":
        return encode_flow(source, model, out, home, dataset, skip_unreadable)
    if runner != "dask":
        raise IaeError(f"runner must be local or dask, got {runner!r}")
    from prefect_dask import DaskTaskRunner

    # a passphrase the CLI holds in-process reaches the temporary cluster's workers, and nothing else
    passphrase = env_passphrase()
    task_runner = DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                        **({"env": {ENV_PASSPHRASE: passphrase}} if passphrase else {})})
    return encode_flow.with_options(task_runner=task_runner)(source, model, out, home, dataset, skip_unreadable)


@flow(name="iae-encode")
@no_data_in_errors
def encode_flow(source: str, model: str, out: str, home: str = ".", dataset: str | None = None,
                skip_unreadable: bool = False) -> dict:
    """Encode SOURCE (a file or a folder of Parquet files) with MODEL into the dataset folder OUT;
    with SKIP_UNREADABLE (scheduled runs), files that cannot be read yet are skipped and logged."""
    dataset = dataset or Path(out).name
    planned = plan_parts(source, out, model, home, dataset, skip_unreadable)
    plan = planned["parts"]
    futures = encode_part.map([p["source"] for p in plan], [p["digest"] for p in plan],
                              [p["part"] for p in plan], out, model, home, dataset)
    records = [f.result() for f in futures]
    totals = commit_parts(records, out, model, home, dataset)
    return {"encoded_parts": len(records), "encoded_rows": sum(r["rows"] for r in records),
            "skipped_sources": planned["sources"] - len(records), **totals}
