"""Sealed model bundles: a trained model is one file, and it only ever exists on disk sealed.

File layout::

    b"IAE-BUNDLE" 0x01 | u32 length | model header (JSON) | u32 length | key envelope (JSON) | ciphertext

* the **model header** names the model, its version and when it was sealed; it is the associated
  data of the payload, so any change to it makes the payload fail to open;
* the **key envelope** holds the key version and the payload's random data key sealed under that
  version's weights key, with associated data binding model name, version and key version; key
  rotation rewrites only this part, never the payload;
* the **payload** is AES-256-GCM over a safetensors file: the network's integer weights as
  tensors, the codec profile and training metadata as safetensors metadata. No pickle anywhere.

Opening checks everything before parsing anything: a bundle either opens whole or not at all.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from iae_privacy import crypto
from iae_privacy.errors import IaeError
from iae_privacy.keyring import Keyring, Purpose, write_private

__all__ = ["BundleError", "BundleHeader", "SealedModel", "seal_bundle", "open_bundle", "read_header",
           "rewrap_bundle"]

MAGIC = b"IAE-BUNDLE\x01"
_U32 = struct.Struct("<I")


class BundleError(IaeError):
    """A model bundle is not one, is damaged, or was altered."""


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


def _model_header(model: str, version: int, created: str) -> bytes:
    return json.dumps({"model": model, "model_version": version, "created": created},
                      sort_keys=True, separators=(",", ":")).encode()


def _key_aad(model: str, version: int) -> bytes:
    return f"iae-privacy/bundle-key|{model}|v{version}".encode()


def _split(data: bytes, path: Path) -> tuple[bytes, bytes, bytes]:
    if not data.startswith(MAGIC):
        raise BundleError(f"{path} is not an iae-privacy model bundle")
    parts, at = [], len(MAGIC)
    for _ in range(2):
        if at + 4 > len(data):
            raise BundleError(f"{path} is truncated")
        (length,) = _U32.unpack_from(data, at)
        if at + 4 + length > len(data):
            raise BundleError(f"{path} is truncated or damaged")
        parts.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return parts[0], parts[1], data[at:]


def _envelope(key_version: int, wrapped: bytes) -> bytes:
    return json.dumps({"key_version": key_version, "wrapped_key": wrapped.hex()},
                      sort_keys=True, separators=(",", ":")).encode()


def _parse(header: bytes, envelope: bytes, path: Path) -> tuple[BundleHeader, bytes]:
    try:
        h, e = json.loads(header), json.loads(envelope)
        parsed = BundleHeader(str(h["model"]), int(h["model_version"]), str(h["created"]), int(e["key_version"]))
        wrapped = bytes.fromhex(e["wrapped_key"])
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{path} has a damaged header") from None
    # only the canonical encoding is accepted: no byte of the file may change and still open
    if header != _model_header(parsed.model, parsed.model_version, parsed.created) or \
            envelope != _envelope(parsed.key_version, wrapped):
        raise BundleError(f"{path} has a damaged header")
    return parsed, wrapped


def _assemble(header: bytes, key_version: int, wrapped: bytes, payload: bytes) -> bytes:
    envelope = _envelope(key_version, wrapped)
    return MAGIC + _U32.pack(len(header)) + header + _U32.pack(len(envelope)) + envelope + payload


def seal_bundle(path: Path, model: str, version: int, created: str, sealed: SealedModel, keyring: Keyring) -> None:
    """Seal ``sealed`` into ``path`` (written atomically, owner-only)."""
    payload = save_safetensors({k: v.contiguous() for k, v in sealed.tensors.items()}, metadata=sealed.metadata)
    data_key = crypto.random_key()
    header = _model_header(model, version, created)
    key_version, wrapped = keyring.wrap(Purpose.WEIGHTS, data_key, _key_aad(model, version))
    ciphertext = crypto.seal(data_key, payload, MAGIC + header)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, _assemble(header, key_version, wrapped, ciphertext))


def read_header(path: Path) -> BundleHeader:
    """The bundle's header, without opening it (for listings and rotation)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such model bundle") from None
    header, envelope, _ = _split(data, path)
    return _parse(header, envelope, path)[0]


def open_bundle(path: Path, keyring: Keyring, expect: tuple[str, int] | None = None) -> tuple[BundleHeader, SealedModel]:
    """Open and authenticate a bundle; ``expect`` is the (model, version) it must claim to be."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such model bundle") from None
    header_bytes, envelope, ciphertext = _split(data, path)
    header, wrapped = _parse(header_bytes, envelope, path)
    if expect is not None and (header.model, header.model_version) != expect:
        raise BundleError(f"{path} holds model {header.model!r} v{header.model_version}, "
                          f"not {expect[0]!r} v{expect[1]}: moved or swapped")
    what = f"model bundle {path}"
    data_key = keyring.unwrap(Purpose.WEIGHTS, header.key_version, wrapped,
                              _key_aad(header.model, header.model_version), what)
    try:
        payload = crypto.open_sealed(data_key, ciphertext, MAGIC + header_bytes)
    except crypto.AuthenticationFailed:
        raise BundleError(f"{what} fails authentication: its contents were altered or damaged") from None
    try:
        tensors = load_safetensors(payload)
        metadata = _safetensors_metadata(payload)
    except (SafetensorError, ValueError) as exc:
        raise BundleError(f"{what} authenticated but its payload is unreadable ({type(exc).__name__})") from None
    return header, SealedModel(tensors, metadata)


def _safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header), from bytes in memory."""
    (length,) = struct.unpack_from("<Q", payload, 0)
    return json.loads(payload[8 : 8 + length]).get("__metadata__", {}) or {}


def rewrap_bundle(path: Path, keyring: Keyring) -> bool:
    """Re-seal the bundle's data key under the keyring's current version; the payload is untouched.

    Returns False when it already is under the current version.
    """
    data = path.read_bytes()
    header_bytes, envelope, ciphertext = _split(data, path)
    header, wrapped = _parse(header_bytes, envelope, path)
    if header.key_version == keyring.current:
        return False
    aad = _key_aad(header.model, header.model_version)
    data_key = keyring.unwrap(Purpose.WEIGHTS, header.key_version, wrapped, aad, f"model bundle {path}")
    key_version, rewrapped = keyring.wrap(Purpose.WEIGHTS, data_key, aad)
    write_private(path, _assemble(header_bytes, key_version, rewrapped, ciphertext))
    return True
