"""The audited restore: only here are the model and the vault opened, for exactly what a grant
covers, with every outcome (restored, failed, interrupted) in the audit log and no output left
behind on failure.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from iae_privacy.access.audit import AuditError, AuditLog
from iae_privacy.access.authorize import Grant, pinned_manifest
from iae_privacy.dataset.store import EncodedDataset
from iae_privacy.documents import canonical, parse_json
from iae_privacy.errors import IaeError
from iae_privacy.files import remove_stale_temporaries
from iae_privacy.keys.keyring import Keyring

if TYPE_CHECKING:
    from iae_privacy.workspace import Workspace

__all__ = ["Restorer"]

_HELD: dict[Path, int] = {}
"""Grants made in this process whose restore has not ended: marker path -> its locked fd."""


class Restorer:
    """Restores what a grant covers; tells a restore that died from one still running."""

    workspace: Workspace
    keyring: Keyring
    audit: AuditLog

    def restore(self, grant: Grant, out: Path, on_rows: Callable[[int, int], None] | None = None,
                with_row_id: bool = False) -> int:
        """Open the model and the vault and restore what ``grant`` covers to ``out`` (owner-only).

        A whole dataset with every column restores part by part with each part's content checked
        against its source (``out`` a .parquet file for one part, else a folder); anything else
        goes to one Parquet file. A failure is recorded in the audit log and leaves no output; so
        does a restore whose outcome cannot be recorded. While it runs, a marker under
        ``audit/running/`` is held locked: if the process dies, the next decode records the grant
        as interrupted and removes the temporary output (:meth:`recover_interrupted`).
        ``with_row_id``: one .parquet file with each row's latent ``row_id`` as a last column.
        """
        dataset = EncodedDataset(grant.encoded)
        marker = self.hold(grant.audit_seq, out)
        try:
            try:
                # the grant covers the parts checked at the authorisation: the same, unchanged, alone
                # (a scheduled encode may have committed a part in between)
                manifest = pinned_manifest(dataset.read_manifest(self.keyring), grant.dataset, grant.manifest_sha256,
                                           grant.parts, grant.parts_sha256, dataset.folder)
                loaded = self.workspace.models.load(f"{manifest.model}:v{manifest.model_version}", self.keyring)
                if grant.synthesize:
                    from iae_privacy.analysts.synthesize import (
                        synthesize_records,  # torch
                    )

                    rows = synthesize_records(dataset, manifest, loaded, self.keyring, grant.rows, out, on_rows,
                                              where=grant.synthesize_where)
                elif grant.located is None and grant.columns is None and not with_row_id:
                    # the authorisation hashed these parts; the content digests still check them
                    rows = dataset.decode_all(loaded.model, self.keyring, out, on_rows, manifest, verified=True)
                else:
                    if out.suffix != ".parquet":
                        raise IaeError(f"{out}: a restore of some rows or columns goes to one .parquet file")
                    rows = dataset.decode_rows(manifest, loaded.model, self.keyring, out, grant.located,
                                               None if grant.columns is None else list(grant.columns), on_rows,
                                               with_row_id)
            except BaseException as exc:
                # an IaeError's message names files and keys, never values; anything else is named by type
                reason = str(exc) if isinstance(exc, IaeError) else f"interrupted by {type(exc).__name__}"
                self.audit.append("decode", "failed", principal=grant.principal, dataset=grant.dataset,
                                  granted_in=grant.audit_seq, reason=reason)
                raise
            try:
                self.audit.append("decode", "synthesized" if grant.synthesize else "restored",
                                  principal=grant.principal, dataset=grant.dataset, granted_in=grant.audit_seq,
                                  rows=rows)
            except AuditError:
                if grant.synthesize:
                    from iae_privacy.analysts.synthesize import report_paths  # imported above, as it wrote them
                written = [out, *report_paths(out)] if grant.synthesize else \
                    [out] if out.suffix == ".parquet" else dataset.restored_paths(manifest, out, self.keyring)
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        finally:
            self._release(grant.audit_seq, marker)
        return rows

    # -- interrupted restores ------------------------------------------------------------------------

    @property
    def _running(self) -> Path:
        return self.workspace.audit_log.parent / "running"

    def hold(self, seq: int, out: Path | None = None) -> int | None:
        """Hold the marker of grant ``seq`` locked (made locked if new), recording ``out`` in it;
        its file descriptor (None if the grant was made before markers existed)."""
        path = self._running / f"{seq}.json"
        fd = _HELD.get(path)
        if fd is None:
            if out is not None and not path.exists():
                return None
            self._running.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd_tmp, name = tempfile.mkstemp(dir=self._running, prefix=f".{seq}.", suffix=".tmp")
            fcntl.flock(fd_tmp, fcntl.LOCK_EX)  # locked before it has its name: never seen unlocked
            os.replace(name, path)
            fd = _HELD[path] = fd_tmp
        if out is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, canonical({"out": str(Path(out).absolute())}), 0)
            os.fsync(fd)
        return fd

    def _release(self, seq: int, fd: int | None) -> None:
        if fd is None:
            return
        path = self._running / f"{seq}.json"
        path.unlink(missing_ok=True)
        os.close(_HELD.pop(path, fd))

    def recover_interrupted(self) -> list[int]:
        """Record the outcome of grants whose restore died (kill -9, a crash, a lost machine) and
        remove the temporary output they left; the grants' audit entry numbers. A restore still
        running, in this process or another, holds its marker locked and is left alone."""
        recovered = []
        for marker in sorted(self._running.glob("[0-9]*.json")) if self._running.is_dir() else []:
            try:
                fd = os.open(marker, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    out = parse_json(os.pread(fd, 1 << 16, 0) or b"{}").get("out")
                except (ValueError, AttributeError):
                    out = None
                removed = []
                if isinstance(out, str):
                    target = Path(out)
                    removed = remove_stale_temporaries(target) if target.is_dir() else \
                        remove_stale_temporaries(target.parent, target.name)
                seq = int(marker.stem)
                self.audit.append("decode", "interrupted", granted_in=seq, temporaries_removed=len(removed),
                                  reason="the restore's process ended before it finished (killed or crashed)")
                marker.unlink(missing_ok=True)
                recovered.append(seq)
            finally:
                os.close(fd)
        return recovered
