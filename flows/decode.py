"""Decode flow: check the signed manifest and every part, then restore the whole dataset exactly.

The access-controlled restore (signed requests, policy, audit) builds on this flow.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.common import SAFE_TASK, open_workspace, progress_logger
from iae_privacy.store import EncodedDataset


@task(**SAFE_TASK)
def restore(encoded: str, out: str, home: str) -> int:
    workspace, keyring = open_workspace(home)
    dataset = EncodedDataset(encoded)
    manifest = dataset.read_manifest(keyring)
    loaded = workspace.models.load(f"{manifest.model}:v{manifest.model_version}", keyring)
    logger = get_run_logger()
    report = progress_logger("restoring", sum(p.rows for p in manifest.parts), logger)
    rows = dataset.decode_all(loaded.model, keyring, Path(out), on_rows=lambda done, total: report(done))
    logger.info("restored %d rows from %d part(s)", rows, len(manifest.parts))
    return rows


@flow(name="iae-decode")
def decode_flow(encoded: str, out: str, home: str = ".") -> dict:
    """Restore the encoded dataset ENCODED to OUT (a .parquet file for one part, else a folder)."""
    return {"restored_rows": restore(encoded, out, home)}
