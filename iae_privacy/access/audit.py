"""The audit log: every restore attempt, policy change and key event, tamper-evident.

One JSON line per entry, append-only. Each entry carries its sequence number and the MAC of the
entry before it (``prev``), and its own ``mac``: HMAC-SHA256, under the audit subkey, of the
entry's canonical JSON without ``mac``. So an edited entry fails its MAC; a deleted, reordered or
inserted one breaks the sequence or the chain at the first line that no longer follows; and an
entry cannot be forged without the keyring.

Cutting entries off the end leaves a shorter chain that is still valid; a **checkpoint** kept apart
from the log (under ``keys/``: sequence number and MAC of the last entry, itself MAC'd) catches it.

Fail closed: :meth:`AuditLog.append` first checks the log's tail against the checkpoint, writes the
whole line and syncs it before it returns, and raises if any of that fails (a short write is
undone); callers (the decode) do nothing further when it raises. Appends take an exclusive lock,
so concurrent decodes cannot interleave entries or both use one request.

A **torn** last line (a crash or a full disk in the middle of an append: no newline at the end)
is reported as torn, not as an edit; ``iae-privacy audit repair`` removes it, and only it, and
records the repair. Deleting the log and its checkpoint together is caught too: the keyring
records that the workspace's log was started.

Entries hold names, counts, tokens and hashes, never restored values.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from iae_privacy.documents import canonical, hex_bytes, parse_json, utc_now
from iae_privacy.errors import AuditError, NonceUsedError
from iae_privacy.files import write_private
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

__all__ = ["AuditLog", "AuditError", "AuditReport", "NonceUsedError", "GENESIS"]

GENESIS = "0" * 64
"""``prev`` of the first entry."""


@dataclass
class AuditReport:
    entries: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def operator() -> str:
    """The local account running this process (its uid where it has no name)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class AuditLog:
    """The log at ``path`` with its checkpoint at ``checkpoint``, MAC'd with the keyring's audit key."""

    def __init__(self, path: Path, checkpoint: Path, keyring: Keyring) -> None:
        self.path = Path(path)
        self.checkpoint = Path(checkpoint)
        self._key = keyring.subkey(Purpose.AUDIT)
        self._keyring = keyring
        self._starting = False

    @property
    def _started(self) -> str | None:
        return self._keyring.audit_started

    # -- reading ---------------------------------------------------------------------------------

    def _mac(self, entry: dict[str, Any]) -> str:
        return crypto.mac(self._key, canonical({k: v for k, v in entry.items() if k != "mac"})).hex()

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        """The entry on ``line`` if it is canonical and its MAC holds; else None."""
        try:
            entry = parse_json(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or canonical(entry) != line or not isinstance(entry.get("mac"), str):
            return None
        return entry if crypto.constant_time_equal(entry["mac"].encode(), self._mac(entry).encode()) else None

    @staticmethod
    def _claimed_mac(line: bytes) -> str:
        try:
            return str(parse_json(line)["mac"])
        except (ValueError, KeyError, TypeError):
            return ""

    def _read(self) -> tuple[list[bytes], bytes]:
        """(complete lines, torn tail): the tail is what follows the last newline (empty when the
        last append completed)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        except OSError as exc:
            raise AuditError(f"audit log {self.path} cannot be read ({exc.strerror or type(exc).__name__})") from None
        complete, newline, torn = data.rpartition(b"\n")
        return (complete.split(b"\n") if newline else []), torn

    def _lines(self) -> list[bytes]:
        """Every line, a torn tail included."""
        lines, torn = self._read()
        return lines + [torn] if torn else lines

    def entries(self) -> list[dict[str, Any]]:
        """Every readable entry, in order (run :meth:`verify` to know they are genuine)."""
        out = []
        for line in self._lines():
            try:
                out.append(parse_json(line))
            except ValueError:
                out.append({"seq": None, "event": "(unreadable line)"})
        return out

    def last_entry(self, event: str) -> dict[str, Any] | None:
        """The latest entry of ``event``, after checking the chain from it to the end and the
        checkpoint (so an older genuine entry cannot pass for the latest); None if there is none."""
        lines, torn = self._read()
        for i in range(len(lines) - 1, -1, -1):
            if f'"event":{canonical({"e": event})[5:-1].decode()}'.encode() not in lines[i]:
                continue
            entry = self._parse(lines[i])
            if entry is None or entry.get("event") != event:
                continue
            problems = ([self._torn_problem(lines, torn)] if torn else []) or \
                list(self._checkpoint_problems(lines)) or list(self._chain_problems(lines, i))
            if problems:
                raise AuditError(f"audit log {self.path} fails its checks ({problems[0]}). "
                                 "See: iae-privacy audit verify")
            return entry
        return None

    def _read_checkpoint(self) -> tuple[int, str] | None:
        try:
            doc = parse_json(self.checkpoint.read_bytes())
            seq, mac, check = int(doc["seq"]), str(doc["mac"]), hex_bytes(doc["check"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"audit checkpoint {self.checkpoint} is damaged") from None
        except OSError as exc:
            raise AuditError(f"audit checkpoint {self.checkpoint} cannot be read ({exc.strerror})") from None
        if not crypto.mac_matches(self._key, f"checkpoint|{seq}|{mac}".encode(), check):
            raise AuditError(f"audit checkpoint {self.checkpoint} fails its MAC: altered")
        return seq, mac

    def _write_checkpoint(self, seq: int, mac: str) -> None:
        check = crypto.mac(self._key, f"checkpoint|{seq}|{mac}".encode()).hex()
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.checkpoint, json.dumps({"seq": seq, "mac": mac, "check": check}).encode())

    def _chain_problems(self, lines: list[bytes], start: int = 0) -> Iterator[str]:
        """Problems of lines[start:] as a chain (line numbers count from 1)."""
        prev = GENESIS
        if start:
            prev = self._claimed_mac(lines[start - 1])
        for i in range(start, len(lines)):
            entry = self._parse(lines[i])
            if entry is None:
                yield f"line {i + 1}: entry was edited or is not a genuine entry (MAC fails)"
                prev = self._claimed_mac(lines[i])  # so that the next line is judged on its own
                continue
            if entry.get("seq") != i + 1:
                yield (f"line {i + 1}: holds entry {entry.get('seq')}: entries were deleted, reordered or "
                       "inserted before it")
            elif entry.get("prev") != prev:
                yield f"line {i + 1}: does not follow line {i}: an entry was deleted, reordered or inserted"
            prev = entry["mac"]

    def _checkpoint_problems(self, lines: list[bytes]) -> Iterator[str]:
        checkpoint = self._read_checkpoint()
        if checkpoint is None:
            if lines:
                yield f"the audit checkpoint {self.checkpoint} is missing"
            elif self._started is not None and not self._starting:
                yield (f"audit log {self.path} and its checkpoint {self.checkpoint} are both missing, but the "
                       f"keyring records that this workspace's log was started on {self._started}: deleted")
            return
        seq, mac = checkpoint
        if seq > len(lines):
            yield (f"the log ends at entry {len(lines)} but the checkpoint records entry {seq}: "
                   f"entries {len(lines) + 1}..{seq} were cut off the end")
        elif seq and (entry := self._parse(lines[seq - 1])) is not None and entry["mac"] != mac:
            yield f"line {seq}: differs from the entry the checkpoint recorded there"

    def _torn_problem(self, lines: list[bytes], torn: bytes) -> str:
        return (f"line {len(lines) + 1}: the last line is torn ({len(torn)} bytes with no end of line): an "
                "append did not complete (a full disk or a crash); the entries before it are unaffected. "
                "Repair with: iae-privacy audit repair")

    def verify(self) -> AuditReport:
        """Check every entry's MAC, the sequence and chain, and the tail against the checkpoint."""
        lines, torn = self._read()
        problems = list(self._chain_problems(lines)) + list(self._checkpoint_problems(lines))
        if torn:
            problems.append(self._torn_problem(lines, torn))
        return AuditReport(len(lines) + bool(torn), problems)

    # -- writing ---------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"audit log {self.path} cannot be locked ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _tail(self, since: datetime.datetime | None = None, window: bool = False) -> tuple[int, str, list[bytes]]:
        """(last seq, last mac, lines) after checking the log: the chain from the checkpoint on (and,
        with ``window``, from the last entry written before ``since``; all entries when None) and
        the checkpoint itself. Raises :class:`AuditError` for any problem."""
        lines, torn = self._read()
        checkpoint = self._read_checkpoint()
        if checkpoint is None and not lines and not torn and not self._starting and self._started is None:
            raise AuditError(f"audit log {self.path} and its checkpoint {self.checkpoint} are both missing; "
                             "a workspace's log starts with 'keys init' and must never be deleted")
        start = max((checkpoint[0] if checkpoint else 0) - 1, 0)
        if window:
            start = min(start, self._window_start(lines, since))
        problems = [self._torn_problem(lines, torn)] if torn else []
        problems = problems or list(self._checkpoint_problems(lines)) or list(self._chain_problems(lines, start))
        if problems:
            raise AuditError(f"audit log {self.path} fails its checks ({problems[0]}); nothing that needs "
                             "an audit entry can run until it is repaired. See: iae-privacy audit verify")
        if not lines:
            return 0, GENESIS, lines
        last = parse_json(lines[-1])
        return last["seq"], last["mac"], lines

    def _window_start(self, lines: list[bytes], since: datetime.datetime | None) -> int:
        """Index of the last line written before ``since`` (0 when None or none is): from there on,
        the chain is checked. A line that fails its MAC cannot end the window early."""
        if since is None:
            return 0
        for i in range(len(lines) - 1, -1, -1):
            entry = self._parse(lines[i])
            try:
                if entry is not None and datetime.datetime.fromisoformat(entry["time"]) < since:
                    return i
            except (ValueError, TypeError, KeyError):
                continue
        return 0

    def _append_locked(self, seq: int, prev: str, event: str, outcome: str, fields: dict[str, Any]) -> dict[str, Any]:
        entry = {**fields, "seq": seq + 1, "prev": prev, "event": event, "outcome": outcome,
                 "time": utc_now().isoformat(timespec="milliseconds")}
        entry["mac"] = self._mac(entry)
        try:
            self._write_line(canonical(entry) + b"\n")
            self._write_checkpoint(entry["seq"], entry["mac"])
        except OSError as exc:
            raise AuditError(f"audit log {self.path} cannot be written ({exc.strerror or type(exc).__name__}); "
                             "refusing to go on without an audit entry") from None
        return entry

    def _write_line(self, line: bytes) -> None:
        """Append ``line`` whole and synced, or raise OSError with the log as it was (a short write,
        e.g. on a full disk, is cut off again; if even that fails, the line is left torn, which the
        next append and 'audit verify' recognise)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    if written <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[written:]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def start(self, **fields: Any) -> dict[str, Any]:
        """Write the first entry of a new log (refused if there is already a log or checkpoint, or
        the keyring records that this workspace's log was started before)."""
        if self.path.exists() or self.checkpoint.exists():
            raise AuditError(f"audit log {self.path} already exists")
        if self._started is not None:
            raise AuditError(f"this workspace's audit log was started on {self._started} and is missing: "
                             f"put it ({self.path}) and its checkpoint ({self.checkpoint}) back from a backup")
        self._starting = True
        try:
            return self.append("audit", "started", **fields)
        finally:
            self._starting = False

    def append(self, event: str, outcome: str, **fields: Any) -> dict[str, Any]:
        """Append an entry (``fields``: names, counts, tokens, hashes, never data values), with the
        local account that made it (``operator``): who changed the policy or the keys, who ran a decode."""
        fields.setdefault("operator", operator())
        with self._locked():
            seq, prev, _ = self._tail()
            entry = self._append_locked(seq, prev, event, outcome, fields)
        if self._started is None:  # a log started before the keyring kept this record
            self._keyring.mark_audit_started(entry["time"])
        return entry

    def repair(self) -> int:
        """Remove a torn last line (and nothing else) and record the repair; the bytes removed.

        Refused when the last line is not torn, or when anything else in the log fails its checks:
        only an append that did not complete is repairable, never an edit."""
        with self._locked():
            lines, torn = self._read()
            if not torn:
                raise AuditError(f"audit log {self.path} has no torn last line: nothing to repair")
            problems = list(self._chain_problems(lines)) + list(self._checkpoint_problems(lines))
            if problems:
                raise AuditError(f"audit log {self.path} has other problems ({problems[0]}): only a torn last "
                                 "line can be repaired")
            try:
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, os.fstat(fd).st_size - len(torn))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise AuditError(f"audit log {self.path} cannot be repaired ({exc.strerror})") from None
            seq, prev, _ = self._tail()
            self._append_locked(seq, prev, "audit", "repaired", {"removed_line": len(lines) + 1,
                                                                 "removed_bytes": len(torn)})
        return len(torn)

    def grant_once(self, nonce: str, since: datetime.datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Append a granted ``decode`` entry for the request with ``nonce``, unless one was already
        granted: then :class:`NonceUsedError` (checked and written under one lock).

        Every entry that could hold an earlier grant of it (those written from ``since`` on, the
        earliest the request could have been used; all entries when None) is checked as a chain
        first (MAC, sequence and link to the entry before), so neither an edited nonce nor a genuine
        entry copied over the earlier grant can turn a replay into a first use: the log fails closed.
        """
        with self._locked():
            seq, prev, lines = self._tail(since, window=True)
            needle = b'"nonce":' + canonical({"n": nonce})[5:-1]  # the nonce as it is written in a line
            for line in lines:
                if needle in line:
                    entry = parse_json(line)
                    if entry.get("event") == "decode" and entry.get("outcome") == "granted" \
                            and entry.get("nonce") == nonce:
                        raise NonceUsedError(f"this request was already used (audit entry {entry['seq']}); "
                                             "a request works once")
            return self._append_locked(seq, prev, "decode", "granted", {**fields, "nonce": nonce})
