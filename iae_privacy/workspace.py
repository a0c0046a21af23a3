"""A workspace: the folder where keys/, models/ (and later the audit log) live.

``--home DIR`` or ``IAE_HOME``; the current folder by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from iae_privacy.keyring import Keyring
from iae_privacy.registry import ModelRegistry

__all__ = ["Workspace", "ENV_HOME"]

ENV_HOME = "IAE_HOME"


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def at(cls, home: str | Path | None = None) -> Workspace:
        return cls(Path(home or os.environ.get(ENV_HOME) or ".").resolve())

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self.home / "models")

    def keyring(self, passphrase: Callable[[], str] | None = None) -> Keyring:
        return Keyring.open(self.keys, passphrase)
