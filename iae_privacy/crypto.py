"""The only module that touches cryptographic primitives. Everything else uses these recipes.

- AEAD: AES-256-GCM (``cryptography``), 96-bit nonces, associated data always given.
- Key derivation: HKDF-SHA256 with a fixed label per purpose; scrypt for passphrases.
- Tokens: HMAC-SHA256, through the standard library's one-shot ``hmac.digest`` (OpenSSL
  underneath), which is several times faster per call than building an HMAC object.

Errors never carry key material or plaintext.
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "KEY_BYTES", "NONCE_BYTES", "AuthenticationFailed", "random_key", "derive_key", "seal", "open_sealed",
    "passphrase_key", "hmac_sha256_many", "CellCipher", "constant_time_equal",
]

KEY_BYTES = 32
NONCE_BYTES = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class AuthenticationFailed(Exception):
    """Ciphertext, nonce, associated data or key do not match: altered data or the wrong key."""


def random_key() -> bytes:
    """256 bits from the operating system's randomness."""
    return os.urandom(KEY_BYTES)


def derive_key(key: bytes, label: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of ``key`` for the purpose named by ``label``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(key)


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM with a random nonce; returns nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The inverse of :func:`seal`; :class:`AuthenticationFailed` if anything does not match."""
    if len(sealed) < NONCE_BYTES + 16:
        raise AuthenticationFailed("sealed data is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise AuthenticationFailed("authentication failed") from None


def passphrase_key(passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    """A key-encryption key from a passphrase (scrypt)."""
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def hmac_sha256_many(key: bytes, messages: list[bytes], length: int) -> bytes:
    """HMAC-SHA256 of every message, truncated to ``length`` bytes each, concatenated."""
    digest = hmac.digest
    return b"".join([digest(key, m, "sha256")[:length] for m in messages])


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class CellCipher:
    """AES-256-GCM for many small values under one key, nonce = a per-key counter.

    Each key must seal at most one sequence of cells (the caller derives a fresh key per vault
    part and column from a random data key), so counter nonces never repeat under a key.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @staticmethod
    def _nonce(index: int) -> bytes:
        return struct.pack("<Q", index) + b"\0\0\0\0"

    def seal_many(self, values: list[bytes | None], associated_data: list[bytes]) -> list[bytes | None]:
        encrypt, nonce = self._aead.encrypt, self._nonce
        return [None if v is None else encrypt(nonce(i), v, a)
                for i, (v, a) in enumerate(zip(values, associated_data))]

    def open_many(self, sealed: list[bytes | None], associated_data: list[bytes]) -> list[bytes | None]:
        decrypt, nonce = self._aead.decrypt, self._nonce
        try:
            return [None if c is None else decrypt(nonce(i), c, a)
                    for i, (c, a) in enumerate(zip(sealed, associated_data))]
        except InvalidTag:
            raise AuthenticationFailed("a vault cell failed authentication") from None
