"""The network's promise: decode(encode(x)) == x bit for bit, for any weights, batch, thread count,
compute precision and device; keyed; never overflowing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from iae_privacy.network import ExactINN, NetworkConfig, NetworkError
from iae_privacy.network.layers import int8_matmul_is_exact

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def random_weights(model: ExactINN, seed: int, scale: float) -> ExactINN:
    """Any weights at all: exactness must not depend on training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.freeze()


def random_codes(levels: tuple[int, ...], rows: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    columns = [rng.integers(0, level, rows) for level in levels]
    codes = np.stack(columns, axis=1) if rows else np.zeros((0, len(levels)), dtype=np.int64)
    # the extremes of every feature, always
    if rows >= 2:
        codes[0] = 0
        codes[1] = np.array(levels) - 1
    return torch.as_tensor(codes, dtype=torch.int64)


@st.composite
def network_and_codes(draw):
    levels = tuple(draw(st.lists(st.sampled_from([1, 2, 3, 7, 255, 4096, 1 << 20]), min_size=1, max_size=12)))
    config = NetworkConfig(
        levels=levels,
        public_dims=draw(st.integers(1, len(levels))),
        blocks=draw(st.integers(1, 5)),
        hidden=tuple(draw(st.lists(st.sampled_from([1, 8, 64]), min_size=1, max_size=2))),
    )
    model = random_weights(ExactINN(config, KEY), draw(st.integers(0, 2**16)),
                           draw(st.sampled_from([0.01, 1.0, 100.0])))
    return model, random_codes(levels, draw(st.integers(0, 300)), draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(network_and_codes())
def test_restore_is_bit_exact_for_any_weights_and_inputs(case):
    model, x = case
    z = model.encode(x)
    assert z.dtype == torch.int64
    assert torch.equal(model.decode(z), x)


@settings(max_examples=40, deadline=None)
@given(network_and_codes(), st.data())
def test_latent_does_not_depend_on_batch_size(case, data):
    model, x = case
    whole = model.encode(x)
    cut = data.draw(st.integers(0, len(x)))
    assert torch.equal(torch.cat([model.encode(x[:cut]), model.encode(x[cut:])]), whole)


def _trained_like(levels=(4096, 2, 19, 67, 1469, 5, 300, 2), seed=0) -> ExactINN:
    return random_weights(ExactINN(NetworkConfig(levels=levels, public_dims=4), KEY), seed, 0.3)


def test_latent_does_not_depend_on_thread_count():
    model = _trained_like()
    x = random_codes(model.config.levels, 40_000, 1)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.encode(x)
        torch.set_num_threads(max(2, saved))
        many = model.encode(x)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, many)
    assert torch.equal(model.decode(one), x)


@pytest.mark.parametrize("seed, scale", [(2, 0.3), (3, 30.0), (4, 0.001)])
def test_int8_float32_and_float64_shift_programs_agree_bit_for_bit(seed, scale):
    model = random_weights(ExactINN(NetworkConfig(levels=(4096, 2, 19, 67, 1469, 5, 300, 2), public_dims=4),
                                    KEY), seed, scale)
    x = random_codes(model.config.levels, 5_000, seed).to(torch.float64) * 3 - 2000
    for coupling in model.couplings:
        shift = coupling.shift
        assert shift.compute_dtype == torch.float32  # 64 wide: partial sums stay below 2**24
        x_a = x[:, : coupling.split]
        reference = shift.exact(x_a, "float64")
        assert torch.equal(shift.exact(x_a, "float32"), reference)
        if int8_matmul_is_exact():
            assert torch.equal(shift.exact(x_a, "int8"), reference)


def test_wide_shift_networks_switch_to_float64_and_stay_exact():
    config = NetworkConfig(levels=(4096,) * 6, public_dims=3, blocks=2, hidden=(2048,))
    model = random_weights(ExactINN(config, KEY), 3, 1.0)
    assert all(c.shift.partial_sum_bound >= 1 << 24 for c in model.couplings)
    assert all(c.shift.compute_dtype == torch.float64 for c in model.couplings)
    x = random_codes(config.levels, 2_000, 3)
    assert torch.equal(model.decode(model.encode(x)), x)


def test_two_keys_give_two_latent_tables_and_the_wrong_key_does_not_decode():
    model = _trained_like()
    tensors, facts = model.quantized_state()
    same_weights_other_key = ExactINN.from_quantized_state(tensors, facts, OTHER_KEY)
    x = random_codes(model.config.levels, 2_000, 4)
    z = model.encode(x)
    z_other = same_weights_other_key.encode(x)
    assert (z != z_other).any(dim=1).float().mean() > 0.99
    try:
        wrong = same_weights_other_key.decode(z)
    except NetworkError:
        return  # refused as out of range: also not a decode
    assert (wrong != x).any(dim=1).float().mean() > 0.99


def test_saved_weights_hold_nothing_derived_from_the_key():
    model = _trained_like()
    tensors, facts = model.quantized_state()
    assert all(".qweight" in name or ".qbias" in name for name in tensors)
    assert set(facts) == {"config", "weight_exponents", "carriers", "lift_fraction_bits", "shift_scales"}
    assert all(t.dtype in (torch.int8, torch.int32) for n, t in tensors.items() if n.startswith("coupling"))
    assert all(t.dtype == torch.int64 for n, t in tensors.items() if n.startswith("lift"))
    # fitted to the same rows under two keys: the same lifting steps, carriers and clamps
    config = NetworkConfig(levels=(4096, 2, 19, 67, 1469, 5, 300, 2), public_dims=3)
    x = random_codes(config.levels, 4_000, 11)
    (ta, fa), (tb, fb) = (ExactINN.fitted(config, key, x).freeze().quantized_state() for key in (KEY, OTHER_KEY))
    assert fa["carriers"] == fb["carriers"] and fa["config"] == fb["config"] and fa["config"]["lift_bits"]
    assert all(torch.equal(ta[n], tb[n]) for n in ta if n.startswith("lift"))


def test_models_sealed_before_architecture_2_encode_and_decode_as_before():
    """A model file written before architectures had a number is architecture 1, and its latent is
    the one the code of that time computed (digest taken with it, same weights and rows)."""
    levels = (4096, 2, 19, 67, 1469, 5, 300, 2)
    facts_then = {"levels": list(levels), "public_dims": 4, "blocks": 4, "hidden": [64, 64], "mixing_terms": 2}
    config = NetworkConfig.from_json(json.dumps(facts_then))
    assert config.architecture == 1
    model = ExactINN(config, KEY)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.freeze()
    rng = np.random.default_rng(3)
    x = torch.as_tensor(np.stack([rng.integers(0, level, 3000) for level in levels], 1))
    z = model.encode(x)
    assert hashlib.sha256(z.numpy().tobytes()).hexdigest()[:16] == "3ae69fcfbeceb9d0"
    tensors, facts = model.quantized_state()
    assert set(facts) == {"config", "weight_exponents"}
    assert torch.equal(ExactINN.from_quantized_state(tensors, facts, KEY).decode(z), x)


def test_weights_round_trip_through_safetensors_and_decode_the_same():
    model = _trained_like()
    tensors, facts = model.quantized_state()
    loaded = ExactINN.from_quantized_state(load_safetensors(save_safetensors(tensors)), facts, KEY)
    x = random_codes(model.config.levels, 3_000, 5)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.decode(model.encode(x)), x)


def test_malformed_lifting_steps_and_carriers_are_refused():
    tensors, facts = _trained_like().quantized_state()
    with pytest.raises(NetworkError, match="malformed weights for lifting step 0"):
        ExactINN.from_quantized_state({n: t for n, t in tensors.items() if n != "lift0.qweight"}, facts, KEY)
    with pytest.raises(NetworkError, match="carrier order"):
        ExactINN.from_quantized_state(tensors, {**facts, "carriers": [0] * len(facts["carriers"])}, KEY)
    with pytest.raises(NetworkError, match="does not match its architecture"):
        ExactINN.from_quantized_state(tensors, {k: v for k, v in facts.items() if k != "shift_scales"}, KEY)


def test_malformed_weights_are_refused():
    tensors, facts = _trained_like().quantized_state()
    del tensors["coupling0.qweight0"]
    with pytest.raises(NetworkError, match="malformed weights for coupling 0"):
        ExactINN.from_quantized_state(tensors, facts, KEY)


def test_extreme_magnitudes_stay_inside_the_exact_range():
    config = NetworkConfig(levels=(1 << 20,) * 16, public_dims=8, blocks=6)
    model = random_weights(ExactINN(config, KEY), 4, 1000.0)
    assert model.output_bound.max() < 2**52
    x = random_codes(config.levels, 1_000, 6)
    z = model.encode(x)
    assert z.abs().max() <= model.output_bound.max()
    assert torch.equal(model.decode(z), x)


def test_inputs_outside_the_levels_are_refused():
    model = _trained_like()
    x = random_codes(model.config.levels, 10, 7)
    x[3, 1] = 2
    with pytest.raises(NetworkError, match=r"feature 1 has values outside \[0, 2\)"):
        model.encode(x)
    with pytest.raises(NetworkError, match="int64 matrix with 8 columns"):
        model.encode(x.to(torch.float32))


def test_latents_far_outside_the_range_are_refused():
    model = _trained_like()
    z = model.encode(random_codes(model.config.levels, 10, 8))
    z[0, 0] = 2**60
    with pytest.raises(NetworkError, match="outside the network's range"):
        model.decode(z)


def test_unfrozen_network_refuses_the_exact_path():
    model = ExactINN(NetworkConfig(levels=(5, 5), public_dims=1), KEY)
    with pytest.raises(NetworkError, match="freeze"):
        model.encode(torch.zeros((1, 2), dtype=torch.int64))


def test_architecture_that_could_leave_the_exact_range_is_refused():
    with pytest.raises(NetworkError, match="exact range"):
        ExactINN(NetworkConfig(levels=(1 << 40,) * 64, public_dims=1, blocks=20), KEY)


def test_short_keys_are_refused():
    with pytest.raises(NetworkError, match="at least 16 bytes"):
        ExactINN(NetworkConfig(levels=(5, 5), public_dims=1), b"short")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_encode_on_gpu_decodes_on_cpu_bit_for_bit():
    model = _trained_like()
    x = random_codes(model.config.levels, 100_000, 9)
    z_gpu = model.to("cuda").encode(x.to("cuda")).cpu()
    model = model.cpu()
    assert torch.equal(z_gpu, model.encode(x))
    assert torch.equal(model.decode(z_gpu), x)
    z_cpu = model.encode(x)
    assert torch.equal(model.to("cuda").decode(z_cpu.to("cuda")).cpu(), x)


def test_one_unit_layers_are_exact_on_every_backend():
    """Regression: PyTorch's CPU int8 product misread (rows, 1) operands with degenerate strides."""
    config = NetworkConfig(levels=(1, 1, 2, 7), public_dims=1, blocks=2, hidden=(1,))
    model = random_weights(ExactINN(config, KEY), 0, 1.0)
    x = random_codes(config.levels, 50, 0)
    assert torch.equal(model.decode(model.encode(x)), x)
    h = x.to(torch.float64)[:, :2] * 64 - 100
    for coupling in model.couplings:
        reference = coupling.shift.exact(h[:, : coupling.split], "float64")
        assert torch.equal(coupling.shift.exact(h[:, : coupling.split], "float32"), reference)
        if int8_matmul_is_exact():
            assert torch.equal(coupling.shift.exact(h[:, : coupling.split], "int8"), reference)
