r"""The keyed, exactly invertible autoencoder: integer features :math:`x` to latent :math:`z` and back.

``ExactINN`` is a sequence of blocks, each a keyed permutation, a keyed unit-triangular integer
mixing and an integer additive coupling whose shift is a quantized MLP. The permutations and
mixings are derived from a secret *transform key* through a local SHAKE-256 stream (never a global
RNG) and are not part of the saved weights: the weights alone do not decode.

``encode(x)`` gives :math:`z`; its first ``public_dims`` columns are ``z_public`` (for analysts),
the rest ``z_detail`` (for the vault). ``decode(z)`` restores :math:`x` bit for bit, for any
weights, batch size, thread count and device. Every intermediate value is bounded in advance
(``ExactINN.input_bound`` and each layer's ``bound``, worked out when the network is built), so
nothing can overflow.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from iae_privacy.errors import NetworkError
from iae_privacy.network.layers import (
    ACTIVATION_BITS,
    AdditiveCoupling,
    KeyedMixing,
    QuantizedMLP,
)

__all__ = ["NetworkConfig", "ExactINN", "NetworkError"]

MAX_ABS = 1 << 52
"""Every value in the network stays below this: integers are exact in float64 (and int64)."""
CHUNK_ROWS = 16_384
"""The exact path works through this many rows at a time: activations stay in cache (about 5x
faster on a CPU than one large block) and memory stays flat."""
SCALE_BITS = 12
"""Features are scaled up (by powers of two, exactly) to span about 2**SCALE_BITS."""
INPUT_RANGE = 8
"""The shift network sees each input rescaled to about [-INPUT_RANGE, INPUT_RANGE]."""


@dataclass(frozen=True)
class NetworkConfig:
    """The architecture: everything but the weights and the key."""

    levels: tuple[int, ...]
    public_dims: int
    blocks: int = 4
    hidden: tuple[int, ...] = (64, 64)
    mixing_terms: int = 2

    def __post_init__(self) -> None:
        d = len(self.levels)
        if d < 1:
            raise NetworkError("the network needs at least one feature")
        if not 1 <= self.public_dims <= d:
            raise NetworkError(f"public_dims must be between 1 and the feature count {d}, got {self.public_dims}")
        if any(level < 1 for level in self.levels):
            raise NetworkError("every feature needs at least one level")
        if self.blocks < 1:
            raise NetworkError(f"blocks must be at least 1, got {self.blocks}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NetworkConfig:
        doc = json.loads(text)
        return cls(levels=tuple(doc["levels"]), public_dims=doc["public_dims"], blocks=doc["blocks"],
                   hidden=tuple(doc["hidden"]), mixing_terms=doc["mixing_terms"])


class _KeyStream:
    """Deterministic pseudo-random numbers from the transform key and a label (SHAKE-256)."""

    def __init__(self, key: bytes, label: str) -> None:
        self._seed = b"iae-privacy/network/" + label.encode() + b"\x00" + key

    def uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(hashlib.shake_256(self._seed).digest(8 * n), dtype="<u8")


def keyed_permutation(key: bytes, block: int, d: int) -> np.ndarray:
    return np.argsort(_KeyStream(key, f"permutation/{block}").uint64(d), kind="stable")


def keyed_mixing(key: bytes, block: int, d: int, terms: int) -> np.ndarray:
    """The matrix I + M of a :class:`~iae_privacy.network.layers.KeyedMixing`: each target feature gets up to
    ``terms`` key-chosen source features, each added or subtracted (key-chosen too).

    Even blocks add first-half features into the second half, odd blocks the other way round.
    """
    half = d // 2
    sources, targets = (np.arange(half), np.arange(half, d))
    if block % 2:
        sources, targets = targets, sources
    matrix = np.eye(d)
    if len(sources) == 0:
        return matrix
    stream = _KeyStream(key, f"mixing/{block}").uint64(2 * d * terms).reshape(d, terms, 2)
    for t in targets:
        for pick, sign in stream[t]:
            matrix[t, sources[int(pick % np.uint64(len(sources)))]] = 1.0 if sign & 1 else -1.0
    return matrix


def _power_of_two_at_least(x: float) -> int:
    return max(0, math.ceil(math.log2(max(x, 1.0))))


class ExactINN(nn.Module):
    """The keyed invertible autoencoder. Build with :meth:`create`, train with
    :func:`iae_privacy.network.train.train`, then :meth:`freeze` for the exact path."""

    def __init__(self, config: NetworkConfig, key: bytes) -> None:
        super().__init__()
        if len(key) < 16:
            raise NetworkError("the transform key must be at least 16 bytes")
        self.config = config
        levels = np.asarray(config.levels, dtype=np.int64)
        d = len(levels)
        # Every feature is first brought to a common scale, exactly: h = x * 2**s - offset with
        # s chosen so that (levels - 1) * 2**s is about 2**SCALE_BITS, and offset centring it.
        # A 2-level flag and a 4096-level amount then weigh alike in the mixings and the loss.
        span_bits = np.array([max(int(level - 1), 1).bit_length() for level in levels])
        exponents = np.maximum(SCALE_BITS - span_bits, 0)
        offsets = ((levels - 1) << exponents) // 2
        self.register_buffer("scale", torch.as_tensor(2.0**exponents), persistent=False)
        self.register_buffer("offset", torch.as_tensor(offsets.astype(np.float64)), persistent=False)
        bound = np.maximum(offsets, ((levels - 1) << exponents) - offsets).astype(np.float64)
        self.input_bound = bound.copy()
        layers: list[nn.Module] = []
        split = d // 2
        for block in range(config.blocks):
            mixing = KeyedMixing(keyed_permutation(key, block, d),
                                 keyed_mixing(key, block, d, config.mixing_terms))
            bound = mixing.bound(bound)
            layers.append(mixing)
            if split == 0:
                continue  # one feature: nothing to condition on
            b_a, b_b = bound[:split], bound[split:]
            # inputs rescaled to about ±INPUT_RANGE, in activation units (2**-ACTIVATION_BITS)
            in_exponents = [ACTIVATION_BITS - _power_of_two_at_least(b / INPUT_RANGE) for b in b_a]
            in_scale = np.array([2.0**e for e in in_exponents])
            # the shift's real output ±INPUT_RANGE is scaled to the size of x_b
            out_exponent = _power_of_two_at_least(float(b_b.max()) / INPUT_RANGE)
            out_max = 1 << _power_of_two_at_least(float(b_b.max()) + 1)
            shift = QuantizedMLP(in_scale, d - split, config.hidden, out_exponent, out_max)
            coupling = AdditiveCoupling(split, shift)
            bound = coupling.bound(bound)
            layers.append(coupling)
        if bound.max() >= MAX_ABS:
            raise NetworkError("this architecture could leave the exact range 2**52; "
                               "use fewer blocks or features")
        self.layers = nn.ModuleList(layers)
        self.output_bound = bound

    # -- relaxed (training) ------------------------------------------------------------------

    def relaxed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float twin of :meth:`encode` for training; ``x`` holds (float) feature codes."""
        h = x * self.scale.to(x.dtype) - self.offset.to(x.dtype)
        for layer in self.layers:
            h = layer(h, exact=False)
        return h

    def relaxed_inverse(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in reversed(self.layers):
            h = layer.inverse(h, exact=False)
        return (h + self.offset.to(z.dtype)) / self.scale.to(z.dtype)

    # -- exact ---------------------------------------------------------------------------------

    @property
    def couplings(self) -> list[AdditiveCoupling]:
        return [layer for layer in self.layers if isinstance(layer, AdditiveCoupling)]

    def freeze(self) -> ExactINN:
        """Quantize every shift network; from now on :meth:`encode` and :meth:`decode` work."""
        for coupling in self.couplings:
            coupling.shift.freeze()
        return self

    @property
    def frozen(self) -> bool:
        return all(c.shift.frozen for c in self.couplings)

    def _check(self, values: torch.Tensor, what: str) -> None:
        if not self.frozen:
            raise NetworkError("freeze() the network before using the exact path")
        if values.dtype != torch.int64 or values.ndim != 2 or values.shape[1] != len(self.config.levels):
            raise NetworkError(
                f"{what} must be an int64 matrix with {len(self.config.levels)} columns, "
                f"got {values.dtype} {tuple(values.shape)}"
            )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features (int64, ``[0, levels)`` per column) to latent ``z`` (int64), exactly."""
        self._check(x, "features")
        levels = torch.as_tensor(self.config.levels, device=x.device)
        return self._by_chunk(x, lambda c: self._forward(c, levels))

    def _forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        outside = (x < 0) | (x >= levels)
        if outside.any():
            bad = int(outside.any(0).nonzero()[0, 0])
            raise NetworkError(f"feature {bad} has values outside [0, {self.config.levels[bad]})")
        # the exact path runs on integer-valued float64: every value stays below 2**52 (see bounds)
        h = x.to(torch.float64) * self.scale - self.offset
        for layer in self.layers:
            h = layer(h, exact=True)
        return h.to(torch.int64)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``z`` back to the features, bit for bit."""
        self._check(z, "latent")
        bound = torch.as_tensor(self.output_bound, device=z.device).to(torch.int64)

        def chunk(c: torch.Tensor) -> torch.Tensor:
            if (c.abs() > bound).any():
                raise NetworkError("latent values outside the network's range: not produced by this model")
            return self._inverse(c)

        return self._by_chunk(z, chunk)

    @staticmethod
    def _by_chunk(values: torch.Tensor, fn) -> torch.Tensor:
        """``fn`` over CHUNK_ROWS rows at a time (cache-sized), concatenated."""
        if len(values) <= CHUNK_ROWS:
            return fn(values)
        return torch.cat([fn(c) for c in values.split(CHUNK_ROWS)])

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        h = z.to(torch.float64)
        for layer in reversed(self.layers):
            h = layer.inverse(h, exact=True)
        # exact for the image of encode (a multiple of the scale); nearest code for any other z
        return torch.floor((h + self.offset) / self.scale + 0.5).to(torch.int64)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.config.public_dims
        return z[:, :k], z[:, k:]

    @torch.no_grad()
    def reconstruct_from_public(self, z_public: torch.Tensor) -> torch.Tensor:
        """What ``z_public`` alone says about the features: decode with ``z_detail`` at its prior
        mean (0), then clip into each feature's range."""
        d = len(self.config.levels)
        z = torch.zeros((z_public.shape[0], d), dtype=torch.int64, device=z_public.device)
        z[:, : self.config.public_dims] = z_public
        x = self._by_chunk(z, self._inverse)
        levels = torch.as_tensor(self.config.levels, device=z.device)
        return torch.minimum(torch.clamp(x, min=0), levels - 1)

    # -- weights as data -----------------------------------------------------------------------

    def quantized_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The frozen integer weights (for safetensors) and the small facts needed to load them.

        Holds nothing derived from the key: permutations and mixings are rebuilt from it.
        """
        if not self.frozen:
            raise NetworkError("freeze() the network before saving it")
        tensors = {}
        exponents = []
        for i, coupling in enumerate(self.couplings):
            for name, tensor in coupling.shift.quantized_tensors().items():
                tensors[f"coupling{i}.{name}"] = tensor.detach().cpu().contiguous()
            exponents.append(coupling.shift.weight_exponents)
        return tensors, {"config": json.loads(self.config.to_json()), "weight_exponents": exponents}

    @classmethod
    def from_quantized_state(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any],
                             key: bytes) -> ExactINN:
        config = NetworkConfig.from_json(json.dumps(facts["config"]))
        model = cls(config, key)
        couplings = model.couplings
        if len(facts["weight_exponents"]) != len(couplings):
            raise NetworkError("model file does not match its architecture (coupling count)")
        for i, (coupling, exponents) in enumerate(zip(couplings, facts["weight_exponents"])):
            for j, linear in enumerate(coupling.shift.linears):
                weight = tensors.get(f"coupling{i}.qweight{j}")
                bias = tensors.get(f"coupling{i}.qbias{j}")
                if weight is None or bias is None or weight.shape != linear.weight.shape \
                        or bias.shape != linear.bias.shape or weight.dtype != torch.int8:
                    raise NetworkError(f"model file is missing or has malformed weights for coupling {i}")
                coupling.shift.register_buffer(f"qweight{j}", weight.clone())
                coupling.shift.register_buffer(f"qbias{j}", bias.clone())
            coupling.shift.load_frozen(exponents)
        return model
