"""A workspace: the folder where keys/, models/, principals/ and audit/ live.

``--home DIR`` or ``IAE_HOME``; the current folder by default. ``datasets.json`` lists the encoded
dataset folders made with it, wherever they are, so that key rotation reaches their vault parts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from iae_privacy.files import write_private
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
    def audit_log(self) -> Path:
        """The audit log (its checkpoint is kept apart, under keys/)."""
        return self.home / "audit" / "audit.log"

    @property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self.home / "models")

    def keyring(self, passphrase: Callable[[], str] | None = None) -> Keyring:
        return Keyring.open(self.keys, passphrase)

    @property
    def _datasets_file(self) -> Path:
        return self.home / "datasets.json"

    def datasets(self) -> list[Path]:
        """Encoded dataset folders made with this workspace (that still exist)."""
        if not self._datasets_file.exists():
            return []
        return [Path(p) for p in json.loads(self._datasets_file.read_text()) if Path(p).exists()]

    def register_dataset(self, folder: str | Path) -> None:
        folder = str(Path(folder).resolve())
        known = [str(p) for p in self.datasets()]
        if folder not in known:
            write_private(self._datasets_file, json.dumps(sorted(known + [folder]), indent=1).encode())
