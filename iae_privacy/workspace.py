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

from iae_privacy.documents import parse_json
from iae_privacy.errors import IaeError
from iae_privacy.files import write_private
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.registry import ModelRegistry

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

    def _registered(self) -> list[str]:
        if not self._datasets_file.exists():
            return []
        try:
            folders = parse_json(self._datasets_file.read_bytes())
            if not isinstance(folders, list) or not all(isinstance(p, str) for p in folders):
                raise ValueError("not a list of folders")
        except ValueError:
            raise IaeError(f"{self._datasets_file} is damaged (it lists the encoded datasets key rotation "
                           "reaches); restore it from a backup") from None
        return folders

    def datasets(self) -> list[Path]:
        """Encoded dataset folders made with this workspace (that still exist)."""
        return [Path(p) for p in self._registered() if Path(p).exists()]

    def missing_datasets(self) -> list[Path]:
        """Registered dataset folders that no longer exist where they were encoded."""
        return [Path(p) for p in self._registered() if not Path(p).exists()]

    def register_dataset(self, folder: str | Path) -> None:
        folder = str(Path(folder).resolve())
        known = self._registered()
        if folder not in known:
            write_private(self._datasets_file, json.dumps(sorted(known + [folder]), indent=1).encode())

    def forget_dataset(self, folder: str | Path) -> None:
        """Unregister a dataset folder that no longer exists."""
        path = Path(folder).resolve()
        known = self._registered()
        if str(path) not in known:
            raise IaeError(f"{folder} is not a registered dataset folder")
        if path.exists():
            raise IaeError(f"{folder} still exists; only a deleted dataset can be forgotten")
        write_private(self._datasets_file, json.dumps([p for p in known if p != str(path)], indent=1).encode())
