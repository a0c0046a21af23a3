"""The keyring: every secret in iae-privacy comes from here, and key material goes nowhere else.

Layout of the ``keys/`` folder (owner-only permissions, refused otherwise, as ssh does)::

    keys/keyring.json        versions, their status, the current one (no secrets)
    keys/master-v1.key       a master key version: 32 random bytes, or passphrase-wrapped (scrypt)
    keys/root.sealed         the root secret, sealed under the current master version

Two layers, so that rotation changes what must change and nothing else:

* **master key versions** only wrap: the data keys of sealed model bundles and vault parts, and the
  root secret. ``rotate`` adds a version and re-wraps those under it; ``retire`` deletes an old one.
* the **root secret** (random, made once) gives the subkeys that must outlive rotation: identifier
  tokens (so joins keep working), each model's transform, manifest signatures, the audit chain.

Subkeys are HKDF-SHA256 under fixed labels, all defined in :class:`Purpose`. A deployment that
injects secrets sets ``IAE_MASTER_KEY_V<n>`` (base64 of 32 bytes) instead of keeping key files.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from iae_privacy.documents import parse_json, utc_now
from iae_privacy.errors import KeyringError, RetiredKeyError, WrongKeyError
from iae_privacy.files import write_private
from iae_privacy.keys import crypto

__all__ = ["Purpose", "Keyring", "KeyringError", "check_private", "KeyVersion", "WrongKeyError", "RetiredKeyError",
           "ENV_MASTER_KEY", "ENV_MASTER_KEY_PREFIX", "ENV_PASSPHRASE", "hold_passphrase", "release_passphrase",
           "env_passphrase"]

ENV_MASTER_KEY = "IAE_MASTER_KEY_V{version}"
ENV_MASTER_KEY_PREFIX = ENV_MASTER_KEY.partition("{")[0]
"""What every master-key variable's name starts with (processes the workspace starts get none)."""
ENV_PASSPHRASE = "IAE_PASSPHRASE"
_held_passphrase: list[str] = []


def hold_passphrase(value: str | None) -> None:
    """Keep the passphrase (taken out of the environment by the CLI) in this process only, so that
    processes started from it (Prefect's temporary server, tools) do not inherit it. None keeps
    the one held."""
    if value:
        _held_passphrase[:] = [value]


def release_passphrase() -> None:
    """Forget the passphrase this process holds (the flow worker, once a command's run ends)."""
    _held_passphrase.clear()


def env_passphrase() -> str | None:
    """The passphrase from ``IAE_PASSPHRASE``, or the one this process holds."""
    return os.environ.get(ENV_PASSPHRASE) or (_held_passphrase[0] if _held_passphrase else None)
FORMAT = "iae-privacy/keyring"


class Purpose(str, enum.Enum):
    """What a subkey is for. The label of each is fixed forever: changing it changes the keys."""

    WEIGHTS = "weights"
    """Wraps the data keys of sealed model bundles (follows the master version)."""
    VAULT = "vault"
    """Wraps the data keys of vault parts (follows the master version)."""
    TOKENS = "tokens"
    """Keyed identifier tokens (from the root: stable across rotation)."""
    TRANSFORM = "transform"
    """Each model's keyed permutations and mixings (from the root)."""
    MANIFEST = "manifest"
    """Signatures of encoded-dataset manifests (from the root)."""
    AUDIT = "audit"
    """The audit log's MAC chain (from the root)."""
    POLICY = "policy"
    """The access policy's MAC: a policy edited by hand, not through iae-privacy, is refused."""

    @property
    def label(self) -> bytes:
        return f"iae-privacy/v1/subkey/{self.value}".encode()

    @property
    def versioned(self) -> bool:
        return self in (Purpose.WEIGHTS, Purpose.VAULT)


_ROOT_LABEL = b"iae-privacy/v1/root-wrap"


@dataclass
class KeyVersion:
    number: int
    status: str  # "active" or "retired"
    created: str
    passphrase: bool
    retired: str | None = None


def _stamp() -> str:
    return utc_now().isoformat(timespec="seconds")


def check_private(path: Path, folder: bool, what: str | None = None) -> None:
    """Refuse a key file or folder that group or others can reach, saying how to fix it."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        fix = "700" if folder else "600"
        what = what or ("keys folder" if folder else "key file")
        raise KeyringError(
            f"{what} {path} is accessible by group or others (mode {mode:04o}); "
            f"iae-privacy refuses exposed keys. Fix with: chmod {fix} {path}"
        )


class Keyring:
    """An opened keyring. Build with :meth:`init` or :meth:`open`; never prints key material."""

    def __init__(self, folder: Path, versions: list[KeyVersion], current: int,
                 masters: dict[int, bytes], root: bytes, audit_started: str | None = None) -> None:
        self.folder = folder
        self.versions = versions
        self.current = current
        self.audit_started = audit_started
        """When this workspace's audit log was started (None: never): a log deleted with its
        checkpoint is then caught, not taken for a new workspace."""
        self.__masters = masters
        self.__root = root

    def __repr__(self) -> str:
        return f"Keyring({str(self.folder)!r}, current=v{self.current}, versions={len(self.versions)})"

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def init(cls, folder: str | Path, passphrase: str | None = None) -> Keyring:
        """Create a keyring with master key version 1 and a root secret."""
        folder = Path(folder)
        if (folder / "keyring.json").exists():
            raise KeyringError(f"{folder} already holds a keyring; use 'keys rotate' for a new key version")
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        master = cls._master_from_env(1)
        wrapped = master is None and passphrase is not None
        if master is None:
            master = crypto.random_key()
            write_private(folder / "master-v1.key", cls._encode_master(master, passphrase))
        version = KeyVersion(1, "active", _stamp(), wrapped)
        keyring = cls(folder, [version], 1, {1: master}, crypto.random_key())
        keyring._write_root()
        keyring._write_state()
        return keyring

    @classmethod
    def open(cls, folder: str | Path, passphrase: Callable[[], str] | None = None) -> Keyring:
        """Open the keyring in ``folder``; ``passphrase`` is asked only if a key is wrapped."""
        folder = Path(folder)
        state_path = folder / "keyring.json"
        if not state_path.exists():
            raise KeyringError(f"no keyring in {folder}; create one with: iae-privacy keys init")
        check_private(folder, folder=True)
        try:
            state = parse_json(state_path.read_bytes())
            if state.get("format") != FORMAT:
                raise ValueError("format")
            versions = [KeyVersion(**v) for v in state["versions"]]
            current = int(state["current"])
            if any(type(v.number) is not int or v.status not in ("active", "retired") for v in versions) \
                    or current not in {v.number for v in versions if v.status == "active"}:
                raise ValueError("versions")
            audit_started = state.get("audit_started")
            if audit_started is not None and not isinstance(audit_started, str):
                raise ValueError("audit_started")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyringError(f"{state_path} is damaged or not a keyring file") from None
        masters = {}
        asked: list[str] = []

        def ask() -> str:
            if not asked:
                value = env_passphrase() or (passphrase() if passphrase else None)
                if not value:
                    raise KeyringError(f"the master key is passphrase-protected; set {ENV_PASSPHRASE} "
                                       "or run interactively")
                asked.append(value)
            return asked[0]

        for v in versions:
            if v.status != "active":
                continue
            key = cls._master_from_env(v.number)
            if key is None:
                path = folder / f"master-v{v.number}.key"
                if not path.exists():
                    raise KeyringError(f"key version {v.number} has no key file {path} and "
                                       f"{ENV_MASTER_KEY.format(version=v.number)} is not set")
                check_private(path, folder=False)
                key = cls._decode_master(path, path.read_bytes(), ask)
            masters[v.number] = key
        keyring = cls(folder, versions, current, masters, b"", audit_started)
        keyring.__root = keyring._read_root()
        return keyring

    @staticmethod
    def _master_from_env(version: int) -> bytes | None:
        value = os.environ.get(ENV_MASTER_KEY.format(version=version))
        if value is None:
            return None
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError:
            key = b""
        if len(key) != crypto.KEY_BYTES:
            raise KeyringError(f"{ENV_MASTER_KEY.format(version=version)} must be base64 of "
                               f"{crypto.KEY_BYTES} bytes")
        return key

    @staticmethod
    def _encode_master(key: bytes, passphrase: str | None) -> bytes:
        if passphrase is None:
            return key
        salt = os.urandom(16)
        kek = crypto.passphrase_key(passphrase, salt)
        doc = {"kdf": "scrypt", "n": crypto.SCRYPT_N, "r": crypto.SCRYPT_R, "p": crypto.SCRYPT_P,
               "salt": base64.b64encode(salt).decode(),
               "sealed": base64.b64encode(crypto.seal(kek, key, b"iae-privacy/master")).decode()}
        return json.dumps(doc).encode()

    @staticmethod
    def _decode_master(path: Path, data: bytes, ask: Callable[[], str]) -> bytes:
        if len(data) == crypto.KEY_BYTES:
            return data
        try:
            doc = parse_json(data)
            salt = base64.b64decode(doc["salt"])
            sealed = base64.b64decode(doc["sealed"])
            params = (doc["n"], doc["r"], doc["p"])
        except (ValueError, KeyError, TypeError):
            raise KeyringError(f"key file {path} is damaged") from None
        try:
            return crypto.open_sealed(crypto.passphrase_key(ask(), salt, *params), sealed, b"iae-privacy/master")
        except crypto.AuthenticationFailed:
            raise KeyringError(f"wrong passphrase for {path}") from None

    # -- the root secret and the state file ------------------------------------------------------

    def _root_aad(self, version: int) -> bytes:
        return _ROOT_LABEL + f"/v{version}".encode()

    def _write_root(self) -> None:
        kek = crypto.derive_key(self.__masters[self.current], _ROOT_LABEL)
        sealed = crypto.seal(kek, self.__root, self._root_aad(self.current))
        doc = {"key_version": self.current, "sealed": base64.b64encode(sealed).decode()}
        write_private(self.folder / "root.sealed", json.dumps(doc).encode())

    def _read_root(self) -> bytes:
        path = self.folder / "root.sealed"
        try:
            doc = parse_json(path.read_bytes())
            version, sealed = int(doc["key_version"]), base64.b64decode(doc["sealed"])
        except FileNotFoundError:
            raise KeyringError(f"{path} is missing: the keyring is incomplete") from None
        except (ValueError, KeyError, TypeError):
            raise KeyringError(f"{path} is damaged") from None
        kek = crypto.derive_key(self.master(version), _ROOT_LABEL)
        try:
            return crypto.open_sealed(kek, sealed, self._root_aad(version))
        except crypto.AuthenticationFailed:
            raise WrongKeyError(f"{path} does not open with key version {version}: wrong key, "
                                "or the file was altered") from None

    def _write_state(self) -> None:
        doc = {"format": FORMAT, "current": self.current, "versions": [asdict(v) for v in self.versions]}
        if self.audit_started is not None:
            doc["audit_started"] = self.audit_started
        write_private(self.folder / "keyring.json", json.dumps(doc, indent=1).encode())

    def mark_audit_started(self, when: str) -> None:
        """Record that the workspace's audit log exists from ``when`` on (see :attr:`audit_started`)."""
        self.audit_started = when
        self._write_state()

    # -- keys ------------------------------------------------------------------------------------

    def version(self, number: int) -> KeyVersion:
        for v in self.versions:
            if v.number == number:
                return v
        raise KeyringError(f"key version {number} does not exist in this keyring (wrong keyring?)")

    def master(self, number: int) -> bytes:
        if self.version(number).status == "retired":
            raise RetiredKeyError(f"key version {number} is retired")
        if number not in self.__masters:
            raise KeyringError(f"key version {number} is not loaded in this keyring")
        return self.__masters[number]

    def subkey(self, purpose: Purpose, version: int | None = None, context: str = "") -> bytes:
        """The subkey for ``purpose`` (and a context, e.g. a model name), from the root or, for
        wrapping purposes, from a master version (default: the current one)."""
        label = purpose.label + (b"/" + context.encode() if context else b"")
        if purpose.versioned:
            return crypto.derive_key(self.master(self.current if version is None else version), label)
        if version is not None:
            raise ValueError(f"{purpose.value} keys do not depend on a key version")
        return crypto.derive_key(self.__root, label)

    def wrap(self, purpose: Purpose, data_key: bytes, associated_data: bytes) -> tuple[int, bytes]:
        """Seal a data key under the current version's ``purpose`` key: (version, sealed)."""
        return self.current, crypto.seal(self.subkey(purpose), data_key, self._wrap_aad(associated_data, self.current))

    def unwrap(self, purpose: Purpose, version: int, sealed: bytes, associated_data: bytes, what: str) -> bytes:
        """Open a data key sealed by :meth:`wrap`; errors say which of retired or wrong key."""
        try:
            kek = self.subkey(purpose, version)
        except RetiredKeyError:
            raise RetiredKeyError(f"{what} was sealed with key version {version}, which is retired") from None
        except KeyringError:
            raise KeyringError(f"{what} was sealed with key version {version}, which this keyring "
                               "does not have (another keyring?)") from None
        try:
            return crypto.open_sealed(kek, sealed, self._wrap_aad(associated_data, version))
        except crypto.AuthenticationFailed:
            raise WrongKeyError(f"{what} does not open with this keyring's key version {version}: "
                                "wrong key, or it was altered") from None

    @staticmethod
    def _wrap_aad(associated_data: bytes, version: int) -> bytes:
        return associated_data + f"|key-version={version}".encode()

    # -- rotation and retirement ----------------------------------------------------------------

    def rotate(self, passphrase: str | None = None) -> int:
        """Add a master key version and make it current; re-wrap the root secret under it.

        Callers then re-wrap every sealed bundle and vault data key (``ModelRegistry.rewrap_all`` and
        ``EncodedDataset.rewrap_all``, as ``keys rotate`` does).
        """
        number = max(v.number for v in self.versions) + 1
        master = self._master_from_env(number)
        wrapped = master is None and passphrase is not None
        if master is None:
            master = crypto.random_key()
            write_private(self.folder / f"master-v{number}.key", self._encode_master(master, passphrase))
        self.__masters[number] = master
        self.versions.append(KeyVersion(number, "active", _stamp(), wrapped))
        self.current = number
        self._write_root()
        self._write_state()
        return number

    def retire(self, number: int) -> None:
        """Retire a version: its key file is deleted, and what is still sealed under it is refused."""
        version = self.version(number)
        if number == self.current:
            raise KeyringError(f"key version {number} is the current one; rotate first, then retire it")
        if version.status == "retired":
            raise KeyringError(f"key version {number} is already retired")
        version.status, version.retired = "retired", _stamp()
        self.__masters.pop(number, None)
        self._write_state()
        (self.folder / f"master-v{number}.key").unlink(missing_ok=True)
