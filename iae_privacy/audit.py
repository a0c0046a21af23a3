"""The audit log: every restore attempt, policy change and key event, tamper-evident.

One JSON line per entry, append-only. Each entry carries its sequence number and the MAC of the
entry before it (``prev``), and its own ``mac``: HMAC-SHA256, under the audit subkey, of the
entry's canonical JSON without ``mac``. So an edited entry fails its MAC; a deleted, reordered or
inserted one breaks the sequence or the chain at the first line that no longer follows; and an
entry cannot be forged without the keyring.

Cutting entries off the end leaves a shorter chain that is still valid; a **checkpoint** kept apart
from the log (under ``keys/``: sequence number and MAC of the last entry, itself MAC'd) catches it.

Fail closed: :meth:`AuditLog.append` first checks the log's tail against the checkpoint, and raises
if either cannot be written; callers (the decode) do nothing further when it raises. Appends take
an exclusive lock, so concurrent decodes cannot interleave entries or both use one request.

Entries hold names, counts, tokens and hashes, never restored values.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from iae_privacy import crypto
from iae_privacy.errors import IaeError
from iae_privacy.keyring import Keyring, Purpose, write_private

__all__ = ["AuditLog", "AuditError", "AuditReport", "NonceUsedError", "GENESIS"]

GENESIS = "0" * 64
"""``prev`` of the first entry."""


class AuditError(IaeError):
    """The audit log cannot be written, or fails its checks: nothing that needs an entry may run."""


class NonceUsedError(IaeError):
    """A decode request's nonce was already granted once: the request is a replay."""


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class AuditReport:
    entries: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """The log at ``path`` with its checkpoint at ``checkpoint``, MAC'd with the keyring's audit key."""

    def __init__(self, path: Path, checkpoint: Path, keyring: Keyring) -> None:
        self.path = Path(path)
        self.checkpoint = Path(checkpoint)
        self._key = keyring.subkey(Purpose.AUDIT)
        self._starting = False

    # -- reading ---------------------------------------------------------------------------------

    def _mac(self, entry: dict[str, Any]) -> str:
        return crypto.mac(self._key, _canonical({k: v for k, v in entry.items() if k != "mac"})).hex()

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        """The entry on ``line`` if it is canonical and its MAC holds; else None."""
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or _canonical(entry) != line or not isinstance(entry.get("mac"), str):
            return None
        return entry if crypto.constant_time_equal(entry["mac"].encode(), self._mac(entry).encode()) else None

    @staticmethod
    def _claimed_mac(line: bytes) -> str:
        try:
            return str(json.loads(line)["mac"])
        except (ValueError, KeyError, TypeError):
            return ""

    def _lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AuditError(f"audit log {self.path} cannot be read ({exc.strerror or type(exc).__name__})") from None
        return data.splitlines()

    def entries(self) -> list[dict[str, Any]]:
        """Every readable entry, in order (run :meth:`verify` to know they are genuine)."""
        out = []
        for line in self._lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"seq": None, "event": "(unreadable line)"})
        return out

    def _read_checkpoint(self) -> tuple[int, str] | None:
        try:
            doc = json.loads(self.checkpoint.read_bytes())
            seq, mac, check = int(doc["seq"]), str(doc["mac"]), bytes.fromhex(doc["check"])
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
            return
        seq, mac = checkpoint
        if seq > len(lines):
            yield (f"the log ends at entry {len(lines)} but the checkpoint records entry {seq}: "
                   f"entries {len(lines) + 1}..{seq} were cut off the end")
        elif seq and (entry := self._parse(lines[seq - 1])) is not None and entry["mac"] != mac:
            yield f"line {seq}: differs from the entry the checkpoint recorded there"

    def verify(self) -> AuditReport:
        """Check every entry's MAC, the sequence and chain, and the tail against the checkpoint."""
        lines = self._lines()
        return AuditReport(len(lines), list(self._chain_problems(lines)) + list(self._checkpoint_problems(lines)))

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

    def _tail(self) -> tuple[int, str, list[bytes]]:
        """(last seq, last mac, lines) after checking the entries since the checkpoint."""
        lines = self._lines()
        checkpoint = self._read_checkpoint()
        if checkpoint is None and not lines and not self._starting:
            raise AuditError(f"audit log {self.path} and its checkpoint {self.checkpoint} are both missing; "
                             "a workspace's log starts with 'keys init' and must never be deleted")
        start = checkpoint[0] if checkpoint else 0
        problems = list(self._checkpoint_problems(lines))
        if not problems:
            problems = list(self._chain_problems(lines, max(start - 1, 0)))
        if problems:
            raise AuditError(f"audit log {self.path} fails its checks ({problems[0]}); nothing that needs "
                             "an audit entry can run until it is repaired. See: iae-privacy audit verify")
        if not lines:
            return 0, GENESIS, lines
        last = json.loads(lines[-1])
        return last["seq"], last["mac"], lines

    def _append_locked(self, seq: int, prev: str, event: str, outcome: str, fields: dict[str, Any]) -> dict[str, Any]:
        entry = {**fields, "seq": seq + 1, "prev": prev, "event": event, "outcome": outcome,
                 "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")}
        entry["mac"] = self._mac(entry)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, _canonical(entry) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_checkpoint(entry["seq"], entry["mac"])
        except OSError as exc:
            raise AuditError(f"audit log {self.path} cannot be written ({exc.strerror or type(exc).__name__}); "
                             "refusing to go on without an audit entry") from None
        return entry

    def _check_since(self, lines: list[bytes], since: datetime.datetime | None) -> None:
        """Raise :class:`AuditError` if any entry from the last one back to the first genuine one
        written before ``since`` fails its MAC (entries are appended in time order)."""
        for i in range(len(lines) - 1, -1, -1):
            entry = self._parse(lines[i])
            if entry is None:
                raise AuditError(f"audit log {self.path} fails its checks (line {i + 1}: entry was edited or is "
                                 "not a genuine entry); nothing that needs an audit entry can run until it is "
                                 "repaired. See: iae-privacy audit verify")
            if since is not None and datetime.datetime.fromisoformat(entry["time"]) < since:
                return

    def start(self, **fields: Any) -> dict[str, Any]:
        """Write the first entry of a new log (refused if there is already a log or checkpoint)."""
        if self.path.exists() or self.checkpoint.exists():
            raise AuditError(f"audit log {self.path} already exists")
        self._starting = True
        try:
            return self.append("audit", "started", **fields)
        finally:
            self._starting = False

    def append(self, event: str, outcome: str, **fields: Any) -> dict[str, Any]:
        """Append an entry (``fields``: names, counts, tokens, hashes, never data values)."""
        with self._locked():
            seq, prev, _ = self._tail()
            return self._append_locked(seq, prev, event, outcome, fields)

    def grant_once(self, nonce: str, since: datetime.datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Append a granted ``decode`` entry for the request with ``nonce``, unless one was already
        granted: then :class:`NonceUsedError` (checked and written under one lock).

        Every entry that could hold an earlier grant of it (those written from ``since`` on, the
        earliest the request could have been used; all entries when None) is checked against its
        MAC first, so an edited nonce cannot turn a replay into a first use: the log fails closed.
        """
        with self._locked():
            seq, prev, lines = self._tail()
            self._check_since(lines, since)
            needle = b'"nonce":' + _canonical({"n": nonce})[5:-1]  # the nonce as it is written in a line
            for line in lines:
                if needle in line:
                    entry = json.loads(line)
                    if entry.get("event") == "decode" and entry.get("outcome") == "granted" \
                            and entry.get("nonce") == nonce:
                        raise NonceUsedError(f"this request was already used (audit entry {entry['seq']}); "
                                             "a request works once")
            return self._append_locked(seq, prev, "decode", "granted", {**fields, "nonce": nonce})
