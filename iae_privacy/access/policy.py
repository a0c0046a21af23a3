"""The access policy: roles (what may be restored), principals (who, with which public key), and
the store that changes it, auditing every change first.

The policy (``keys/policy.json``) maps principals to roles, and roles to datasets, columns, a row
limit per request and whether whole-dataset restores are allowed. It is MAC'd with the policy
subkey and changed only through iae-privacy, which audits every change: a policy edited by hand is
refused, and so is a genuine older copy put back.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iae_privacy.access.audit import AuditLog
from iae_privacy.documents import canonical, hex_bytes, parse_json, utc_now
from iae_privacy.errors import AccessRefused, IaeError
from iae_privacy.files import write_private
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

if TYPE_CHECKING:
    from iae_privacy.workspace import Workspace

__all__ = ["AccessRole", "Principal", "Policy", "PolicyStore", "ADMIN", "DEFAULT_MAX_LIFETIME", "MAX_TTL",
           "check_name", "parse_ttl", "timestamp"]

POLICY_FORMAT = "iae-privacy/policy"
ADMIN = "admin"
"""The first principal, made by ``keys init``, and its role (may restore everything)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TTL = re.compile(r"^(\d+)([smhd])$")
_TTL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_MAX_LIFETIME = 24 * 3600
"""Longest a request may stay valid (expiry minus creation), in seconds, unless its principal's
role sets its own ``max_lifetime``: a leaked request file is useless after at most this long."""
MAX_TTL = 366 * 86400
"""No role may allow more than this (a year and a day): beyond it a lifetime is a mistake."""



def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise IaeError(f"{what} name {name!r} is not allowed: use letters, digits, '_', '.', '@', '-' "
                       "(up to 64, starting with a letter or digit)")
    return name


def parse_ttl(text: str) -> int:
    """Seconds in a time to live such as ``90s``, ``30m``, ``1h`` or ``7d`` (at most a year)."""
    match = _TTL.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise IaeError(f"time to live {text!r}: expected a number and a unit, e.g. 30m, 1h, 7d")
    seconds = int(match.group(1)) * _TTL_SECONDS[match.group(2)]
    if seconds > MAX_TTL:
        raise IaeError(f"time to live {text!r} is longer than a year; requests are meant to be short-lived "
                       f"(the policy's default cap is {DEFAULT_MAX_LIFETIME // 3600} h)")
    return seconds


def timestamp(text: str) -> datetime.datetime:
    """A request's time: ISO 8601 with a time zone, between the years 2000 and 9000."""
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError("time without a time zone")
    if not 2000 <= stamp.year <= 9000:
        raise ValueError("time out of range")
    return stamp


@dataclass(frozen=True)
class AccessRole:
    """What a role may restore. Dataset and column entries are names or shell-style patterns."""

    datasets: tuple[str, ...] = ("*",)
    columns: tuple[str, ...] = ("*",)
    max_rows: int | None = None
    """Most rows one request may restore; None: no limit."""
    whole_dataset: bool = False
    """Whether a request may restore a dataset whole (no row selection)."""
    max_lifetime: int | None = None
    """Longest a request may stay valid, in seconds; None: :data:`DEFAULT_MAX_LIFETIME`."""

    @property
    def lifetime_cap(self) -> int:
        return DEFAULT_MAX_LIFETIME if self.max_lifetime is None else self.max_lifetime

    def document(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.max_lifetime is None:  # policies written before the setting existed keep their bytes
            del doc["max_lifetime"]
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AccessRole:
        lifetime = doc.get("max_lifetime")
        if lifetime is not None and (type(lifetime) is not int or not 0 < lifetime <= MAX_TTL):
            raise ValueError("max_lifetime")
        return cls(tuple(doc["datasets"]), tuple(doc["columns"]), doc["max_rows"], bool(doc["whole_dataset"]),
                   lifetime)

    def allows_dataset(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.datasets)

    def allows_column(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.columns)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    public_key: str
    """Hex of the 32-byte Ed25519 public key."""
    added: str


@dataclass
class Policy:
    roles: dict[str, AccessRole] = field(default_factory=dict)
    principals: dict[str, Principal] = field(default_factory=dict)

    def body(self) -> bytes:
        return canonical({"format": POLICY_FORMAT, "version": 1,
                           "roles": {n: r.document() for n, r in sorted(self.roles.items())},
                           "principals": {n: asdict(p) for n, p in sorted(self.principals.items())}})

    def sha256(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()

    @classmethod
    def load(cls, path: Path, keyring: Keyring) -> Policy:
        try:
            doc = parse_json(path.read_bytes())
            body, tag = doc["body"], hex_bytes(doc["mac"])
            if body["format"] != POLICY_FORMAT:
                raise ValueError("format")
            policy = cls({n: AccessRole.from_document(r) for n, r in body["roles"].items()},
                         {n: Principal(**p) for n, p in body["principals"].items()})
        except FileNotFoundError:
            raise AccessRefused(f"no access policy at {path}: create one with 'iae-privacy keys init'") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AccessRefused(f"access policy {path} is damaged") from None
        signed = canonical(body)
        if not crypto.mac_matches(keyring.subkey(Purpose.POLICY), signed, tag) or policy.body() != signed:
            raise AccessRefused(f"access policy {path} fails its MAC: it was changed outside iae-privacy "
                                "(change it with 'iae-privacy keys add-principal' or 'iae-privacy policy set-role')")
        return policy

    def save(self, path: Path, keyring: Keyring) -> None:
        body = self.body()
        tag = crypto.mac(keyring.subkey(Purpose.POLICY), body).hex()
        write_private(path, json.dumps({"body": json.loads(body), "mac": tag}, indent=1, ensure_ascii=False).encode())


class PolicyStore:
    """The workspace's policy: read (checked against the audit log), and changed (audited first)."""

    workspace: Workspace
    keyring: Keyring
    audit: AuditLog

    @property
    def policy_path(self) -> Path:
        return self.workspace.keys / "policy.json"

    def policy(self) -> Policy:
        """The policy, after checking its MAC and that it is the one the audit log last recorded (a
        genuine older copy put back, e.g. to undo a principal's removal, is refused)."""
        policy = Policy.load(self.policy_path, self.keyring)
        recorded = self.audit.last_entry("policy")
        if recorded is not None and recorded.get("policy_sha256") != policy.sha256():
            raise AccessRefused(f"access policy {self.policy_path} is not the one the audit log last recorded "
                                f"(entry {recorded['seq']}, {recorded['outcome']}): an older copy was put back. "
                                "Restore the current policy from a backup")
        return policy

    @property
    def initialised(self) -> bool:
        return self.policy_path.exists()

    def initialise(self, key_out: Path | None = None) -> Path:
        """Start the audit log and the policy with the role and principal ``admin``; returns the
        path of admin's private key."""
        if self.initialised:
            raise IaeError(f"{self.policy_path} already exists")
        self.audit.start(keyring=str(self.keyring.folder), key_version=self.keyring.current)
        self._change_policy(Policy(), "created", {})
        self.set_role(ADMIN, AccessRole(("*",), ("*",), None, True))
        return self.add_principal(ADMIN, ADMIN, key_out)

    def _change_policy(self, policy: Policy, change: str, details: dict[str, Any]) -> None:
        """Audit, then save: a change that cannot be audited is not made."""
        previous = Policy.load(self.policy_path, self.keyring).sha256() if self.policy_path.exists() else None
        self.audit.append("policy", change, policy_sha256=policy.sha256(), **details)
        try:
            policy.save(self.policy_path, self.keyring)
        except OSError as exc:
            if previous is not None:  # the log must name the policy that is in force
                self.audit.append("policy", "not-saved", policy_sha256=previous, change=change)
            raise IaeError(f"access policy {self.policy_path} cannot be written ({exc.strerror}); "
                           "the change was not made") from None

    def add_principal(self, name: str, role: str, key_out: Path | None = None) -> Path:
        """A key pair for ``name``: the private half to ``key_out`` (owner-only; default
        HOME/principals/NAME.key), the public half into the policy."""
        check_name(name, "principal")
        policy = self.policy()
        if name in policy.principals:
            raise IaeError(f"principal {name!r} already exists")
        if role not in policy.roles:
            raise IaeError(f"no role {role!r} in the policy (roles: {', '.join(sorted(policy.roles)) or 'none'}); "
                           "define it with 'iae-privacy policy set-role'")
        key_out = key_out or self.workspace.home / "principals" / f"{name}.key"
        if key_out.exists():
            raise IaeError(f"{key_out} already exists; give another --key-out")
        key_out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem, public = crypto.new_signing_key()
        write_private(key_out, pem)  # first: a principal in the policy always has its private key somewhere
        policy.principals[name] = Principal(name, role, public.hex(), utc_now().isoformat(timespec="seconds"))
        try:
            self._change_policy(policy, "principal-added", {"principal": name, "role": role})
        except BaseException:
            key_out.unlink(missing_ok=True)
            raise
        return key_out

    def remove_principal(self, name: str) -> None:
        """Take a principal out of the policy: requests signed with their key are refused from now on."""
        policy = self.policy()
        if name not in policy.principals:
            raise IaeError(f"no principal {name!r} in the policy")
        del policy.principals[name]
        self._change_policy(policy, "principal-removed", {"principal": name})

    def set_role(self, name: str, role: AccessRole) -> None:
        check_name(name, "role")
        policy = self.policy()
        policy.roles[name] = role
        self._change_policy(policy, "role-set", {"role": name, **asdict(role)})

    def record_key_event(self, change: str, **details: Any) -> None:
        self.audit.append("keys", change, **details)
