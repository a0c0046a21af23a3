r"""The keyed, exactly invertible autoencoder: integer features :math:`x` to latent :math:`z` and back.

``ExactINN`` is a sequence of exactly invertible integer layers. Architecture 2 (the default):

1. four integer *lifting steps* (shears with a fixed-point linear shift) fitted to the data
   (:meth:`ExactINN.fitted`): after them the public columns are the top-k principal component
   scores of the standardised features, each scaled, and decoding with ``z_detail = 0`` gives the
   least-squares reconstruction from them, which is PCA-k's;
2. blocks of a keyed permutation of the public columns among themselves, a keyed permutation and
   unit-triangular mixing of the detail columns, and a quantized MLP coupling that shifts the
   detail by a function of the public columns (the nonlinear part training adds on top of PCA).

Architecture 1 (models sealed before it) is a sequence of blocks, each a keyed permutation and
mixing over all features and one MLP coupling. In both, the permutations and mixings are derived
from a secret *transform key* through a local SHAKE-256 stream (never a global RNG) and are not
part of the saved weights: the weights alone do not decode.

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
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from iae_privacy.errors import NetworkError
from iae_privacy.network.layers import (
    ACTIVATION_BITS,
    AdditiveCoupling,
    KeyedMixing,
    LinearShift,
    QuantizedMLP,
    TriangularLift,
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
SPREAD = 4.0
"""Architecture 2: a shift network's 8-bit inputs span SPREAD standard deviations of the data each way."""
LIFT_HEADROOM_BITS = 1
"""An unfitted lifting step's shift is clamped to 2**LIFT_HEADROOM_BITS times its largest input bound
(a fitted one to 16 times its largest shift on the data: NetworkConfig.lift_bits)."""
ARCHITECTURES = (1, 2)
LIFT_STEPS = 4
"""Architecture 2's lifting steps: public from detail, upper and lower triangular, detail from public."""


@dataclass(frozen=True)
class NetworkConfig:
    """The architecture: everything but the weights and the key."""

    levels: tuple[int, ...]
    public_dims: int
    blocks: int = 4
    hidden: tuple[int, ...] = (64, 64)
    mixing_terms: int = 2
    architecture: int = 2
    """2: PCA-fitted lifting steps, then couplings that predict the detail (the default); 1: models
    sealed before it."""
    lift_bits: tuple[int, ...] = ()
    """Architecture 2: each lifting step's shift is clamped to 2**bits, sized to the fitted map
    (:meth:`ExactINN.fitted`); empty: 2**LIFT_HEADROOM_BITS times the step's input bound."""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise NetworkError(f"unknown network architecture {self.architecture}; this version reads "
                               f"{', '.join(map(str, ARCHITECTURES))}")
        d = len(self.levels)
        if d < 1:
            raise NetworkError("the network needs at least one feature")
        if not 1 <= self.public_dims <= d:
            raise NetworkError(f"public_dims must be between 1 and the feature count {d}, got {self.public_dims}")
        if any(level < 1 for level in self.levels):
            raise NetworkError("every feature needs at least one level")
        if self.blocks < 1:
            raise NetworkError(f"blocks must be at least 1, got {self.blocks}")
        if len(self.lift_bits) not in (0, LIFT_STEPS) or any(not 0 <= b < 52 for b in self.lift_bits):
            raise NetworkError(f"lift_bits must be {LIFT_STEPS} whole numbers from 0 to 51")

    def to_json(self) -> str:
        doc = asdict(self)
        if not self.lift_bits:
            del doc["lift_bits"]
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> NetworkConfig:
        doc = json.loads(text)
        return cls(levels=tuple(doc["levels"]), public_dims=doc["public_dims"], blocks=doc["blocks"],
                   hidden=tuple(doc["hidden"]), mixing_terms=doc["mixing_terms"],
                   architecture=doc.get("architecture", 1),  # written before architectures had a number
                   lift_bits=tuple(doc.get("lift_bits", ())))


class _KeyStream:
    """Deterministic pseudo-random numbers from the transform key and a label (SHAKE-256)."""

    def __init__(self, key: bytes, label: str) -> None:
        self._seed = b"iae-privacy/network/" + label.encode() + b"\x00" + key

    def uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(hashlib.shake_256(self._seed).digest(8 * n), dtype="<u8")


def keyed_permutation(key: bytes, block: int | str, d: int) -> np.ndarray:
    return np.argsort(_KeyStream(key, f"permutation/{block}").uint64(d), kind="stable")


def keyed_mixing(key: bytes, block: int | str, d: int, terms: int, groups: tuple[range, ...] | None = None,
                 flip: bool | None = None) -> np.ndarray:
    """The matrix I + M of a :class:`~iae_privacy.network.layers.KeyedMixing`: each target feature gets up to
    ``terms`` key-chosen source features, each added or subtracted (key-chosen too).

    Within each group (default: all features), first-half features are added into the second half,
    or the other way round with ``flip`` (default: odd blocks). Sources and targets never overlap,
    so M @ M = 0.
    """
    matrix = np.eye(d)
    stream = _KeyStream(key, f"mixing/{block}").uint64(2 * d * terms).reshape(d, terms, 2)
    for group in groups or (range(d),):
        half = group.start + len(group) // 2
        sources, targets = np.arange(group.start, half), np.arange(half, group.stop)
        if flip if flip is not None else (isinstance(block, int) and block % 2):
            sources, targets = targets, sources
        if len(sources) == 0:
            continue
        for t in targets:
            for pick, sign in stream[t]:
                matrix[t, sources[int(pick % np.uint64(len(sources)))]] = 1.0 if sign & 1 else -1.0
    return matrix


def _group_permutation(key: bytes, label: str, k: int, d: int) -> np.ndarray:
    """A keyed permutation of the first k features among themselves, and of the rest among themselves."""
    return np.concatenate([keyed_permutation(key, f"{label}/public", k),
                           k + keyed_permutation(key, f"{label}/detail", d - k)])


def varimax(loadings: np.ndarray, iterations: int = 200, tolerance: float = 1e-9) -> np.ndarray:
    r"""The orthogonal :math:`k \times k` rotation :math:`R` that maximises the variance of the squared
    loadings :math:`(LR)^2` within each column (Kaiser 1958; the SVD iteration of Jennrich 2001):
    each rotated component leans on few features. The subspace, and so what it can reconstruct,
    is unchanged.

    References:
        Kaiser, "The varimax criterion for analytic rotation in factor analysis", Psychometrika 1958.
    """
    d, k = loadings.shape
    rotation, last = np.eye(k), 0.0
    for _ in range(iterations):
        rotated = loadings @ rotation
        u, singular, vt = np.linalg.svd(loadings.T @ (rotated**3 - rotated * (rotated**2).sum(0) / d))
        rotation = u @ vt
        if singular.sum() <= last * (1 + tolerance):
            break
        last = singular.sum()
    return rotation


def _group_directions(standardised: np.ndarray, codes: np.ndarray, protected: tuple[tuple[int, int], ...],
                      bins: int = 8) -> np.ndarray:
    """The projector onto the protected features' own axes and the directions along which their
    groups differ in mean (each category, or each of ``bins`` quantile bins of a number, and null,
    is a group) in the other features.

    References:
        Kleindessner, Donini, Russell, Zafar, "Efficient fair PCA for fair representation learning",
        AISTATS 2023.
    """
    own = [f for pair in protected for f in pair if f >= 0]
    indicators = []
    for value, null in protected:
        column = codes[:, value]
        distinct = np.unique(column)
        if len(distinct) > bins:
            column = np.searchsorted(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]), column, side="right")
            distinct = np.unique(column)
        indicators += [column == v for v in distinct]
        if null >= 0:
            indicators.append(codes[:, null] == 1)
    groups = np.stack(indicators, axis=1).astype(np.float64)
    differences = standardised.T @ (groups - groups.mean(0)) / len(groups)  # d x groups
    differences[own] = 0.0  # the protected features' own axes are in the span already
    differences = np.c_[np.eye(len(differences))[:, own], differences]
    basis, singular, _ = np.linalg.svd(differences, full_matrices=False)
    basis = basis[:, singular > 1e-9 * max(singular.max(), 1e-300)]
    return basis @ basis.T


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
        build = self._blocks_v1 if config.architecture == 1 else self._blocks_v2
        layers, bound = build(key, bound)
        if bound.max() >= MAX_ABS:
            raise NetworkError("this architecture could leave the exact range 2**52; "
                               "use fewer blocks or features")
        self.layers = nn.ModuleList(layers)
        self.output_bound = bound

    def _mlp_coupling(self, bound: np.ndarray, split: int, reverse: bool = False) -> AdditiveCoupling:
        """A coupling whose shift is a quantized MLP, scaled for the bounds (architecture 2 rescales
        it to the data in :meth:`fitted`)."""
        b_a, b_b = (bound[split:], bound[:split]) if reverse else (bound[:split], bound[split:])
        # inputs rescaled to about ±INPUT_RANGE, in activation units (2**-ACTIVATION_BITS)
        in_exponents = [ACTIVATION_BITS - _power_of_two_at_least(b / INPUT_RANGE) for b in b_a]
        in_scale = np.array([2.0**e for e in in_exponents])
        # the shift's real output ±INPUT_RANGE is scaled to the size of x_b
        out_exponent = _power_of_two_at_least(float(b_b.max()) / INPUT_RANGE)
        out_max = 1 << _power_of_two_at_least(float(b_b.max()) + 1)
        shift = QuantizedMLP(in_scale, len(b_b), self.config.hidden, out_exponent, out_max)
        return AdditiveCoupling(split, shift, reverse)

    def _blocks_v1(self, key: bytes, bound: np.ndarray) -> tuple[list[nn.Module], np.ndarray]:
        d, split = len(bound), len(bound) // 2
        layers: list[nn.Module] = []
        for block in range(self.config.blocks):
            mixing = KeyedMixing(keyed_permutation(key, block, d),
                                 keyed_mixing(key, block, d, self.config.mixing_terms))
            bound = mixing.bound(bound)
            layers.append(mixing)
            if split == 0:
                continue  # one feature: nothing to condition on
            coupling = self._mlp_coupling(bound, split)
            bound = coupling.bound(bound)
            layers.append(coupling)
        return layers, bound

    def _blocks_v2(self, key: bytes, bound: np.ndarray) -> tuple[list[nn.Module], np.ndarray]:
        d, k, terms = len(bound), self.config.public_dims, self.config.mixing_terms
        # the carriers (which features the lifting steps turn into z_public) are chosen from the data
        # by fitted(); bounds are made the same for every feature so that the choice cannot matter.
        # Lifts and carriers are functions of the data alone: nothing saved is derived from the key.
        bound = np.full(d, bound.max())
        layers: list[nn.Module] = [KeyedMixing(np.arange(d), np.eye(d))]
        both = 0 < k < d
        if both:
            lifts: list[nn.Module] = []
            for step in range(LIFT_STEPS):
                if lifts:
                    bound = lifts[-1].bound(bound)
                headroom = 1 << (self.config.lift_bits[step] if self.config.lift_bits
                                 else _power_of_two_at_least(float(bound.max())) + LIFT_HEADROOM_BITS)
                if step == 0:
                    lifts.append(AdditiveCoupling(k, LinearShift(bound[k:], k, headroom), reverse=True))
                elif step < LIFT_STEPS - 1:
                    lifts.append(TriangularLift(bound[:k], upper=step == 1, out_max=headroom))
                else:
                    lifts.append(AdditiveCoupling(k, LinearShift(bound[:k], d - k, headroom)))
            bound = lifts[-1].bound(bound)
            layers += lifts
        for block in range(self.config.blocks):
            label = f"v2/block/{block}"
            # the public columns are only permuted among themselves: analysts' models (trees above
            # all) read axis-aligned columns far better than sums of them (read-out 0.31-0.64
            # against 0.76-0.90 measured); the detail columns are mixed too
            mixing = KeyedMixing(_group_permutation(key, label, k, d),
                                 keyed_mixing(key, label, d, terms, (range(k, d),), flip=bool(block % 2)))
            bound = mixing.bound(bound)
            layers.append(mixing)
            if both:  # the detail shifted by a function of the public columns, which stay as fitted
                coupling = self._mlp_coupling(bound, k)
                bound = coupling.bound(bound)
                layers.append(coupling)
        return layers, bound

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
        """The couplings whose shift is a quantized MLP."""
        return [layer for layer in self.layers
                if isinstance(layer, AdditiveCoupling) and isinstance(layer.shift, QuantizedMLP)]

    @property
    def lifts(self) -> list[nn.Module]:
        """The lifting steps, whose shift is a fixed-point linear map (architecture 2): the public
        columns from the detail, two triangular steps within the public columns, the detail from
        the public."""
        return [layer for layer in self.layers if isinstance(getattr(layer, "shift", None), LinearShift)]

    def freeze(self) -> ExactINN:
        """Quantize every shift; from now on :meth:`encode` and :meth:`decode` work."""
        for coupling in self.couplings + self.lifts:
            coupling.shift.freeze()
        return self

    @property
    def frozen(self) -> bool:
        return all(c.shift.frozen for c in self.couplings + self.lifts)

    # -- architecture 2: fitted to the data before training ------------------------------------

    def _set_carriers(self, order: np.ndarray) -> None:
        d = len(self.config.levels)
        if sorted(int(i) for i in order) != list(range(d)):
            raise NetworkError("model file does not match its architecture (carrier order)")
        self.layers[0] = KeyedMixing(np.asarray(order, dtype=np.int64), np.eye(d))

    @property
    def carriers(self) -> list[int]:
        return [int(i) for i in self.layers[0]._order] if self.config.architecture == 2 else []

    @classmethod
    @torch.no_grad()
    def fitted(cls, config: NetworkConfig, key: bytes, x: torch.Tensor,
               protected: tuple[tuple[int, int], ...] = (), favoured: tuple[int, ...] = (),
               hidden: tuple[int, ...] = (), kept: tuple[int, ...] = ()) -> ExactINN:
        r"""A network fitted to the principal components of ``x`` (feature codes), ready to train.

        Architecture 2. With :math:`h` the upscaled features, :math:`W = (V_k R)^\top D_\sigma^{-1}`
        the top-k principal axes of the standardised features, varimax-rotated (:func:`varimax`), as a
        map of :math:`h`, and
        :math:`S` the k *carrier* coordinates
        picked by QR with column pivoting (so that :math:`W_S` is well conditioned):

        1. the public columns become :math:`u = W_S^{-1} W (h - \mu)`, a shear by the others;
        2. with :math:`W_S = P L D U` (LU), two unit-triangular steps turn :math:`u` into
           :math:`D^{-1} P^\top W (h - \mu)`: rotated principal component scores, each scaled;
        3. the detail columns become their residual from a least-squares prediction by those.

        With ``protected`` features ((value feature, null feature or -1) pairs), the axes are taken
        from the covariance with those features' own axes and the directions along which their
        groups differ in mean projected out (linear fair PCA, Kleindessner et al. 2023), and their
        coefficients set to exactly zero: ``z_public`` is then a function of the other features
        alone, has the same mean in every group, and carries nothing a linear model could use to
        tell them apart (while k leaves room: k <= the number of other features).

        With ``favoured`` features (the best predictors of a declared analysis target, chosen by
        :func:`iae_privacy.analysts.target.favoured_features`), each of the first k - 1 of them is a
        public axis of its own, the feature itself (less its group-mean directions, with protected
        columns), and the other axes are the principal axes of what they leave: an analyst's model
        of the target reads its predictors from one column each, not from mixtures of many, and
        the release's noise (``model/protection.py``) can spare them when they do not give the
        protected groups away. ``hidden`` features (proxies of the protected columns,
        :func:`iae_privacy.model.protection.proxy_features`) get zero coefficients too. A ``kept``
        favoured feature (the declared target's own values) is its public axis as it is, its
        groups' mean differences included: analysts model the target, so what it tells about the
        protected columns on its own is theirs by design (the release is calibrated against it,
        :meth:`iae_privacy.model.protection.Protection.fit_calibrated`).

        All are shears, exactly invertible once rounded. ``z_public`` then carries what PCA-k
        carries, in columns trees read better, and decoding with ``z_detail = 0`` is PCA-k's
        reconstruction; training adds the
        nonlinear part. Each step's clamp is sized to 16 times its largest shift on ``x``, so that
        it binds on no row like them. Architecture 1: an untrained network, as before.
        """
        model = cls(config, key)
        if config.architecture != 2:
            return model
        lifts = model._principal_lifts(x.to(torch.float64), protected, favoured, hidden, kept)
        if lifts is not None:
            weights, bits = lifts
            model = cls(replace(config, lift_bits=bits), key)
            model._set_carriers(weights.pop("carriers"))
            for lift, (weight, bias) in zip(model.lifts, weights.values()):
                lift.shift.weight.copy_(torch.as_tensor(weight))
                lift.shift.bias.copy_(torch.as_tensor(bias))
        model._scale_shifts(x.to(torch.float64))
        return model

    def _principal_lifts(self, x: torch.Tensor, protected: tuple[tuple[int, int], ...] = (),
                         favoured: tuple[int, ...] = (), hidden: tuple[int, ...] = (),
                         kept: tuple[int, ...] = ()) -> tuple[dict[str, Any], tuple[int, ...]] | None:
        """The lifting steps' weights fitted to ``x`` (see :meth:`fitted`) and their clamps' bits;
        None when there is nothing to fit (one side empty, or one row)."""
        from scipy.linalg import lu, qr

        d, k = len(self.config.levels), self.config.public_dims
        if not 0 < k < d or len(x) < 2:
            return None
        values = (x * self.scale - self.offset).numpy()
        mean, spread = values.mean(0), values.std(0)
        spread = np.where(spread > 0, spread, 1.0)
        standardised = (values - mean) / spread
        covariance = np.cov(standardised.T).reshape(d, d)
        away = np.eye(d)
        if protected:
            away = away - _group_directions(standardised, x.numpy(), protected)
            covariance = away @ covariance @ away
        own = [f for pair in protected for f in pair if f >= 0] + [f for f in hidden if 0 <= f < d]
        axes_of = [f for f in dict.fromkeys(favoured) if f not in own and 0 <= f < d][: k - 1]
        chosen = np.column_stack([np.eye(d)[:, f] if f in kept else away[:, f] for f in axes_of]) if axes_of \
            else np.zeros((d, 0))
        chosen = chosen[:, np.linalg.norm(chosen, axis=0) > 1e-6]  # a feature all in the group directions
        if chosen.shape[1]:  # the favoured features' own axes; the principal axes of what they leave
            chosen = chosen / np.linalg.norm(chosen, axis=0)
            basis = np.linalg.qr(chosen)[0]
            leave = np.eye(d) - basis @ basis.T
            covariance = leave @ covariance @ leave
        _, vectors = np.linalg.eigh(covariance)
        # the top principal axes, varimax-rotated: the same subspace (what it reconstructs is
        # PCA-k's), with each column leaning on few features, which analysts' models (trees above
        # all) read far better (gradient-boosting read-out 0.04-0.07 higher on the sample tables)
        axes = vectors[:, ::-1][:, : k - chosen.shape[1]]
        w = (np.c_[chosen, axes @ varimax(axes)] / spread[:, None]).T
        if own and k <= d - len(own):
            # exactly nothing of the protected features themselves: no carrier, no weight, so the
            # rounded shifts (and z_public) are functions of the other features alone
            w[:, own] = 0.0
        _, order = qr(w, mode="r", pivoting=True)
        w, values, mean = w[:, order], values[:, order], mean[order]
        a = np.linalg.lstsq(w[:, :k], w[:, k:], rcond=None)[0]  # W_S^-1 W_R
        a_bias = -(mean[:k] + a @ mean[k:])
        shifts = [values[:, k:] @ a.T + a_bias]
        u = values[:, :k] + shifts[0]
        upper = lower = np.zeros((k, k))
        _, l_factor, u_factor = lu(w[:, :k])
        diagonal = np.diag(u_factor)
        if np.all(np.abs(diagonal) > 1e-9 * np.abs(diagonal).max()):
            upper = u_factor / diagonal[:, None] - np.eye(k)
            lower = l_factor * diagonal[None, :] / diagonal[:, None] - np.eye(k)
        for matrix in (upper, lower):
            shifts.append(u @ matrix.T)
            u = u + shifts[-1]
        g = np.linalg.lstsq(np.c_[u, np.ones(len(u))], values[:, k:], rcond=None)[0]
        shifts.append(-(u @ g[:k] + g[k]))
        bits = tuple(min(51, _power_of_two_at_least(16 * float(np.abs(t).max()) + 1)) for t in shifts)
        weights = {"carriers": order, "public": (a, a_bias), "upper": (upper, np.zeros(k)),
                   "lower": (lower, np.zeros(k)), "detail": (-g[:k].T, -g[k])}
        return weights, bits

    def _scale_shifts(self, x: torch.Tensor) -> None:
        """Each shift network's 8-bit inputs span SPREAD standard deviations of what it will see
        (on ``x``), and its output the spread of what it shifts."""
        h = (x * self.scale - self.offset).to(torch.float32)
        for layer in self.layers:
            if isinstance(layer, AdditiveCoupling) and isinstance(layer.shift, QuantizedMLP) and len(h) > 1:
                x_a, x_b = layer.parts(h)
                layer.shift.set_scales(
                    [int(np.clip(ACTIVATION_BITS + math.floor(math.log2(INPUT_RANGE / (SPREAD * max(s, 1.0)))),
                                 -60, 60)) for s in x_a.std(0).tolist()],
                    _power_of_two_at_least(SPREAD * max(float(x_b.std(0).max()), 1.0) / INPUT_RANGE))
            h = layer(h, exact=False)

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
    def reconstruct_from_public(self, z_public: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        """What ``z_public`` alone says about the features: decode with ``z_detail`` at its prior
        mean (0), then clip into each feature's range. ``rounded``: the nearest codes (int64);
        else the network's output before rounding to a code (float64; what R² is measured on, as
        PCA's reconstruction is)."""
        d = len(self.config.levels)
        z = torch.zeros((z_public.shape[0], d), dtype=torch.int64, device=z_public.device)
        z[:, : self.config.public_dims] = z_public
        top = torch.as_tensor(self.config.levels, device=z.device) - 1
        if rounded:
            return torch.minimum(torch.clamp(self._by_chunk(z, self._inverse), min=0), top)

        def continuous(c: torch.Tensor) -> torch.Tensor:
            h = c.to(torch.float64)
            for layer in reversed(self.layers):
                h = layer.inverse(h, exact=True)
            return (h + self.offset) / self.scale

        return torch.minimum(torch.clamp(self._by_chunk(z, continuous), min=0), top.to(torch.float64))

    # -- weights as data -----------------------------------------------------------------------

    def quantized_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The frozen integer weights (for safetensors) and the small facts needed to load them.

        Holds nothing derived from the key: permutations and mixings are rebuilt from it.
        """
        if not self.frozen:
            raise NetworkError("freeze() the network before saving it")
        tensors = {}
        exponents = []
        for prefix, couplings in (("coupling", self.couplings), ("lift", self.lifts)):
            for i, coupling in enumerate(couplings):
                for name, tensor in coupling.shift.quantized_tensors().items():
                    tensors[f"{prefix}{i}.{name}"] = tensor.detach().cpu().contiguous()
        exponents = [coupling.shift.weight_exponents for coupling in self.couplings]
        facts: dict[str, Any] = {"config": json.loads(self.config.to_json()), "weight_exponents": exponents}
        if self.config.architecture == 2:
            facts["carriers"] = self.carriers
            facts["lift_fraction_bits"] = [lift.shift.fraction for lift in self.lifts]
            facts["shift_scales"] = [[c.shift.in_exponents, c.shift.out_exponent] for c in self.couplings]
        return tensors, facts

    @classmethod
    def from_quantized_state(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any],
                             key: bytes) -> ExactINN:
        config = NetworkConfig.from_json(json.dumps(facts["config"]))
        model = cls(config, key)
        couplings = model.couplings
        if len(facts["weight_exponents"]) != len(couplings):
            raise NetworkError("model file does not match its architecture (coupling count)")
        if config.architecture == 2:
            model._load_v2_facts(tensors, facts)
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

    def _load_v2_facts(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
        """Carriers, lifting weights and shift scales of an architecture-2 model file."""
        try:
            self._set_carriers(np.asarray(facts["carriers"], dtype=np.int64))
            scales, bits = facts["shift_scales"], facts["lift_fraction_bits"]
            if len(scales) != len(self.couplings) or len(bits) != len(self.lifts):
                raise NetworkError("model file does not match its architecture (scales)")
            for coupling, (in_exponents, out_exponent) in zip(self.couplings, scales):
                if len(in_exponents) != len(coupling.shift.in_scale):
                    raise NetworkError("model file does not match its architecture (scales)")
                coupling.shift.set_scales([int(e) for e in in_exponents], int(out_exponent))
            for i, (lift, fraction) in enumerate(zip(self.lifts, bits)):
                weight, bias = tensors.get(f"lift{i}.qweight"), tensors.get(f"lift{i}.qbias")
                if weight is None or bias is None or weight.shape != lift.shift.weight.shape \
                        or bias.shape != lift.shift.bias.shape or weight.dtype != torch.int64:
                    raise NetworkError(f"model file is missing or has malformed weights for lifting step {i}")
                lift.shift.load_frozen(weight.clone(), bias.clone(), int(fraction))
        except NetworkError:
            raise  # already says what is wrong (it is a ValueError too)
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkError(f"model file does not match its architecture ({type(exc).__name__})") from None
