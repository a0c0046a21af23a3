"""Who may restore what: principals, the policy, signed decode requests, and the audited restore.

This module is where a decode is authorised, and the only way to one:

* a **principal** is a person with an Ed25519 key pair; the private half is theirs (a file only
  they can read), the public half sits in the policy;
* the **policy** (``keys/policy.json``) maps principals to roles, and roles to datasets, columns,
  a row limit per request and whether whole-dataset restores are allowed. It is MAC'd with the
  policy subkey and changed only through iae-privacy, which audits every change: a policy edited
  by hand is refused;
* a **decode request** is signed by its principal and names the dataset (by the hash of its
  signed manifest), the columns and rows, the purpose, an expiry and a nonce. It works once;
* :meth:`AccessControl.authorize` checks all of that, writes the audit entry (no entry, no
  restore) and returns a :class:`Grant`; only :meth:`AccessControl.restore` then opens the model
  and the vault, and restores exactly what the grant covers.

Every refusal is an :class:`AccessRefused` with the reason, recorded in the audit log, and leaves
no output file.
"""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from iae_privacy.keys import crypto
from iae_privacy.access.audit import AuditError, AuditLog, NonceUsedError
from iae_privacy.documents import parse_json
from iae_privacy.errors import IaeError, AccessRefused
from iae_privacy.files import remove_stale_temporaries, write_private
from iae_privacy.keys.keyring import Keyring, Purpose, check_private
from iae_privacy.dataset.store import EncodedDataset, Manifest
from iae_privacy.workspace import Workspace

__all__ = ["AccessControl", "AccessRefused", "AccessRole", "DecodeRequest", "Grant", "Policy", "Principal",
           "ADMIN", "make_request", "parse_ttl"]

POLICY_FORMAT = "iae-privacy/policy"
REQUEST_FORMAT = "iae-privacy/decode-request"
ADMIN = "admin"
"""The first principal, made by ``keys init``, and its role (may restore everything)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TTL = re.compile(r"^(\d+)([smhd])$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_TTL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""How far ahead of this machine's clock a request's creation time may be."""
DEFAULT_MAX_LIFETIME = 24 * 3600
"""Longest a request may stay valid (expiry minus creation), in seconds, unless its principal's
role sets its own ``max_lifetime``: a leaked request file is useless after at most this long."""
MAX_TTL = 366 * 86400
"""No role may allow more than this (a year and a day): beyond it a lifetime is a mistake."""


_HELD: dict[Path, int] = {}
"""Grants made in this process whose restore has not ended: marker path -> its locked fd."""


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


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


def _timestamp(text: str) -> datetime.datetime:
    """A request's time: ISO 8601 with a time zone, between the years 2000 and 9000."""
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError("time without a time zone")
    if not 2000 <= stamp.year <= 9000:
        raise ValueError("time out of range")
    return stamp


# -- the policy ------------------------------------------------------------------------------------

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
        return _canonical({"format": POLICY_FORMAT, "version": 1,
                           "roles": {n: r.document() for n, r in sorted(self.roles.items())},
                           "principals": {n: asdict(p) for n, p in sorted(self.principals.items())}})

    def sha256(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()

    @classmethod
    def load(cls, path: Path, keyring: Keyring) -> Policy:
        try:
            doc = parse_json(path.read_bytes())
            body, tag = doc["body"], bytes.fromhex(doc["mac"])
            if body["format"] != POLICY_FORMAT:
                raise ValueError("format")
            policy = cls({n: AccessRole.from_document(r) for n, r in body["roles"].items()},
                         {n: Principal(**p) for n, p in body["principals"].items()})
        except FileNotFoundError:
            raise AccessRefused(f"no access policy at {path}: create one with 'iae-privacy keys init'") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AccessRefused(f"access policy {path} is damaged") from None
        if not crypto.mac_matches(keyring.subkey(Purpose.POLICY), _canonical(body), tag) or policy.body() != _canonical(body):
            raise AccessRefused(f"access policy {path} fails its MAC: it was changed outside iae-privacy "
                                "(change it with 'iae-privacy keys add-principal' or 'iae-privacy policy set-role')")
        return policy

    def save(self, path: Path, keyring: Keyring) -> None:
        body = self.body()
        tag = crypto.mac(keyring.subkey(Purpose.POLICY), body).hex()
        write_private(path, json.dumps({"body": json.loads(body), "mac": tag}, indent=1, ensure_ascii=False).encode())


# -- requests --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeRequest:
    """What a principal asks to restore. ``rows`` are row ids; ``where_token`` selects the rows whose
    identifier column has a token; neither: the whole dataset. ``columns`` None: every column."""

    principal: str
    dataset: str
    manifest_sha256: str
    columns: tuple[str, ...] | None
    rows: tuple[int, ...] | None
    where_token: tuple[str, str] | None
    purpose: str
    created: str
    expires: str
    nonce: str
    synthesize: int | None = None
    """Instead of restoring: this many synthetic records sampled from the dataset's model."""

    @property
    def whole(self) -> bool:
        return self.rows is None and self.where_token is None and self.synthesize is None

    def document(self) -> dict[str, Any]:
        return {"format": REQUEST_FORMAT, "version": 1, "principal": self.principal, "dataset": self.dataset,
                "manifest_sha256": self.manifest_sha256,
                "columns": None if self.columns is None else list(self.columns),
                "rows": None if self.rows is None else list(self.rows),
                "where_token": None if self.where_token is None else
                {"column": self.where_token[0], "token": self.where_token[1]},
                "purpose": self.purpose, "created": self.created, "expires": self.expires, "nonce": self.nonce,
                "synthesize": self.synthesize}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> DecodeRequest:
        if doc["format"] != REQUEST_FORMAT or doc["version"] != 1:
            raise ValueError("format")
        where = doc["where_token"]
        request = cls(str(doc["principal"]), str(doc["dataset"]), str(doc["manifest_sha256"]),
                      None if doc["columns"] is None else tuple(str(c) for c in doc["columns"]),
                      None if doc["rows"] is None else tuple(int(r) for r in doc["rows"]),
                      None if where is None else (str(where["column"]), str(where["token"])),
                      str(doc["purpose"]), str(doc["created"]), str(doc["expires"]), str(doc["nonce"]),
                      None if doc["synthesize"] is None else int(doc["synthesize"]))
        if request.document() != doc:
            raise ValueError("not canonical")
        if _timestamp(request.expires) <= _timestamp(request.created):
            raise ValueError("expires before it was made")
        if not _NONCE.match(request.nonce):
            raise ValueError("nonce")
        if request.columns is not None and not request.columns:
            raise ValueError("no column")
        if request.rows is not None and not request.rows:
            raise ValueError("no row")
        if request.synthesize is not None and (request.synthesize < 1 or request.columns is not None
                                               or request.rows is not None or request.where_token is not None):
            raise ValueError("synthesize")
        return request

    @property
    def lifetime(self) -> datetime.timedelta:
        return _timestamp(self.expires) - _timestamp(self.created)

    def serialize(self, signature: bytes) -> bytes:
        """The request file: canonical JSON, one line. No byte of it can change and still verify."""
        return _canonical({"request": self.document(), "signature": signature.hex()}) + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> tuple[DecodeRequest, bytes]:
        """(request, signature) from a request file; ValueError unless it is exactly canonical."""
        try:
            doc = parse_json(data)
            if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
                raise ValueError("not a request")
            request, signature = cls.from_document(doc["request"]), bytes.fromhex(doc["signature"])
        except (KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(type(exc).__name__) from None
        if request.serialize(signature) != data:
            raise ValueError("not canonical")
        return request, signature


def make_request(encoded: Path, principal: str, private_key: Path, *, columns: list[str] | None = None,
                 rows: list[int] | None = None, where_token: tuple[str, str] | None = None,
                 purpose: str = "", ttl_seconds: int = 3600, synthesize: int | None = None) -> bytes:
    """A signed request file for the encoded dataset ``encoded``, signed with ``private_key`` (PEM).

    Needs no keyring: the dataset is named by the hash of its manifest as it is now (the decode
    checks that manifest's signature and that it still has this hash)."""
    check_name(principal, "principal")
    if rows is not None and where_token is not None:
        raise IaeError("give rows or a token to match, not both")
    if rows is not None and not rows:
        raise IaeError("--rows names no row")
    if columns is not None and not columns:
        raise IaeError("--columns names no column")
    if where_token is not None and not all(isinstance(part, str) and part for part in where_token):
        raise IaeError("a token match needs a column name and a token")
    if synthesize is not None and (synthesize < 1 or rows is not None or where_token is not None or columns is not None):
        raise IaeError("a synthesis request names a positive number of rows, and no rows, token or columns")
    dataset, manifest_sha256 = EncodedDataset(encoded).manifest_identity()
    try:
        check_private(private_key, folder=False, what="private key")
        pem = private_key.read_bytes()
    except FileNotFoundError:
        raise IaeError(f"no private key at {private_key} (made by 'iae-privacy keys add-principal')") from None
    except OSError as exc:
        raise IaeError(f"private key {private_key} cannot be read ({exc.strerror})") from None
    now = _now()
    request = DecodeRequest(principal, dataset, manifest_sha256, None if columns is None else tuple(columns),
                            None if rows is None else tuple(sorted(set(rows))), where_token, purpose,
                            now.isoformat(timespec="seconds"),
                            (now + datetime.timedelta(seconds=ttl_seconds)).isoformat(timespec="seconds"),
                            os.urandom(16).hex(), synthesize)
    try:
        signature, _ = crypto.sign(pem, _canonical(request.document()))
    except crypto.InvalidSigningKey as exc:
        raise IaeError(f"{private_key}: {exc}") from None
    return request.serialize(signature)


# -- grants and the audited restore ----------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """What an authorised request may restore (positions and counts, no values); made only by
    :meth:`AccessControl.authorize`, after its audit entry was written."""

    encoded: str
    principal: str
    dataset: str
    columns: tuple[int, ...] | None
    """Source column positions; None: every column."""
    located: dict[int, dict[int, np.ndarray]] | None
    """{part: {batch: rows}}; None: every row."""
    rows: int
    audit_seq: int
    nonce: str
    synthesize: bool = False
    """Synthetic records (``rows`` of them) instead of a restore."""
    manifest_sha256: str = ""
    """The signed manifest the grant was checked against: the restore refuses any other."""


class AccessControl:
    """The policy, the principals and the audit log of a workspace, and the authorised restore."""

    def __init__(self, workspace: Workspace, keyring: Keyring) -> None:
        self.workspace = workspace
        self.keyring = keyring
        self.audit = AuditLog(workspace.audit_log, workspace.keys / "audit.checkpoint", keyring)

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
        policy.principals[name] = Principal(name, role, public.hex(), _now().isoformat(timespec="seconds"))
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

    # -- authorising ---------------------------------------------------------------------------------

    def authorize(self, encoded: str | Path, request_file: bytes, now: datetime.datetime | None = None) -> Grant:
        """Check a request file against the policy and the dataset, and write its audit entry.

        Raises :class:`AccessRefused` (after recording the refusal) for anything that is not allowed.
        """
        self.recover_interrupted()
        facts: dict[str, Any] = {"principal": None, "dataset": None,
                                 "request_sha256": hashlib.sha256(request_file).hexdigest()}
        try:
            return self._authorize(Path(encoded), request_file, now or _now(), facts)
        except (AccessRefused, NonceUsedError) as exc:
            self._record_refusal(facts, str(exc))
            if isinstance(exc, NonceUsedError):
                raise AccessRefused(str(exc)) from None
            raise

    def _record_refusal(self, facts: dict[str, Any], reason: str) -> None:
        try:
            self.audit.append("decode", "refused", **facts, reason=reason)
        except AuditError as exc:
            raise AccessRefused(f"{reason} (and the refusal could not be recorded: {exc})") from None

    def _authorize(self, encoded: Path, request_file: bytes, now: datetime.datetime, facts: dict[str, Any]) -> Grant:
        try:
            request, signature = DecodeRequest.parse(request_file)
        except ValueError:
            raise AccessRefused("the request file is not a valid decode request: damaged or altered") from None
        facts.update(principal=request.principal, dataset=request.dataset, purpose=request.purpose,
                     nonce=request.nonce, columns="*" if request.columns is None else list(request.columns),
                     scope="whole" if request.whole else "synthetic" if request.synthesize else
                     "rows" if request.rows is not None else "token")
        if request.where_token is not None:
            facts.update(token_column=request.where_token[0], token=request.where_token[1])
        policy = self.policy()
        principal = policy.principals.get(request.principal)
        if principal is None:
            raise AccessRefused(f"unknown principal {request.principal!r}")
        if not crypto.signature_matches(bytes.fromhex(principal.public_key), signature,
                                        _canonical(request.document())):
            raise AccessRefused(f"the request's signature does not verify with {request.principal}'s key: "
                                "altered, or signed with another key")
        if now >= datetime.datetime.fromisoformat(request.expires):
            raise AccessRefused(f"the request expired at {request.expires}")
        created = datetime.datetime.fromisoformat(request.created)
        if created > now + CLOCK_SKEW:
            raise AccessRefused(f"the request was made at {request.created}, in the future: check the clock of "
                                "the machine that made it")
        role = policy.roles.get(principal.role)
        if role is None:
            raise AccessRefused(f"principal {request.principal!r} has role {principal.role!r}, which the policy "
                                "does not define")
        if request.lifetime > datetime.timedelta(seconds=role.lifetime_cap):
            raise AccessRefused(f"the request is valid for {request.lifetime}; role {principal.role!r} allows "
                                f"requests of at most {datetime.timedelta(seconds=role.lifetime_cap)}: make a "
                                "shorter one (request --ttl)")
        dataset = EncodedDataset(encoded)
        manifest = self._manifest(dataset, request)
        if not role.allows_dataset(manifest.dataset):
            raise AccessRefused(f"role {principal.role!r} may not restore dataset {manifest.dataset!r}")
        columns = self._columns(dataset, manifest, request, role, principal.role)
        if request.whole and not role.whole_dataset:
            raise AccessRefused(f"role {principal.role!r} may not restore a whole dataset; name rows or a token")
        located, rows = (None, request.synthesize) if request.synthesize else self._rows(dataset, manifest, request)
        facts["rows"] = rows
        if rows == 0:
            raise AccessRefused("no row matches the request")
        if role.max_rows is not None and rows > role.max_rows:
            raise AccessRefused(f"the request covers {rows} rows; role {principal.role!r} may restore at most "
                                f"{role.max_rows} per request")
        for record in manifest.parts:
            if located is None or record.part in located:
                try:
                    dataset.verify_part(record)
                except IaeError as exc:
                    raise AccessRefused(str(exc)) from None
        # no grant of this request can be older than its creation (allowing for the clocks' skew)
        entry = self.audit.grant_once(request.nonce, since=created - 2 * CLOCK_SKEW,
                                      **{k: v for k, v in facts.items() if k != "nonce"})
        self._hold(entry["seq"])
        return Grant(str(encoded), request.principal, manifest.dataset, columns, located, rows, entry["seq"],
                     request.nonce, request.synthesize is not None, request.manifest_sha256)

    def _manifest(self, dataset: EncodedDataset, request: DecodeRequest) -> Manifest:
        try:
            manifest = dataset.read_manifest(self.keyring)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None
        if hashlib.sha256(manifest.body()).hexdigest() != request.manifest_sha256 or manifest.dataset != request.dataset:
            raise AccessRefused(f"the request names another dataset, or {dataset.folder} changed since the request "
                                "was made: make a new request")
        return manifest

    @staticmethod
    def _columns(dataset: EncodedDataset, manifest: Manifest, request: DecodeRequest, role: AccessRole,
                 role_name: str) -> tuple[int, ...] | None:
        try:
            names = dataset.source_columns(manifest)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None
        wanted = names if request.columns is None else list(request.columns)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise AccessRefused(f"dataset {manifest.dataset!r} has no column(s) {', '.join(map(repr, unknown))}")
        denied = [c for c in dict.fromkeys(wanted) if not role.allows_column(c)]
        if denied:
            raise AccessRefused(f"role {role_name!r} may not restore column(s) {', '.join(map(repr, denied))}"
                                + (" (the request asks for every column)" if request.columns is None else ""))
        if request.columns is None:
            return None
        return tuple(i for i, name in enumerate(names) if name in set(request.columns))

    def _rows(self, dataset: EncodedDataset, manifest: Manifest, request: DecodeRequest) -> tuple[Any, int]:
        try:
            if request.whole:
                return None, sum(p.rows for p in manifest.parts)
            ids = np.asarray(request.rows, dtype=np.int64) if request.rows is not None else \
                dataset.token_row_ids(manifest, *request.where_token)
            located = dataset.locate(manifest, ids, self.keyring)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None
        except OverflowError:
            raise AccessRefused("a row id is out of range") from None
        return located, sum(len(r) for groups in located.values() for r in groups.values())

    # -- restoring -----------------------------------------------------------------------------------

    def restore(self, grant: Grant, out: Path, on_rows: Callable[[int, int], None] | None = None) -> int:
        """Open the model and the vault and restore what ``grant`` covers to ``out`` (owner-only).

        A whole dataset with every column restores part by part with each part's content checked
        against its source (``out`` a .parquet file for one part, else a folder); anything else
        goes to one Parquet file. A failure is recorded in the audit log and leaves no output; so
        does a restore whose outcome cannot be recorded. While it runs, a marker under
        ``audit/running/`` is held locked: if the process dies, the next decode records the grant
        as interrupted and removes the temporary output (:meth:`recover_interrupted`).
        """
        dataset = EncodedDataset(grant.encoded)
        marker = self._hold(grant.audit_seq, out)
        try:
            try:
                manifest = dataset.read_manifest(self.keyring)
                if hashlib.sha256(manifest.body()).hexdigest() != grant.manifest_sha256:
                    # e.g. a scheduled encode committed a part in between: the grant covers what was checked
                    raise IaeError(f"{dataset.folder} changed between the authorisation and the restore: "
                                   "make a new request")
                loaded = self.workspace.models.load(f"{manifest.model}:v{manifest.model_version}", self.keyring)
                if grant.synthesize:
                    rows = self._synthesize(dataset, manifest, loaded, grant.rows, out, on_rows)
                elif grant.located is None and grant.columns is None:
                    rows = dataset.decode_all(loaded.model, self.keyring, out, on_rows)
                else:
                    if out.suffix != ".parquet":
                        raise IaeError(f"{out}: a restore of some rows or columns goes to one .parquet file")
                    rows = dataset.decode_rows(manifest, loaded.model, self.keyring, out, grant.located,
                                               None if grant.columns is None else list(grant.columns), on_rows)
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
                for path in ([out, out.with_name(out.name + ".fidelity.json")] if grant.synthesize else
                             [out] if out.suffix == ".parquet" else dataset.restored_paths(manifest, out, self.keyring)):
                    path.unlink(missing_ok=True)
                raise
        finally:
            self._release(grant.audit_seq, marker)
        return rows

    # -- interrupted restores ------------------------------------------------------------------------

    @property
    def _running(self) -> Path:
        return self.workspace.audit_log.parent / "running"

    def _hold(self, seq: int, out: Path | None = None) -> int | None:
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
            os.pwrite(fd, _canonical({"out": str(Path(out).absolute())}), 0)
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

    def _synthesize(self, dataset: EncodedDataset, manifest: Manifest, loaded, rows: int, out: Path,
                    on_rows: Callable[[int, int], None] | None, reference_rows: int = 50_000, seed: int | None = None) -> int:
        """Sample ``rows`` synthetic records from the dataset's model; drop (and replace) any whose
        feature values equal a real record's; write them to ``out`` and a fidelity report
        (aggregates only) beside it as ``out``.fidelity.json."""
        import pyarrow as pa

        from iae_privacy.analysts import synthesize as synth
        from iae_privacy.dataset.store import write_restored

        if out.suffix != ".parquet":
            raise IaeError(f"{out}: synthetic records go to one .parquet file")
        model, training = loaded.model, loaded.training
        rng = np.random.default_rng(seed)
        columns = synth.feature_columns(model)
        codes = synth.sample_codes(model, training.get("latent_mean", []), training.get("latent_cov", []), rows, rng)
        reference: list[np.ndarray] = []

        def real_batches():
            for record in sorted(manifest.parts, key=lambda p: p.part):
                for batch in dataset.decode_part(record, model, self.keyring, manifest.dataset):
                    if sum(len(r) for r in reference) < reference_rows:
                        reference.append(model.codec.encode(batch).features)
                    yield batch

        dropped = 0
        for attempt in range(3):
            table = pa.Table.from_batches([synth.records_from_codes(model, codes)])
            hits = synth.matching_rows(table, real_batches(), columns)
            if not len(hits):
                break
            dropped += len(hits)
            keep = np.setdiff1d(np.arange(len(codes)), hits)
            codes = np.concatenate([codes[keep], synth.sample_codes(model, training["latent_mean"],
                                                                     training["latent_cov"], len(hits), rng)])
            reference.clear()
        else:
            raise IaeError(f"synthetic records kept equalling real ones after {dropped} replacements; refusing")
        quality = synth.fidelity(model, codes, np.concatenate(reference)[:reference_rows])
        write_restored(out, iter(table.to_batches()))
        report = {"rows": rows, "replaced_for_equalling_a_real_record": dropped,
                  "real_records_compared": sum(p.rows for p in manifest.parts),
                  "feature_columns": columns, "null_columns": [n for n in model.codec.schema.names if n not in columns],
                  "total_variation_distance": quality.columns,
                  "correlation_max_difference": quality.correlation_max_difference,
                  "correlation_mean_difference": quality.correlation_mean_difference}
        write_private(out.with_name(out.name + ".fidelity.json"), json.dumps(report, indent=1).encode())
        if on_rows is not None:
            on_rows(rows, rows)
        return rows
