"""The errors iae-privacy raises for problems a user can fix.

Every message names the file, column or key at fault and never carries a data value or key
material: these messages end up in logs and Prefect's database.
"""

from __future__ import annotations

import traceback

__all__ = ["IaeError", "ConfigError", "SchemaDriftError", "CodecError", "ProfileError", "InternalError", "withheld", "DEBUG"]


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
