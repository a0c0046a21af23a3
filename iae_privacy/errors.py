"""The errors iae-privacy raises for problems a user can fix.

Every message names the file, column or key at fault and never carries a data value or key
material: these messages end up in logs and Prefect's database.
"""

from __future__ import annotations

__all__ = ["IaeError", "ConfigError", "SchemaDriftError", "CodecError", "ProfileError"]


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
