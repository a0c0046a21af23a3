"""The model registry: sealed bundles at ``models/NAME/vN.iae`` under the workspace.

Saving turns a trained :class:`~iae_privacy.model.pipeline.Model` into a sealed bundle (network weights as
safetensors tensors; codec profile, architecture and training report as metadata); loading opens
and authenticates the bundle and rebuilds the model with its transform key from the keyring.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from iae_privacy.codec import TableCodec
from iae_privacy.documents import utc_now
from iae_privacy.errors import IaeError
from iae_privacy.keys.keyring import Keyring, Purpose
from iae_privacy.model.bundle import (
    BundleHeader,
    SealedModel,
    bundle_tensors,
    open_bundle,
    read_header,
    rewrap_bundle,
    seal_bundle,
)

if TYPE_CHECKING:  # torch loads only where a model is saved or loaded, not for listings or keys
    from iae_privacy.model.pipeline import Model
    from iae_privacy.network import ExactINN
    from iae_privacy.network.train import TrainReport

__all__ = ["ModelRegistry", "LoadedModel", "transform_key"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SPEC = re.compile(r"^(?P<name>[^:]+)(?::v(?P<version>\d+))?$")
SUFFIX = ".iae"


def transform_key(keyring: Keyring, model: str, version: int) -> bytes:
    """The key of one model version's permutations and mixings (from the root: survives rotation)."""
    return keyring.subkey(Purpose.TRANSFORM, context=f"{model}/v{version}")


@dataclass
class LoadedModel:
    model: Model
    header: BundleHeader
    training: dict[str, Any]


class DeferredNetwork:
    """A sealed model's network, built (and torch imported) on its first use: a restore from
    entropy-coded vault segments runs the codec alone and never touches it. Otherwise it stands
    for the :class:`~iae_privacy.network.ExactINN` it builds."""

    def __init__(self, build: Callable[[], ExactINN]) -> None:
        self._build: Callable[[], ExactINN] | None = build
        self._network: ExactINN | None = None

    def __getattr__(self, name: str) -> Any:  # only for what this object lacks: the network's own
        if name.startswith("__") or name in ("_build", "_network"):
            raise AttributeError(name)
        if self._network is None:
            self._network = self._build()
            self._build = None  # the weights are not kept twice
        return getattr(self._network, name)


class ModelRegistry:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.match(name):
            raise IaeError(f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
                           "(up to 64, starting with a letter or digit)")
        return name

    def path(self, name: str, version: int) -> Path:
        return self.folder / self.check_name(name) / f"v{version}{SUFFIX}"

    def versions(self, name: str) -> list[int]:
        folder = self.folder / self.check_name(name)
        found = (re.fullmatch(rf"v(\d+){re.escape(SUFFIX)}", p.name) for p in folder.glob(f"v*{SUFFIX}"))
        return sorted(int(m.group(1)) for m in found if m)

    def next_version(self, name: str) -> int:
        return max(self.versions(name), default=0) + 1

    def resolve(self, spec: str) -> tuple[str, int]:
        """``NAME`` (latest version) or ``NAME:vN``."""
        match = _SPEC.match(spec)
        if not match:
            raise IaeError(f"model {spec!r}: expected NAME or NAME:vN")
        name = self.check_name(match.group("name"))
        versions = self.versions(name)
        if not versions:
            raise IaeError(f"no model named {name!r} in {self.folder}; train one with: iae-privacy train")
        version = int(match.group("version")) if match.group("version") else versions[-1]
        if version not in versions:
            raise IaeError(f"model {name!r} has no version {version} (it has {', '.join(f'v{v}' for v in versions)})")
        return name, version

    def bundles(self) -> list[Path]:
        return sorted(self.folder.glob(f"*/v*{SUFFIX}"))

    def save(self, model: Model, name: str, version: int, keyring: Keyring, report: TrainReport) -> Path:
        path = self.path(name, version)
        if path.exists():
            raise IaeError(f"{path} already exists; model versions are never overwritten")
        tensors, facts = model.network.quantized_state()
        training = asdict(report)
        metadata = {
            "format": "iae-privacy/model/1",
            "codec_profile": model.codec.to_json(),
            "network": json.dumps(facts),
            "training": json.dumps(training),
            **({"protection": json.dumps(model.protection.to_dict())} if model.protection is not None else {}),
        }
        created = utc_now().isoformat(timespec="seconds")
        seal_bundle(path, name, version, created, SealedModel(tensors, metadata), keyring)
        return path

    def load(self, spec: str, keyring: Keyring) -> LoadedModel:
        name, version = self.resolve(spec)
        path = self.path(name, version)
        header, sealed = open_bundle(path, keyring, expect=(name, version), with_tensors=False)
        meta = sealed.metadata
        if meta.get("format") != "iae-privacy/model/1":
            raise IaeError(f"model {name} v{version} has an unknown format {meta.get('format')!r}")
        codec = TableCodec.from_json(meta["codec_profile"])
        from iae_privacy.model.pipeline import Model

        facts, key = json.loads(meta["network"]), transform_key(keyring, name, version)

        def build() -> ExactINN:
            from iae_privacy.network import ExactINN

            return ExactINN.from_quantized_state(bundle_tensors(sealed.payload, path), facts, key)

        network = DeferredNetwork(build)
        protection = None
        if "protection" in meta:
            from iae_privacy.model.protection import Protection

            protection = Protection.from_dict(json.loads(meta["protection"]))
        return LoadedModel(Model(codec, network, protection), header, json.loads(meta["training"]))

    def headers(self) -> list[tuple[Path, BundleHeader]]:
        return [(p, read_header(p)) for p in self.bundles()]

    def rewrap_all(self, keyring: Keyring) -> int:
        """Re-wrap every bundle's data key under the current key version; returns how many changed."""
        return sum(rewrap_bundle(p, keyring) for p in self.bundles())
