"""Decode flow: authorise a signed request (policy, scope, expiry, single use; audited), then restore
exactly what it covers (or, for a synthesis request, sample that many synthetic records).

The authorisation and its audit entry come first; only the restore task opens the model and the
vault. A refused request, or a restore that cannot complete (tampered part, retired key), ends its
task and the flow run Failed, with the exception in the state (``Failed(data=exc)``: no traceback,
these are not bugs) and no output; :func:`run_decode` raises it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.states import Failed, State

from iae_privacy.access.control import AccessControl, Grant
from iae_privacy.errors import IaeError
from iae_privacy_flows.common import SAFE_TASK, failed, no_data_in_errors, open_workspace, progress_logger


@dataclass(frozen=True)
class DecodeResult:
    """What a decode run did: counts and the audit entry, no value."""

    restored_rows: int
    audit_entry: int
    synthetic: bool


@task(**SAFE_TASK)
@no_data_in_errors
def authorize(encoded: str, request: str, home: str) -> Grant | State:
    """The grant; or, refused (already in the audit log), a Failed state holding the refusal."""
    logger = get_run_logger()
    try:
        workspace, keyring = open_workspace(home)
        grant = AccessControl(workspace, keyring).authorize(encoded, Path(request).read_bytes())
    except OSError as exc:
        return failed(IaeError(f"{request}: the request file cannot be read ({exc.strerror})"),
                      "request refused")
    except IaeError as exc:
        return failed(exc, "request refused")
    logger.info("request granted to %s: %d rows (audit entry %d)", grant.principal, grant.rows, grant.audit_seq)
    return grant


@task(**SAFE_TASK)
@no_data_in_errors
def restore(grant: Grant, out: str, home: str, with_row_id: bool = False) -> int | State:
    """Rows restored; or a Failed state holding why the restore failed (already in the audit log)."""
    logger = get_run_logger()
    report = progress_logger("restoring", grant.rows, logger)
    try:
        workspace, keyring = open_workspace(home)
        rows = AccessControl(workspace, keyring).restore(grant, Path(out), on_rows=lambda done, total: report(done),
                                                         with_row_id=with_row_id)
    except IaeError as exc:
        return failed(exc, "restore failed")
    logger.info("restored %d rows", rows)
    return rows


@flow(name="iae-decode")
@no_data_in_errors
def decode_flow(encoded: str, request: str, out: str, home: str = ".", with_row_id: bool = False
                ) -> DecodeResult | State:
    """Restore from the encoded dataset ENCODED what the signed REQUEST file allows, to OUT
    (WITH_ROW_ID: plus each row's latent row_id as a last column)."""
    granted = authorize(encoded, request, home, return_state=True)
    if granted.is_failed():
        return _again(granted)
    grant = granted.result()
    restored = restore(grant, out, home, with_row_id, return_state=True)
    if restored.is_failed():
        return _again(restored)
    if grant.synthesize:  # the fidelity report beside the baselines, as an artifact (aggregates only)
        _fidelity_artifact(Path(out), grant.dataset)
    return DecodeResult(restored.result(), grant.audit_seq, grant.synthesize)


def _fidelity_artifact(out: Path, dataset: str) -> None:
    import json

    from prefect.artifacts import create_markdown_artifact

    from iae_privacy.analysts.synthesize import fidelity_markdown

    report = json.loads(out.with_name(out.name + ".fidelity.json").read_text())
    key = "synthesis-" + "".join(c if c.isalnum() else "-" for c in dataset.lower())
    create_markdown_artifact(key=key, markdown=fidelity_markdown(report),
                             description=f"synthetic records of {dataset}: fidelity beside two baselines")


def _again(state: State) -> State:
    """The flow run's own Failed state, holding the same exception as the task's."""
    exc = state.result(raise_on_failure=False)
    return Failed(message=state.message, data=exc)


def run_decode(encoded: str, request: str, out: str, home: str = ".", with_row_id: bool = False) -> DecodeResult:
    """Run :func:`decode_flow`; a refusal raises its :class:`~iae_privacy.errors.AccessRefused`, a
    failed restore its :class:`IaeError`, each with the reason.

    Without Prefect's flow-run heartbeat: its thread sleeps in steps of 1 s and the run waits for
    it to wake before finishing (0.55 s of a 4 s one-record decode from the shell), and an
    interrupted restore is what the audit log's own running markers find
    (:meth:`~iae_privacy.access.restore.Restorer.recover_interrupted`), heartbeat or not."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return decode_flow(encoded=encoded, request=request, out=out, home=home, with_row_id=with_row_id,
                           return_state=True).result()
