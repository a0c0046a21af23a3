"""The only module that touches cryptographic primitives. Everything else uses these recipes.

- AEAD: AES-256-GCM (``cryptography``), 96-bit nonces, associated data always given.
- Key derivation: HKDF-SHA256 with a fixed label per purpose; scrypt for passphrases.
- Tokens: HMAC-SHA256, a whole column at a time through a compiled batch loop over OpenSSL's
  SHA-256 (``_hmacbatch.c``: the padded key blocks hashed once, their states copied per value, the
  GIL released), or, where it was not built, the standard library's ``hmac`` keyed once and copied
  per value. The same bytes either way.
- Signatures: Ed25519 (``cryptography``) for the principals who sign decode requests; private keys
  as PKCS#8 PEM, public keys as their 32 raw bytes.
- MACs: HMAC-SHA256 for signed manifests, the policy and the audit chain.
- A pseudorandom permutation of 64-bit integers (row ids): a 4-round Feistel network whose round
  function is AES-256 of the round number and the half, a whole array per call (Luby and Rackoff
  1988: four rounds of a pseudorandom function give a strong pseudorandom permutation).

Errors never carry key material or plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "KEY_BYTES", "NONCE_BYTES", "AuthenticationFailed", "random_key", "derive_key", "seal", "open_sealed",
    "passphrase_key", "hmac_sha256_many", "constant_time_equal", "mac", "mac_matches",
    "new_signing_key", "sign", "signature_matches", "InvalidSigningKey", "permute64", "unpermute64",
    "permute_below", "unpermute_below",
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


try:  # the optional compiled batch loop over OpenSSL's SHA-256 (setup.py); same bytes either way
    from iae_privacy.keys import _hmacbatch
except ImportError:  # pragma: no cover - an install without a C compiler or OpenSSL's headers
    _hmacbatch = None

BATCH_HMAC = _hmacbatch is not None
"""Whether tokens are computed by the compiled batch loop (else by the standard library's hmac);
the one switch (:func:`hmac_sha256_packed` and the tokens read it)."""


def _padded_key_blocks(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's (K ^ ipad, K ^ opad) blocks (RFC 2104; SHA-256's block is 64 bytes)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_packed(key: bytes, data: bytes | memoryview, offsets: np.ndarray, length: int,
                       hex: bool = False) -> bytes:
    """HMAC-SHA256 of ``data[offsets[i]:offsets[i + 1]]`` for every i, truncated to ``length``
    bytes each (``hex``: as ``2 * length`` lowercase hex characters), concatenated: the compiled
    batch loop when it is built (it releases the GIL, so columns can be hashed on several
    threads), else :func:`hmac_sha256_many`."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if BATCH_HMAC:
        ipad, opad = _padded_key_blocks(key)
        return _hmacbatch.hmac_sha256_batch(ipad, opad, data, offsets, length, hex)
    view = memoryview(data)
    bounds = offsets.tolist()
    digests = hmac_sha256_many(key, [bytes(view[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], length)
    return digests.hex().encode() if hex else digests


def hmac_sha256_many(key: bytes, messages: list[bytes], length: int) -> bytes:
    """HMAC-SHA256 of every message, truncated to ``length`` bytes each, concatenated (the
    standard library's hmac, one value at a time)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    # CPython keeps the OpenSSL HMAC object behind the stdlib wrapper; copying it directly skips
    # three Python-level calls per value (a third of the cost). Same HMAC, same bytes.
    base = getattr(keyed, "_hmac", None) or keyed
    out = []
    for message in messages:
        h = base.copy()
        h.update(message)
        out.append(h.digest()[:length])
    return b"".join(out)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message``."""
    return hmac.new(key, message, hashlib.sha256).digest()


def mac_matches(key: bytes, message: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is the HMAC-SHA256 of ``message`` (compared in constant time)."""
    return hmac.compare_digest(mac(key, message), tag)


class InvalidSigningKey(Exception):
    """A private or public signing key is not an Ed25519 key in the expected encoding."""


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair: (private key as unencrypted PKCS#8 PEM, public key as 32 raw bytes)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(private_pem: bytes, message: bytes) -> tuple[bytes, bytes]:
    """Ed25519 signature of ``message``, and the signer's public key (32 raw bytes)."""
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidSigningKey("not an unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise InvalidSigningKey("not an Ed25519 private key")
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private.sign(message), public


def signature_matches(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by the key ``public_raw``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


_FEISTEL_ROUNDS = 4


def _round(key: bytes, index: int, half: np.ndarray, width: int = 0) -> np.ndarray:
    """The Feistel round function: the first 32 bits of AES-256(key, index | half | zeros | width),
    as little-endian words (one AES block per value: a pseudorandom function of the half; ``width``,
    the bits of a half in :func:`permute_below`, 0 in :func:`permute64`, separates the two)."""
    blocks = np.zeros((len(half), 4), dtype="<u4")
    blocks[:, 0] = (half << np.uint32(8)) | np.uint32(index)  # bytes 0..3: index, half's low 3 bytes
    blocks[:, 1] = half >> np.uint32(24)                       # byte 4: half's high byte
    blocks[:, 2] = np.uint32(width)                            # bytes 8..11: the width
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out = np.frombuffer(encryptor.update(blocks.tobytes()) + encryptor.finalize(), dtype="<u4")
    return out[0::4].astype(np.uint32)


def permute64(key: bytes, values: np.ndarray) -> np.ndarray:
    """A keyed pseudorandom permutation of uint64 values (the inverse is :func:`unpermute64`)."""
    values = np.asarray(values, dtype=np.uint64)
    left, right = (values >> np.uint64(32)).astype(np.uint32), (values & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    for index in range(_FEISTEL_ROUNDS):
        left, right = right, left ^ _round(key, index, right)
    return (left.astype(np.uint64) << np.uint64(32)) | right.astype(np.uint64)


def unpermute64(key: bytes, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint64)
    left, right = (values >> np.uint64(32)).astype(np.uint32), (values & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    for index in reversed(range(_FEISTEL_ROUNDS)):
        left, right = right ^ _round(key, index, left), left
    return (left.astype(np.uint64) << np.uint64(32)) | right.astype(np.uint64)


_SMALL_ROUNDS = 10
"""Rounds of :func:`permute_below`: as NIST's FF1 (SP 800-38G), whose radix-2 case it follows
(a balanced Feistel network on bit strings, cycle-walked into the domain), for domains as small
as a few rows."""


def _halves(bound: int) -> int:
    """The bits of each half of the Feistel network that holds 0 .. ``bound`` - 1 (1 to 31)."""
    if not 1 <= bound <= 1 << 62:
        raise ValueError("permute_below: the bound must be 1 to 2**62")
    return max(-(-int(bound - 1).bit_length() // 2), 1)


def _feistel(key: bytes, values: np.ndarray, width: int, inverse: bool) -> np.ndarray:
    mask = np.uint64((1 << width) - 1)
    left, right = (values >> np.uint64(width)) & mask, values & mask
    rounds = range(_SMALL_ROUNDS)
    for index in reversed(rounds) if inverse else rounds:
        if inverse:
            left, right = right ^ (_round(key, index, left.astype(np.uint32), width).astype(np.uint64) & mask), left
        else:
            left, right = right, left ^ (_round(key, index, right.astype(np.uint32), width).astype(np.uint64) & mask)
    return (left << np.uint64(width)) | right


def _below(key: bytes, values: np.ndarray, bound: int, inverse: bool) -> np.ndarray:
    width = _halves(bound)
    values = np.asarray(values, dtype=np.uint64)
    if len(values) and int(values.max()) >= bound:
        raise ValueError("permute_below: a value is not below the bound")
    out = _feistel(key, values, width, inverse)
    outside = out >= np.uint64(bound)
    while outside.any():  # the domain holds at most 4x the bound: a few steps (Black and Rogaway 2002)
        out[outside] = _feistel(key, out[outside], width, inverse)
        outside = out >= np.uint64(bound)
    return out


def permute_below(key: bytes, values: np.ndarray, bound: int) -> np.ndarray:
    """A keyed pseudorandom permutation of the integers 0 .. ``bound`` - 1 (uint64; the inverse is
    :func:`unpermute_below`): ten Feistel rounds on two halves of ``ceil(bits / 2)`` bits, cycle-walked
    back below ``bound``."""
    return _below(key, values, bound, inverse=False)


def unpermute_below(key: bytes, values: np.ndarray, bound: int) -> np.ndarray:
    return _below(key, values, bound, inverse=True)
