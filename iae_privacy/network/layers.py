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
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["KeyedMixing", "AdditiveCoupling", "QuantizedMLP", "LinearShift", "TriangularLift", "exact_matmul"]

Q = 127
"""Activations and weights of the shift network are integers in [-Q, Q] (8 bits)."""
ACTIVATION_BITS = 4
"""An activation integer h stands for the real value h / 2**ACTIVATION_BITS."""
BIAS_MAX = 1 << 22
MAX_WEIGHT_EXPONENT = 15
EXACT_SUM_BITS = 51
"""A fixed-point product's partial sums stay below 2**EXACT_SUM_BITS: exact in float64, any order."""
MAX_FRACTION_BITS = 30


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


class KeyedMixing(nn.Module):
    r"""A keyed unimodular integer map: permute, then mix, :math:`y = (I + M) P x`.

    :math:`P` permutes the features. :math:`M` has entries in :math:`\{-1, 0, +1\}`, nonzero only
    from a set of *source* features into a disjoint set of *target* features, so :math:`M^2 = 0`
    and :math:`(I + M)^{-1} = I - M`: the inverse is :math:`x = P^\top (I - M) y`. (A general
    unit-triangular inverse can have exponentially large entries; this one cannot, so errors in an
    approximate latent do not compound.) With targets after sources, :math:`I + M` is lower
    triangular with unit diagonal. Both directions are one product with a matrix of entries in
    :math:`\{-1, 0, +1\}`, exact in float64 on integers whose bounds (:meth:`bound`) stay below
    :math:`2^{52}`.
    """

    def __init__(self, order: np.ndarray, mixing: np.ndarray) -> None:
        super().__init__()
        d = len(order)
        offdiagonal = mixing - np.eye(d)
        if np.any(offdiagonal @ offdiagonal):
            raise ValueError("mixing matrix must satisfy M @ M == 0")
        permutation = np.eye(d)[order]  # (P x)_i = x_order[i]
        forward = mixing @ permutation
        inverse = permutation.T @ (np.eye(d) - offdiagonal)
        # derived from the key at load time: never saved with the weights
        self.register_buffer("forward_t", torch.as_tensor(forward.T.copy()), persistent=False)
        self.register_buffer("inverse_t", torch.as_tensor(inverse.T.copy()), persistent=False)
        self._order = np.asarray(order)
        self._abs_offdiagonal = np.abs(offdiagonal)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return x @ self.forward_t.to(x.dtype)

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return y @ self.inverse_t.to(y.dtype)

    def bound(self, b: np.ndarray) -> np.ndarray:
        permuted = b[self._order]
        return permuted + self._abs_offdiagonal @ permuted


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

    def set_scales(self, in_exponents: list[int], out_exponent: int) -> None:
        """Input and output scales from the data (architecture 2), not from the worst-case bounds:
        the 8-bit inputs then span the values that occur. Inputs are clamped into 8 bits and the
        output into ``out_max`` whatever the scales, so the exact range does not depend on them."""
        if self.frozen:
            raise ValueError("scales are set before freezing")
        self.in_scale.copy_(torch.as_tensor([2.0**e for e in in_exponents], dtype=torch.float64))
        self.out_exponent = int(out_exponent)

    @property
    def in_exponents(self) -> list[int]:
        return [int(round(math.log2(float(v)))) for v in self.in_scale]

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

    def _operands(self, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        """Per layer, as ``dtype`` on ``device`` (converted once): weight and bias with the layer's
        power-of-two rescale folded in, and whether the result needs rounding down.

        A layer computes round((h W^T + b) 2**e) = floor(h (W 2**e)^T + (b + 2**(-e-1)) 2**e) for
        e < 0. Folding 2**e into the operands keeps every product and partial sum a multiple of
        2**e below the partial-sum bound times 2**e: exactly representable, so still exact.
        """
        cache = self.__dict__.setdefault("_operand_cache", {})
        if (dtype, device) not in cache:
            operands = []
            for i, exponent in enumerate(self._exponents()):
                bias = getattr(self, f"qbias{i}").to(torch.float64)
                if exponent < 0:
                    bias = bias + 2.0 ** (-exponent - 1)
                scale = 2.0**exponent
                weight_t = (getattr(self, f"qweight{i}").to(torch.float64) * scale).T.contiguous()
                bias = bias * scale
                # the shift's outputs padded with zero columns to a multiple of 16: a CPU product
                # 64 -> 8 wide took 1.4 ms per 16,384 rows, 64 -> 16 0.5 ms; sliced off at the end
                pad = -weight_t.shape[1] % 16 if i == len(self.linears) - 1 else 0
                weight_t = torch.nn.functional.pad(weight_t, (0, pad))
                bias = torch.nn.functional.pad(bias, (0, pad))
                operands.append((weight_t.to(device, dtype), bias.to(device, dtype), exponent < 0))
            cache[(dtype, device)] = operands
        return cache[(dtype, device)]

    def _int8_operands(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Per layer (converted once): int8 weight transposed, int32 bias plus rounding addend,
        and the exponent e of the rescale (an arithmetic shift right by -e when e < 0)."""
        cache = self.__dict__.setdefault("_operand_cache", {})
        if ("int8", device) not in cache:
            operands = []
            for i, exponent in enumerate(self._exponents()):
                bias = getattr(self, f"qbias{i}").to(torch.int64)
                if exponent < 0:
                    bias = bias + (1 << (-exponent - 1))
                weight_t = _canonical(getattr(self, f"qweight{i}").T.to(device))
                operands.append((weight_t, bias.to(device, torch.int32), exponent))
            cache[("int8", device)] = operands
        return cache[("int8", device)]

    def backend_for(self, device: torch.device) -> str:
        """int8 matrix products where they run exactly and faster than the float program (measured
        once on this machine's CPU), else the float program. Every program gives the same bits."""
        float_backend = "float32" if self.compute_dtype == torch.float32 else "float64"
        if (device.type == "cpu" and self.partial_sum_bound < 1 << 31 and int8_matmul_is_exact()
                and int8_matmul_is_faster(self.compute_dtype)):
            return "int8"
        return float_backend

    def exact(self, x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """The shift for integer-valued float64 inputs, integer-valued float64 out.

        Three programs compute the same integers: ``int8`` (integer products, int32 sums, shifts),
        and ``float32``/``float64`` (exact float arithmetic on integers); all give identical bits
        on every device.
        """
        backend = backend or self.backend_for(x.device)
        h = (x * self.in_scale).add_(0.5).floor_().clamp_(-Q, Q)
        n = len(self.linears)
        if backend == "int8":
            h = h.to(torch.int8)
            for i, (weight_t, bias, exponent) in enumerate(self._int8_operands(x.device)):
                a = torch._int_mm(_canonical(h), weight_t).add_(bias)
                if exponent < 0:
                    a = a.bitwise_right_shift_(-exponent)  # floor division by 2**-exponent
                if i < n - 1:
                    h = a.clamp_(0, Q).to(torch.int8)
                else:
                    t = a.to(torch.int64).bitwise_left_shift_(max(exponent, 0))
                    return t.clamp_(-self.out_max, self.out_max).to(torch.float64)
        dtype = {"float32": torch.float32, "float64": torch.float64}[backend]
        h = h.to(dtype)
        outputs = self.linears[-1].out_features
        with exact_matmul(x.device):
            for i, (weight_t, bias, rounds) in enumerate(self._operands(dtype, x.device)):
                # mm + add_ rather than addmm: addmm's copy of the broadcast bias costs more
                # than the product itself on a CPU; into a reused buffer (a new 4 MiB output per
                # product cost as much as a 7 -> 64 product itself)
                a = torch.mm(h, weight_t, out=_scratch(i % 2, (len(h), weight_t.shape[1]), dtype, x.device))
                a.add_(bias)
                if rounds:
                    a = a.floor_()
                if i < n - 1:
                    h = a.clamp_(0, Q)
                else:
                    return a[:, :outputs].clamp(-self.out_max, self.out_max).to(torch.float64)
        raise AssertionError("unreachable")


_SCRATCH = threading.local()
SCRATCH_VALUES = 1 << 21
"""The largest buffer kept per thread (values): a chunk of 16,384 rows, 128 wide."""


def _scratch(slot: int, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-thread buffer for one of the two alternating activations of the float program
    (contents undefined); kept between calls, so equal-sized chunks allocate nothing."""
    size = shape[0] * shape[1]
    if size > SCRATCH_VALUES:  # a call on a whole table at once: nothing worth keeping
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (slot, dtype, device)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < size:
        buffer = buffers[key] = torch.empty(size, dtype=dtype, device=device)
    return buffer[:size].view(shape)


def _canonical(t: torch.Tensor) -> torch.Tensor:
    """``t`` with row-major strides. A (rows, 1) tensor may carry strides like (1, 1) and still
    count as contiguous; PyTorch's CPU int8 product then reads the wrong memory (seen in 2.13)."""
    if t.stride() == (t.shape[1], 1):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


_INT8_CHECK: list[bool] = []


def int8_matmul_is_exact() -> bool:
    """Whether this PyTorch has a CPU int8 matrix product with exact int32 sums (checked once)."""
    if not _INT8_CHECK:
        ok = hasattr(torch, "_int_mm")
        if ok:
            generator = torch.Generator().manual_seed(0)
            a = torch.randint(-Q, Q + 1, (33, 70), dtype=torch.int8, generator=generator)
            b = torch.randint(-Q, Q + 1, (70, 9), dtype=torch.int8, generator=generator)
            # one column: the shape whose degenerate strides once broke it (see _canonical)
            pairs = [(a, b), (a[:, :1], _canonical(b[:1])), (a[:, :1], _canonical(b[:1, :1]))]
            try:
                ok = all(torch.equal(torch._int_mm(_canonical(x), _canonical(y)).to(torch.int64),
                                     x.to(torch.int64) @ y.to(torch.int64)) for x, y in pairs)
            except RuntimeError:
                ok = False
        _INT8_CHECK.append(ok)
    return _INT8_CHECK[0]


_INT8_FASTER: dict[torch.dtype, bool] = {}


def int8_matmul_is_faster(dtype: torch.dtype) -> bool:
    """Whether this CPU's int8 product beats ``dtype``'s on a layer-sized product (timed once).

    It depends on the CPU and the PyTorch build: int8 was 4x faster than float32 on one machine and
    25x slower on another (PyTorch 2.13's CPU build, AMD EPYC, no VNNI kernel), so it is measured.
    Exactness does not depend on the choice; only speed does.
    """
    if dtype not in _INT8_FASTER:
        import time

        generator = torch.Generator().manual_seed(0)
        a = torch.randint(-Q, Q + 1, (4096, 64), dtype=torch.int8, generator=generator)
        b = torch.randint(-Q, Q + 1, (64, 64), dtype=torch.int8, generator=generator)
        af, bf = a.to(dtype), b.to(dtype)

        def best(fn) -> float:
            fn()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return min(times)

        _INT8_FASTER[dtype] = best(lambda: torch._int_mm(a, b)) < best(lambda: torch.mm(af, bf))
    return _INT8_FASTER[dtype]


class AdditiveCoupling(nn.Module):
    r"""Integer additive coupling: :math:`y_a = x_a`, :math:`y_b = x_b + T(x_a)`.

    The inverse :math:`x_b = y_b - T(y_a)` is exact for any :math:`T` computed bit-identically
    both ways, which :class:`QuantizedMLP` and :class:`LinearShift` guarantee. The first ``split``
    features are :math:`x_a`, or, with ``reverse``, the last ones (the first ``split`` are shifted).
    """

    def __init__(self, split: int, shift: nn.Module, reverse: bool = False) -> None:
        super().__init__()
        self.split = split
        self.shift = shift
        self.reverse = reverse

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning part :math:`x_a`, shifted part :math:`x_b`)."""
        first, last = x[..., : self.split], x[..., self.split :]
        return (last, first) if self.reverse else (first, last)

    def _t(self, x_a: torch.Tensor, exact: bool) -> torch.Tensor:
        return self.shift.exact(x_a) if exact else self.shift.relaxed(x_a)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return self._shifted(x, +1, exact)

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        return self._shifted(y, -1, exact)

    def _shifted(self, x: torch.Tensor, sign: int, exact: bool) -> torch.Tensor:
        x_a, x_b = self.parts(x)
        if not exact:  # keep the graph simple for autograd
            y_b = x_b + sign * self._t(x_a, exact)
            return torch.cat([y_b, x_a] if self.reverse else [x_a, y_b], dim=-1)
        t = self._t(x_a, exact)
        y = x.clone()
        (y[..., : self.split] if self.reverse else y[..., self.split :]).add_(t, alpha=sign)
        return y

    def bound(self, b: np.ndarray) -> np.ndarray:
        out = b.copy()
        if self.reverse:
            out[: self.split] += self.shift.out_max
        else:
            out[self.split :] += self.shift.out_max
        return out


class LinearShift(nn.Module):
    r"""The shift of a *lifting step*: an affine map in fixed point, :math:`T(x) = \lfloor
    (Q x + c) 2^{-F} + \tfrac12 \rfloor` clamped to ``out_max``, with integer :math:`Q, c`.

    Inside an :class:`AdditiveCoupling` this is the integer lifting of a block-triangular linear
    map (Daubechies and Sweldens 1998; Hao and Shi 2001): exactly invertible, whatever the
    weights. :math:`F` is chosen at :meth:`freeze` from the weights and the input bound so that
    every partial sum of :math:`Q x + c` stays below :math:`2^{51}`: exact in float64 in any
    summation order, on any device (float64 products never use TF32).

    References:
        Daubechies and Sweldens, "Factoring Wavelet Transforms into Lifting Steps", 1998.
        Hao and Shi, "Matrix Factorizations for Reversible Integer Mapping", IEEE TSP 2001.
    """

    def __init__(self, in_bound: np.ndarray, out_features: int, out_max: int, mask: np.ndarray | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, len(in_bound), dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch.float32))
        # which weights may be nonzero (a triangular lift's); all by default
        ones = np.ones((out_features, len(in_bound)))
        self.register_buffer("mask", torch.as_tensor(ones if mask is None else mask, dtype=torch.float32),
                             persistent=False)
        self.in_bound = np.asarray(in_bound, dtype=np.float64)
        self.out_max = out_max
        self.frozen = False

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def relaxed(self, x: torch.Tensor) -> torch.Tensor:
        t = x @ self.masked_weight().T.to(x.dtype) + self.bias.to(x.dtype)
        return torch.clamp(ste_round(t), -self.out_max, self.out_max)

    def relaxed_row(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Output ``i`` of :meth:`relaxed` alone (a triangular lift's inverse needs one at a time)."""
        t = x @ self.masked_weight()[i].to(x.dtype) + self.bias[i].to(x.dtype)
        return torch.clamp(ste_round(t), -self.out_max, self.out_max)

    def fraction_bits(self) -> int:
        """The largest F (at most MAX_FRACTION_BITS) whose partial sums stay below 2**EXACT_SUM_BITS."""
        w = self.masked_weight().detach().to(torch.float64).abs().numpy()
        b = self.bias.detach().to(torch.float64).abs().numpy()
        # |round(w 2^F)| <= |w| 2^F + 1/2; the rounding addend 2^(F-1) is counted as one more unit
        peak = float(((w + 1.0) @ self.in_bound + b + 1.0).max()) if w.size else 1.0
        return int(min(MAX_FRACTION_BITS, math.floor(EXACT_SUM_BITS - math.log2(max(peak, 1.0)))))

    def freeze(self) -> None:
        bits = self.fraction_bits()
        with torch.no_grad():
            scale = 2.0**bits
            q = torch.floor(self.masked_weight().to(torch.float64) * scale + 0.5)
            c = torch.floor(self.bias.to(torch.float64) * scale + 0.5)
        self.load_frozen(q.to(torch.int64), c.to(torch.int64), bits)

    def load_frozen(self, qweight: torch.Tensor, qbias: torch.Tensor, bits: int) -> None:
        """Mark as frozen with integer weights (from :meth:`freeze` or a model file)."""
        self.register_buffer("qweight", qweight)
        self.register_buffer("qbias", qbias)
        self.fraction = int(bits)
        peak = float((qweight.abs().to(torch.float64).numpy() @ self.in_bound
                      + qbias.abs().to(torch.float64).numpy()).max()) if qweight.numel() else 0.0
        if peak + 2.0 ** max(self.fraction - 1, 0) >= 2.0**EXACT_SUM_BITS:
            raise ValueError("lifting weights too large for the exact range")
        self.frozen = True

    def quantized_tensors(self) -> dict[str, torch.Tensor]:
        return {"qweight": self.qweight, "qbias": self.qbias}

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """For integer-valued float64 inputs: every product and partial sum is an integer below
        2**51, so the sum is exact whatever order a BLAS or GPU picks; 2**-F and floor are exact."""
        s = x @ self.qweight.to(x.device, torch.float64).T + self.qbias.to(x.device, torch.float64)
        return self._rounded(s)

    def exact_row(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Output ``i`` of :meth:`exact` alone, bit for bit the same (its sum is exact in any order)."""
        s = x @ self.qweight[i].to(x.device, torch.float64) + self.qbias[i].to(x.device, torch.float64)
        return self._rounded(s)

    def _rounded(self, s: torch.Tensor) -> torch.Tensor:
        if self.fraction > 0:
            s = s.add_(2.0 ** (self.fraction - 1)).mul_(2.0**-self.fraction).floor_()
        else:
            s = s.mul_(2.0**-self.fraction)
        return s.clamp_(-self.out_max, self.out_max)


class TriangularLift(nn.Module):
    r"""A lifting step inside one group of features: :math:`y = x + T(x)` on the first ``size``
    features, with :math:`T` a :class:`LinearShift` whose weights are strictly upper (or lower)
    triangular.

    Output :math:`i` depends on inputs :math:`j > i` only (upper), so the inverse solves for
    :math:`x` one feature at a time, from the last (lower: from the first), each with the very
    sum the forward pass computed: exact. Two of them, lower after upper, make any matrix
    :math:`L U` with unit diagonals; fitted to the LU factors of a change of basis, they turn the
    lifting steps' coordinates into scaled principal components (see ``ExactINN.fitted``).
    """

    def __init__(self, in_bound: np.ndarray, upper: bool, out_max: int) -> None:
        super().__init__()
        size = len(in_bound)
        mask = np.triu(np.ones((size, size)), 1) if upper else np.tril(np.ones((size, size)), -1)
        self.shift = LinearShift(in_bound, size, out_max, mask)
        self.size = size
        self.upper = upper

    def _order(self) -> range:
        return range(self.size - 1, -1, -1) if self.upper else range(self.size)

    def forward(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        group = x[..., : self.size]
        t = self.shift.exact(group) if exact else self.shift.relaxed(group)
        if not exact:
            return torch.cat([group + t, x[..., self.size :]], dim=-1)
        y = x.clone()
        y[..., : self.size].add_(t)
        return y

    def inverse(self, y: torch.Tensor, exact: bool = True) -> torch.Tensor:
        if not exact:  # column by column, without in-place writes (autograd)
            columns = list(y[..., : self.size].unbind(-1))
            for i in self._order():
                current = torch.stack(columns, dim=-1)
                columns[i] = columns[i] - self.shift.relaxed_row(current, i)
            return torch.cat([torch.stack(columns, dim=-1), y[..., self.size :]], dim=-1)
        x = y.clone()
        group = x[..., : self.size]
        for i in self._order():
            # the weights of row i are zero for column i and the columns not yet solved
            group[..., i].sub_(self.shift.exact_row(group, i))
        return x

    def bound(self, b: np.ndarray) -> np.ndarray:
        out = b.copy()
        out[: self.size] += self.shift.out_max
        return out
