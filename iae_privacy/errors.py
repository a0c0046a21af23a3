"""The errors iae-privacy raises for problems a user can fix.

Every message names the file, column or key at fault and never carries a data value or key
material: these messages end up in logs and Prefect's database.
"""

from __future__ import annotations

import traceback

__all__ = ["IaeError", "ConfigError", "SchemaDriftError", "CodecError", "ProfileError", "StoreError",
           "NetworkError", "AccessRefused", "AuditError", "NonceUsedError", "QueryError", "KeyringError",
           "WrongKeyError", "RetiredKeyError", "SealedFileError", "ServerError", "InternalError", "withheld",
           "DEBUG"]


class IaeError(Exception):
    """Base class: a problem the user can act on (the CLI prints it without a traceback)."""


class ConfigError(IaeError):
    """A dataset config file (TOML) is malformed or names something that does not exist."""


class SchemaDriftError(IaeError):
    """A table's schema differs from the one the codec was fitted on."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}schema differs from the fitted profile; nothing was written:\n  - "
            + "\n  - ".join(problems)
        )


class CodecError(IaeError):
    """Encoded data cannot be decoded exactly (corrupt, truncated or from another profile)."""


class ProfileError(IaeError):
    """A serialised codec profile is unreadable or of an unknown format version."""


class StoreError(IaeError):
    """An encoded dataset is inconsistent, tampered with, or not one."""


class NetworkError(IaeError, ValueError):
    """Inputs the network cannot take (out of range, wrong shape), or a malformed model."""


class AccessRefused(IaeError):
    """A decode request is refused; the reason is in the message and in the audit log."""


class AuditError(IaeError):
    """The audit log cannot be written, or fails its checks: nothing that needs an entry may run."""


class NonceUsedError(IaeError):
    """A decode request's nonce was already granted once: the request is a replay."""


class QueryError(IaeError):
    """A dataset cannot be registered, or the SQL failed."""


class KeyringError(IaeError):
    """The keyring is missing, unreadable, exposed, or cannot give the key asked for."""


class WrongKeyError(KeyringError):
    """A sealed object does not open with the keyring's key: another keyring, or it was altered."""


class RetiredKeyError(KeyringError):
    """A sealed object needs a key version that was retired."""


class SealedFileError(IaeError):
    """A sealed file is not one, is truncated or damaged, or was altered."""


class ServerError(IaeError):
    """The workspace's Prefect server cannot be started, reached or stopped."""


class InternalError(IaeError):
    """A failure that is not one of ours (a bug, or an error inside a library). Its original message
    is withheld, since library errors quote the values they choke on (a ``UnicodeDecodeError``
    carries the bytes of the cell); this names only its type and where it was raised."""


def withheld(exc: BaseException, doing: str) -> InternalError:
    """An :class:`InternalError` for ``exc``, raised while ``doing`` something: its type and the
    innermost place in iae-privacy's own code, nothing of its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/iae_privacy/" in f.filename or "/flows/" in f.filename] or frames
    where = f" at {ours[-1].filename.rsplit('/', 1)[-1]}:{ours[-1].lineno} in {ours[-1].name}" if ours else ""
    return InternalError(f"{doing} failed: {type(exc).__name__}{where} (its message is withheld, as it may "
                         f"quote data values; with {DEBUG}=1 it is let through, to logs and Prefect too)")


DEBUG = "IAE_DEBUG"
"""Set to 1 to let the original of an :class:`InternalError` through (for debugging on test data)."""
