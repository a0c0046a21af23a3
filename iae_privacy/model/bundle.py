"""Sealed model bundles: a trained model is one file, and it only ever exists on disk sealed.

A bundle is a sealed file (:mod:`iae_privacy.keys.sealed`) whose header names the model, its version
and when it was sealed, whose data key is wrapped by the keyring's ``weights`` key with associated
data binding model name, version and key version, and whose one segment is a safetensors file: the
network's integer weights as tensors, the codec profile and training report as metadata. No
pickle anywhere. Opening authenticates everything before parsing anything.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from iae_privacy.keys.keyring import Keyring, Purpose
from iae_privacy.keys.sealed import (
    SealedFileError,
    open_sealed_file,
    read_sealed_header,
    rewrap_sealed,
    write_sealed,
)

if TYPE_CHECKING:  # torch loads only where weights are sealed or opened: listings and keys need none
    import torch

__all__ = ["BundleError", "BundleHeader", "SealedModel", "seal_bundle", "open_bundle", "bundle_tensors", "read_header",
           "rewrap_bundle", "MAGIC"]

MAGIC = b"IAE-BUNDLE\x01"
WHAT = "model bundle"
BundleError = SealedFileError


@dataclass(frozen=True)
class BundleHeader:
    model: str
    model_version: int
    created: str
    key_version: int


@dataclass
class SealedModel:
    """What a bundle carries: tensors (weights) and string metadata (profile, facts, training)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    payload: bytes | None = None
    """The authenticated safetensors bytes, where the tensors were not read yet."""


def _key_aad(doc: dict) -> bytes:
    return f"iae-privacy/bundle-key|{doc['model']}|v{doc['model_version']}".encode()


def _header(doc: dict, key_version: int, path: Path) -> BundleHeader:
    try:
        if doc["kind"] != "model":
            raise ValueError(doc["kind"])
        return BundleHeader(str(doc["model"]), int(doc["model_version"]), str(doc["created"]), key_version)
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path} has a damaged header") from None


def seal_bundle(path: Path, model: str, version: int, created: str, sealed: SealedModel, keyring: Keyring) -> None:
    """Seal ``sealed`` into ``path`` (written atomically, owner-only)."""
    from safetensors.torch import save as save_safetensors

    payload = save_safetensors({k: v.contiguous() for k, v in sealed.tensors.items()}, metadata=sealed.metadata)
    doc = {"kind": "model", "model": model, "model_version": version, "created": created}
    write_sealed(path, MAGIC, doc, Purpose.WEIGHTS, _key_aad(doc), [payload], keyring)


def read_header(path: Path) -> BundleHeader:
    """The bundle's header, without opening it (for listings and rotation)."""
    doc, key_version = read_sealed_header(path, MAGIC, WHAT)
    return _header(doc, key_version, path)


def open_bundle(path: Path, keyring: Keyring, expect: tuple[str, int] | None = None,
                with_tensors: bool = True) -> tuple[BundleHeader, SealedModel]:
    """Open and authenticate a bundle; ``expect`` is the (model, version) it must claim to be.
    ``with_tensors=False``: no torch import; the tensors are left empty and the authenticated
    payload kept for :func:`bundle_tensors`."""
    def check(doc: dict) -> None:
        header = _header(doc, 0, path)
        if expect is not None and (header.model, header.model_version) != expect:
            raise BundleError(f"{path} holds model {header.model!r} v{header.model_version}, "
                              f"not {expect[0]!r} v{expect[1]}: moved or swapped")

    doc, key_version, segments = open_sealed_file(path, MAGIC, Purpose.WEIGHTS, _key_aad, keyring, WHAT, check)
    payload = b"".join(segments)
    header = _header(doc, key_version, path)
    try:
        metadata = _safetensors_metadata(payload)
    except (ValueError, struct.error) as exc:
        raise BundleError(f"{WHAT} {path} authenticated but its payload is unreadable ({type(exc).__name__})") from None
    if with_tensors:
        return header, SealedModel(bundle_tensors(payload, path), metadata)
    return header, SealedModel({}, metadata, payload)


def bundle_tensors(payload: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an authenticated bundle's payload (imports torch)."""
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(payload)
    except (SafetensorError, ValueError, struct.error) as exc:
        raise BundleError(f"{WHAT} {path} authenticated but its payload is unreadable ({type(exc).__name__})") from None


def _safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header), from bytes in memory."""
    (length,) = struct.unpack_from("<Q", payload, 0)
    return json.loads(payload[8 : 8 + length]).get("__metadata__", {}) or {}


def rewrap_bundle(path: Path, keyring: Keyring) -> bool:
    """Re-seal the bundle's data key under the keyring's current version; the payload is untouched."""
    return rewrap_sealed(path, MAGIC, Purpose.WEIGHTS, _key_aad, keyring, WHAT)
