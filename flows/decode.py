"""Decode flow: authorise a signed request (policy, scope, expiry, single use; audited), then restore
exactly what it covers (or, for a synthesis request, sample that many synthetic records).

The authorisation and its audit entry come first; only the restore task opens the model and the
vault. A refused request, or a restore that cannot complete (tampered part, retired key), ends the
flow run Failed with the reason as its message (no traceback: these are not bugs) and no output.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.states import Failed

from iae_privacy.access.control import AccessControl, AccessRefused, Grant
from iae_privacy.errors import IaeError
from iae_privacy_flows.common import SAFE_TASK, no_data_in_errors, open_workspace, progress_logger

REFUSED, FAILED = "request refused: ", "restore failed: "


@task(**SAFE_TASK)
@no_data_in_errors
def authorize(encoded: str, request: str, home: str) -> Grant | str:
    """The grant, or the reason for refusing (already in the audit log)."""
    logger = get_run_logger()
    try:
        workspace, keyring = open_workspace(home)
        grant: Grant | str = AccessControl(workspace, keyring).authorize(encoded, Path(request).read_bytes())
    except (IaeError, OSError) as exc:
        grant = str(exc)
    if isinstance(grant, str):  # logged outside the except block: a refusal is not an error with a traceback
        logger.warning("%s%s", REFUSED, grant)
        return grant
    logger.info("request granted to %s: %d rows (audit entry %d)", grant.principal, grant.rows, grant.audit_seq)
    return grant


@task(**SAFE_TASK)
@no_data_in_errors
def restore(grant: Grant, out: str, home: str) -> int | str:
    """Rows restored, or the reason the restore failed (already in the audit log)."""
    logger = get_run_logger()
    report = progress_logger("restoring", grant.rows, logger)
    try:
        workspace, keyring = open_workspace(home)
        rows: int | str = AccessControl(workspace, keyring).restore(grant, Path(out),
                                                                    on_rows=lambda done, total: report(done))
    except IaeError as exc:
        rows = str(exc)
    if isinstance(rows, str):
        logger.warning("%s%s", FAILED, rows)
        return rows
    logger.info("restored %d rows", rows)
    return rows


@flow(name="iae-decode")
@no_data_in_errors
def decode_flow(encoded: str, request: str, out: str, home: str = ".") -> dict:
    """Restore from the encoded dataset ENCODED what the signed REQUEST file allows, to OUT."""
    grant = authorize(encoded, request, home)
    if isinstance(grant, str):
        return Failed(message=REFUSED + grant)
    rows = restore(grant, out, home)
    if isinstance(rows, str):
        return Failed(message=FAILED + rows)
    return {"restored_rows": rows, "audit_entry": grant.audit_seq, "synthetic": grant.synthesize}


def run_decode(encoded: str, request: str, out: str, home: str = ".") -> dict:
    """Run :func:`decode_flow`; a refusal raises :class:`AccessRefused`, a failed restore
    :class:`IaeError`, each with the reason."""
    state = decode_flow(encoded=encoded, request=request, out=out, home=home, return_state=True)
    if state.is_failed() and state.message and state.message.startswith(REFUSED):
        raise AccessRefused(state.message.removeprefix(REFUSED))
    if state.is_failed() and state.message and state.message.startswith(FAILED):
        raise IaeError(state.message.removeprefix(FAILED))
    return state.result()
