"""Encode flow: one Parquet file or a folder of them → an encoded dataset (latent, vault, manifest).

Plan (skip what is already encoded, clear what a killed run left) → encode each source in its own
task (mapped: a thread pool by default, a Dask cluster with prefect-dask) → commit the manifest.
With ``split`` (on a Dask cluster: its workers), a large source is encoded as that many parts, one
task each, its rows dealt to them by a keyed draw (:class:`iae_privacy.dataset.rowids.RowSplit`),
so that the workers share one big file. On a Dask cluster every worker must see the workspace and
the data at the same paths (a shared file system); tasks still pass only paths, and each opens the
keyring itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task

from iae_privacy.codec import parquet_rows
from iae_privacy.dataset.store import EncodedDataset, PartRecord
from iae_privacy.errors import IaeError
from iae_privacy.keys.keyring import ENV_PASSPHRASE, env_passphrase
from iae_privacy.machine import ENV_ENCODE_WORKERS, usable_cores
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


SPLIT_ROWS = 65_536
"""A source is split into N parts only if it has at least N times this many rows (a batch a part)."""


@dataclass(frozen=True)
class PlannedPart:
    source: str
    digest: str
    """Keyed digest of the source's bytes (what tells a new file from one already encoded)."""
    part: int
    split: tuple[int, int] = (0, 1)
    """(index, parts): this part's share of its source (1 part: all of it)."""


@dataclass(frozen=True)
class Plan:
    """What a run will encode, with the model version resolved once for the whole run."""

    model: str
    version: int
    parts: list[PlannedPart]
    sources: int
    """Readable sources found (those already encoded included)."""
    new_sources: int = 0
    """Sources this run encodes (each in one part or, split, in several)."""


@dataclass(frozen=True)
class EncodeResult:
    """What an encode run did, and what the dataset now holds (counts only)."""

    encoded_parts: int
    encoded_rows: int
    skipped_sources: int
    parts: int
    rows: int


@task(**SAFE_TASK)
@no_data_in_errors
def plan_parts(source: str, out: str, model: str, home: str, dataset: str, skip_unreadable: bool,
               split: int = 1) -> Plan:
    """The parts to encode, and how many readable sources there were (paths, digests, counts).
    ``split``: a source of at least ``split`` times :data:`SPLIT_ROWS` rows is encoded as
    ``split`` parts."""
    workspace, keyring = open_workspace(home)
    name, version = workspace.models.resolve(model)
    logger = get_run_logger()
    encoded = EncodedDataset(out)
    if ":" not in model and encoded.manifest_path.exists():
        # a dataset holds one model version's parts: NAME means its own version once it has parts,
        # so a retrain (a newer version) does not break the schedule that feeds it
        manifest = encoded.read_manifest(keyring)
        if manifest.model == name and manifest.model_version != version:
            logger.info("%s keeps model %s:v%d, the version it was encoded with (v%d is newer: encode into a new "
                        "folder to use it)", out, name, manifest.model_version, version)
            version = manifest.model_version
    sources, skipped = sources_of(source, skip_unreadable)
    for reason in skipped:
        logger.warning("skipped %s (tried again next run)", reason)
    shares = {s: split if split > 1 and parquet_rows(s) >= split * SPLIT_ROWS else 1 for s in sources}
    todo = encoded.plan(sources, keyring, dataset, name, version, splits=shares.__getitem__)
    if encoded.format_version(keyring) < 2:  # a dataset of format 1 splits nothing
        shares = dict.fromkeys(sources, 1)
    parts = [PlannedPart(str(s), digest, first + i, (i, shares[s])) for s, digest, first in todo
             for i in range(shares[s])]
    logger.info("%d source file(s) to encode with %s:v%d, in %d part(s)", len(todo), name, version, len(parts))
    return Plan(name, version, parts, len(sources), len(todo))


@task(**SAFE_TASK, retries=1, retry_delay_seconds=5, task_run_name="encode part {part}")
@no_data_in_errors
def encode_part(source: str, digest: str, part: int, out: str, model: str, version: int, home: str,
                dataset: str, split: tuple[int, int] = (0, 1)) -> PartRecord:
    """One source (or its share ``split``) into one part (written atomically: a retry starts it
    again from nothing)."""
    workspace, keyring = open_workspace(home)
    loaded = workspace.models.load(f"{model}:v{version}", keyring)
    logger = get_run_logger()
    rows = pq.ParquetFile(source).metadata.num_rows
    record = EncodedDataset(out).encode_source(Path(source), part, loaded.model, model, version, keyring,
                                               dataset, source_digest=digest,
                                               on_rows=progress_logger(f"encoding part {part}", rows, logger),
                                               split=tuple(split) if split[1] > 1 else None)
    logger.info("part %d: %d rows in %d batches", record.part, record.rows, record.batches)
    return record


@task(**SAFE_TASK)
@no_data_in_errors
def commit_parts(records: list[PartRecord], out: str, model: str, version: int, home: str,
                 dataset: str) -> tuple[int, int]:
    """Add the parts to the signed manifest; (parts, rows) the dataset now holds."""
    from iae_privacy.dataset.dictionary import dictionary_text

    workspace, keyring = open_workspace(home)
    encoded = EncodedDataset(out)
    manifest = encoded.commit(records, keyring, dataset, model, version)
    encoded.write_dictionary(dictionary_text(dataset, workspace.models.load(f"{model}:v{version}", keyring)))
    workspace.register_dataset(out)  # so that key rotation reaches its vault parts
    return len(manifest.parts), sum(p.rows for p in manifest.parts)


@task(**SAFE_TASK)
@no_data_in_errors
def check_dataset(out: str, home: str) -> int:
    """``iae-privacy check`` after a scheduled encode: fail the run, naming each problem, if the
    dataset does not verify (signature, hashes, every vault segment). Returns the parts checked."""
    _, keyring = open_workspace(home)
    dataset = EncodedDataset(out)
    problems = dataset.check(keyring)
    if problems:
        raise IaeError(f"{out} does not verify after this encode: " + "; ".join(problems))
    return len(dataset.read_manifest(keyring).parts)


DASK_WORKERS = 2
"""Worker processes of the temporary Dask cluster :func:`run_encode` starts."""


def run_encode(source: str, model: str, out: str, home: str = ".", dataset: str | None = None,
               runner: str = "local", dask_address: str | None = None, skip_unreadable: bool = False,
               split: int | None = None) -> EncodeResult:
    """Run :func:`encode_flow` on the local thread pool or on a Dask cluster (``runner="dask"``:
    the cluster at ``dask_address``, or a temporary local one with two worker processes).
    ``split``: parts a large source is encoded as (None: one with the local runner, whose part
    already uses every core; on the temporary cluster, its workers; on a cluster at an address, one)."""
    if split is not None and split < 1:
        raise IaeError(f"split must be 1 or more parts, got {split}")
    if runner == "local":
        return encode_flow(source, model, out, home, dataset, skip_unreadable, split=split or 1)
    if runner != "dask":
        raise IaeError(f"runner must be local or dask, got {runner!r}")
    split = split or (1 if dask_address else DASK_WORKERS)
    from prefect_dask import DaskTaskRunner

    # a passphrase the CLI holds in-process reaches the temporary cluster's workers, and nothing else;
    # the workers report to this run's Prefect API (without it each started a temporary server of
    # its own: 10k rows took 104 s, most of it servers starting)
    passphrase = env_passphrase()
    env = {"PREFECT_API_URL": _api_url(), **({ENV_PASSPHRASE: passphrase} if passphrase else {}),
           # the machine's cores shared by its workers: each part's pool takes its share
           ENV_ENCODE_WORKERS: str(max(1, usable_cores() // DASK_WORKERS))}
    task_runner = DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(
        cluster_kwargs={"n_workers": DASK_WORKERS, "threads_per_worker": 1, "processes": True, "env": env})
    return encode_flow.with_options(task_runner=task_runner)(source, model, out, home, dataset, skip_unreadable,
                                                             split=split)


def _api_url() -> str:
    """The Prefect API this process reports to: PREFECT_API_URL, or Prefect's temporary server,
    started now (the same one the flow run then uses)."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if api:
        return api
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    return server.api_url


@flow(name="iae-encode")
@no_data_in_errors
def encode_flow(source: str, model: str, out: str, home: str = ".", dataset: str | None = None,
                skip_unreadable: bool = False, check: bool = False, split: int = 1) -> EncodeResult:
    """Encode SOURCE (a file or a folder of Parquet files) with MODEL into the dataset folder OUT;
    with SKIP_UNREADABLE (scheduled runs), files that cannot be read yet are skipped and logged;
    with CHECK (``serve``), the dataset is verified after a run that added parts; with SPLIT, a
    source of at least SPLIT x 65,536 rows is encoded as SPLIT parts side by side."""
    dataset = dataset or Path(out).name
    logger = get_run_logger()
    # one run at a time per dataset, from the plan to the commit (a manual encode beside serve)
    with EncodedDataset(out).exclusive(lambda: logger.info("waiting for another run writing %s to finish", out)):
        plan = plan_parts(source, out, model, home, dataset, skip_unreadable, split)
        futures = encode_part.map([p.source for p in plan.parts], [p.digest for p in plan.parts],
                                  [p.part for p in plan.parts], out, plan.model, plan.version, home, dataset,
                                  [p.split for p in plan.parts])
        records = [f.result() for f in futures]
        parts, rows = commit_parts(records, out, plan.model, plan.version, home, dataset)
        if check and records:
            check_dataset(out, home)
    return EncodeResult(len(records), sum(r.rows for r in records), plan.sources - plan.new_sources, parts, rows)
