r"""Exactly invertible layers on integer vectors, each with a relaxed float twin for training.

Every layer answers one protocol: ``forward(x, exact)`` and ``inverse(y, exact)``. With
``exact=True`` the input is an ``int64`` tensor and the output is computed with arithmetic that
gives the same bits on any device, thread count or batch size; with ``exact=False`` the input is
a float tensor and the layer is the straight-through relaxation used for training. A network is a
sequence of layers; its inverse is the reversed sequence of inverses.

References:
    Hoogeboom et al., "Integer Discrete Flows and Lossless Compression", NeurIPS 2019.
    van den Berg et al., "IDF++: Analyzing and Improving Integer Discrete Flows", ICLR 2021.
    Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["Permutation", "UnitTriangularMixing", "AdditiveCoupling", "QuantizedMLP", "exact_matmul"]

Q = 127
"""Activations and weights of the shift network are integers in [-Q, Q] (8 bits)."""
ACTIVATION_BITS = 4
"""An activation integer h stands for the real value h / 2**ACTIVATION_BITS."""
BIAS_MAX = 1 << 22
MAX_WEIGHT_EXPONENT = 15


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer on the way forward; pass the gradient straight through."""
    return x + (torch.floor(x + 0.5) - x).detach()


@contextmanager
def exact_matmul(device: torch.device) -> Iterator[None]:
    """Make sure no reduced-precision mode (TF32) touches the exact path's matrix products.

    The exact path would survive TF32 (its operands are 8-bit integers), but it must not rely on it.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Permutation(nn.Module):
    """A fixed permutation of the features: :math:`y = x_{[\sigma]}`, :math:`x = y_{[\sigma^{-1}]}`."""

    def __init__(self, order: np.ndarray) -> None:
        super().__init__()
        order = torch.as_tensor(order, dtype=torch.long)
        # derived from the key at load time: never saved with the weights
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return x[..., self.order]

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return y[..., self.inverse_order]

    def bound(self, b: np.ndarray) -> np.ndarray:
        return b[self.order.cpu().numpy()]


class UnitTriangularMixing(nn.Module):
    r"""A unimodular integer map :math:`y = (I + M) x` whose inverse is :math:`x = (I - M) y`.

    :math:`M` has entries in :math:`\{-1, 0, +1\}`, nonzero only from a set of *source* features
    into a disjoint set of *target* features, so :math:`M^2 = 0`: sources pass unchanged, every
    target gets a few sources added or subtracted, and :math:`(I + M)^{-1} = I - M` exactly. (A
    general unit-triangular inverse can have exponentially large entries; this one cannot, so
    errors in an approximate latent do not compound.) With targets after sources the matrix is
    lower triangular with unit diagonal; alternating blocks put them the other way round.
    On integer values bounded below :math:`2^{53}` both directions are exact in float64.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        offdiagonal = matrix - np.eye(len(matrix))
        if np.any(offdiagonal @ offdiagonal):
            raise ValueError("mixing matrix must satisfy M @ M == 0")
        self.register_buffer("mixing", torch.as_tensor(offdiagonal.T.copy()), persistent=False)
        self._abs_mixing = np.abs(offdiagonal)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return x + x @ self.mixing.to(x.dtype)

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return y - y @ self.mixing.to(y.dtype)

    def bound(self, b: np.ndarray) -> np.ndarray:
        return b + self._abs_mixing @ b


class QuantizedMLP(nn.Module):
    r"""The shift network of a coupling: an MLP whose quantized form is an integer-exact program.

    Trained as floats with straight-through rounding; frozen into 8-bit weights :math:`W`,
    integer biases, and power-of-two rescaling. Each frozen layer computes
    :math:`a = hW^\top + b` with :math:`|h|, |W| \le 127`, so every partial sum is an integer of
    magnitude at most :math:`\text{fan\_in} \cdot 127^2 + |b|`. Below :math:`2^{24}` that is exact
    in float32, below :math:`2^{53}` in float64, in any summation order: the result is the same on
    every device and BLAS. Rescaling by a power of two and ``floor`` are exact too.
    """

    def __init__(self, in_scale: np.ndarray, out_features: int, hidden: tuple[int, ...],
                 out_exponent: int, out_max: int) -> None:
        super().__init__()
        sizes = [len(in_scale), *hidden, out_features]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        nn.init.zeros_(self.linears[-1].weight)  # a new coupling starts as the identity
        nn.init.zeros_(self.linears[-1].bias)
        self.register_buffer("in_scale", torch.as_tensor(in_scale, dtype=torch.float64))
        self.out_exponent = out_exponent
        self.out_max = out_max
        self.frozen = False

    # -- relaxed (training) ------------------------------------------------------------------

    @staticmethod
    def _weight_exponent(weight: torch.Tensor) -> int:
        """The largest k with max|W| * 2**k <= Q, so that W * 2**k rounds into 8 bits."""
        peak = float(weight.detach().abs().max())
        if peak == 0.0:
            return MAX_WEIGHT_EXPONENT
        return int(min(MAX_WEIGHT_EXPONENT, max(0, math.floor(math.log2(Q / peak)))))

    def relaxed(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.clamp(ste_round(x * self.in_scale.to(x.dtype)), -Q, Q)
        for i, linear in enumerate(self.linears):
            k = self._weight_exponent(linear.weight)
            weight = torch.clamp(ste_round(linear.weight * 2.0**k), -Q, Q)
            bias = torch.clamp(ste_round(linear.bias * 2.0 ** (k + ACTIVATION_BITS)), -BIAS_MAX, BIAS_MAX)
            a = h @ weight.T + bias
            if i < len(self.linears) - 1:
                h = torch.clamp(ste_round(a * 2.0**-k), 0, Q)
            else:
                exponent = self.out_exponent - ACTIVATION_BITS - k
                return torch.clamp(ste_round(a * 2.0**exponent), -self.out_max, self.out_max)
        raise AssertionError("unreachable")

    # -- frozen (exact) ------------------------------------------------------------------------

    def freeze(self) -> None:
        """Quantize the trained floats into the integer program the exact path runs."""
        self.weight_exponents = []
        for i, linear in enumerate(self.linears):
            k = self._weight_exponent(linear.weight)
            with torch.no_grad():
                w = torch.clamp(torch.floor(linear.weight * 2.0**k + 0.5), -Q, Q)
                b = torch.clamp(torch.floor(linear.bias * 2.0 ** (k + ACTIVATION_BITS) + 0.5),
                                -BIAS_MAX, BIAS_MAX)
            self.register_buffer(f"qweight{i}", w.to(torch.int8))
            self.register_buffer(f"qbias{i}", b.to(torch.int32))
            self.weight_exponents.append(k)
        self._set_compute_dtype()
        self.frozen = True

    def load_frozen(self, weight_exponents: list[int]) -> None:
        """Mark as frozen after ``qweight*``/``qbias*`` were loaded from a model file."""
        self.weight_exponents = list(weight_exponents)
        self._set_compute_dtype()
        self.frozen = True

    def _exponents(self) -> list[int]:
        """Each frozen layer rescales its integer sums by 2**exponent (rounding half up)."""
        last = self.out_exponent - ACTIVATION_BITS - self.weight_exponents[-1]
        return [-k for k in self.weight_exponents[:-1]] + [last]

    def _set_compute_dtype(self) -> None:
        # the largest partial sum any layer can reach, rounding addend included
        bound = max(
            linear.in_features * Q * Q + BIAS_MAX + (1 << (-e - 1) if e < 0 else 0)
            for linear, e in zip(self.linears, self._exponents())
        )
        self.partial_sum_bound = bound
        self.compute_dtype = torch.float32 if bound < 1 << 24 else torch.float64

    def quantized_tensors(self) -> dict[str, torch.Tensor]:
        return {n: t for n, t in self.named_buffers() if n.startswith("q")}

    @staticmethod
    def _round_scale_(a: torch.Tensor, exponent: int) -> torch.Tensor:
        """round(a * 2**exponent) in place, for integer-valued ``a``: add half, scale, floor.

        Each step is exact: the sum is an integer below the partial-sum bound, and scaling by a
        power of two only moves the exponent.
        """
        if exponent >= 0:
            return a.mul_(2.0**exponent)
        return a.add_(2.0 ** (-exponent - 1)).mul_(2.0**exponent).floor_()

    def _operands(self, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(bias, weight transposed) per layer as ``dtype`` on ``device``, converted once."""
        cache = self.__dict__.setdefault("_operand_cache", {})
        if (dtype, device) not in cache:
            cache[(dtype, device)] = [
                (getattr(self, f"qbias{i}").to(device, dtype),
                 getattr(self, f"qweight{i}").to(device, dtype).T.contiguous())
                for i in range(len(self.linears))
            ]
        return cache[(dtype, device)]

    def exact(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The shift for integer-valued float64 inputs, integer-valued float64 out; identical bits
        on every device."""
        dtype = dtype or self.compute_dtype
        h = (x * self.in_scale).add_(0.5).floor_().clamp_(-Q, Q).to(dtype)
        n = len(self.linears)
        with exact_matmul(x.device):
            for i, ((bias, weight_t), exponent) in enumerate(zip(self._operands(dtype, x.device),
                                                                 self._exponents())):
                a = self._round_scale_(torch.addmm(bias, h, weight_t), exponent)
                if i < n - 1:
                    h = a.clamp_(0, Q)
                else:
                    return a.clamp_(-self.out_max, self.out_max).to(torch.float64)
        raise AssertionError("unreachable")


class AdditiveCoupling(nn.Module):
    r"""Integer additive coupling: :math:`y_a = x_a`, :math:`y_b = x_b + T(x_a)`.

    The inverse :math:`x_b = y_b - T(y_a)` is exact for any :math:`T` computed bit-identically
    both ways, which :class:`QuantizedMLP` guarantees. The first ``split`` features are :math:`x_a`.
    """

    def __init__(self, split: int, shift: QuantizedMLP) -> None:
        super().__init__()
        self.split = split
        self.shift = shift

    def _t(self, x_a: torch.Tensor, exact: bool) -> torch.Tensor:
        return self.shift.exact(x_a) if exact else self.shift.relaxed(x_a)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        x_a, x_b = x[..., : self.split], x[..., self.split :]
        return torch.cat([x_a, x_b + self._t(x_a, exact)], dim=-1)

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        y_a, y_b = y[..., : self.split], y[..., self.split :]
        return torch.cat([y_a, y_b - self._t(y_a, exact)], dim=-1)

    def bound(self, b: np.ndarray) -> np.ndarray:
        out = b.copy()
        out[self.split :] += self.shift.out_max
        return out
