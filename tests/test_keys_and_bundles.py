"""Keys and sealed bundles: secrets come only from the keyring, and a sealed model opens whole or
not at all, with an error that says why."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import stat

import numpy as np
import pyarrow as pa
import pytest
import torch

from iae_privacy.codec import TableCodec
from iae_privacy.errors import IaeError
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import (
    Keyring,
    KeyringError,
    Purpose,
    RetiredKeyError,
    WrongKeyError,
)
from iae_privacy.model.bundle import BundleError, SealedModel, open_bundle, seal_bundle
from iae_privacy.model.pipeline import Model
from iae_privacy.model.registry import ModelRegistry, transform_key
from iae_privacy.network import ExactINN, NetworkConfig
from iae_privacy.network.train import TrainReport


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    return Keyring.init(tmp_path / "keys")


def small_model(keyring: Keyring, name: str = "m", version: int = 1) -> Model:
    table = pa.table({"age": pa.array(range(50), type=pa.int32()), "flag": [True, False] * 25})
    codec = TableCodec.fit(table)
    network = ExactINN(NetworkConfig(levels=tuple(codec.feature_levels), public_dims=1, hidden=(4,)),
                       transform_key(keyring, name, version))
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
    return Model(codec, network.freeze())


def saved(keyring: Keyring, tmp_path, name: str = "m", version: int = 1):
    registry = ModelRegistry(tmp_path / "models")
    model = small_model(keyring, name, version)
    return registry, model, registry.save(model, name, version, keyring, TrainReport("cpu", 50))


# -- keyring -------------------------------------------------------------------------------------


def test_init_makes_owner_only_files_and_reopens(tmp_path):
    keyring = Keyring.init(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    for name in ("keyring.json", "master-v1.key", "root.sealed"):
        assert stat.S_IMODE(os.stat(tmp_path / "keys" / name).st_mode) == 0o600
    again = Keyring.open(tmp_path / "keys")
    for purpose in Purpose:
        assert again.subkey(purpose) == keyring.subkey(purpose)


def test_subkeys_are_distinct_per_purpose_and_context(keyring):
    keys = {keyring.subkey(p) for p in Purpose} | {keyring.subkey(Purpose.TRANSFORM, context="m/v1"),
                                                   keyring.subkey(Purpose.TRANSFORM, context="m/v2")}
    assert len(keys) == len(Purpose) + 2 and all(len(k) == 32 for k in keys)


@pytest.mark.parametrize("target", ["keys", "keys/master-v1.key"])
def test_exposed_key_file_or_folder_is_refused_with_the_fix(tmp_path, keyring, target):
    path = tmp_path / target
    os.chmod(path, 0o755 if target == "keys" else 0o644)
    with pytest.raises(KeyringError) as error:
        Keyring.open(tmp_path / "keys")
    assert str(path) in str(error.value) and "chmod" in str(error.value)


def test_passphrase_wrapped_master_key(tmp_path, monkeypatch):
    monkeypatch.delenv("IAE_PASSPHRASE", raising=False)
    keyring = Keyring.init(tmp_path / "keys", passphrase="correct horse")
    assert len((tmp_path / "keys" / "master-v1.key").read_bytes()) != 32  # not the raw key
    with pytest.raises(KeyringError, match="wrong passphrase"):
        Keyring.open(tmp_path / "keys", passphrase=lambda: "battery staple")
    with pytest.raises(KeyringError, match="passphrase-protected"):
        Keyring.open(tmp_path / "keys")
    monkeypatch.setenv("IAE_PASSPHRASE", "correct horse")
    assert Keyring.open(tmp_path / "keys").subkey(Purpose.AUDIT) == keyring.subkey(Purpose.AUDIT)


def test_master_key_from_the_environment(tmp_path, monkeypatch):
    master = os.urandom(32)
    monkeypatch.setenv("IAE_MASTER_KEY_V1", base64.b64encode(master).decode())
    keyring = Keyring.init(tmp_path / "keys")
    assert not (tmp_path / "keys" / "master-v1.key").exists()
    assert Keyring.open(tmp_path / "keys").subkey(Purpose.WEIGHTS) == keyring.subkey(Purpose.WEIGHTS)
    monkeypatch.setenv("IAE_MASTER_KEY_V1", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(WrongKeyError):
        Keyring.open(tmp_path / "keys")
    monkeypatch.setenv("IAE_MASTER_KEY_V1", "not base64!")
    with pytest.raises(KeyringError, match="base64 of 32 bytes"):
        Keyring.open(tmp_path / "keys")


def test_key_material_is_never_in_repr(keyring):
    text = repr(keyring)
    for purpose in Purpose:
        key = keyring.subkey(purpose)
        assert key.hex() not in text and base64.b64encode(key).decode() not in text


# -- sealed bundles ------------------------------------------------------------------------------


def test_sealed_bundle_opens_to_the_same_model(tmp_path, keyring):
    registry, model, path = saved(keyring, tmp_path)
    loaded = registry.load("m", keyring)
    x = torch.as_tensor(model.codec.encode(pa.record_batch(
        {"age": pa.array(range(50), type=pa.int32()), "flag": [True, False] * 25})).features)
    assert torch.equal(loaded.model.network.encode(x), model.network.encode(x))
    assert loaded.model.codec.to_dict() == model.codec.to_dict()
    assert b"age" not in path.read_bytes()  # the profile is inside the ciphertext


def test_bundle_under_another_keyring_is_refused_as_wrong_key(tmp_path, keyring):
    registry, _, _ = saved(keyring, tmp_path)
    stranger = Keyring.init(tmp_path / "other-keys")
    with pytest.raises(WrongKeyError, match="does not open with this keyring's key version 1"):
        registry.load("m", stranger)


def test_every_single_byte_change_of_a_bundle_is_refused(tmp_path, keyring):
    _, _, path = saved(keyring, tmp_path)
    original = path.read_bytes()
    assert len(original) < 20_000
    opened_any = []
    for position in range(len(original)):
        for flip in (0x01, 0x20, 0xFF):
            data = bytearray(original)
            data[position] ^= flip
            path.write_bytes(bytes(data))
            try:
                open_bundle(path, keyring)
                opened_any.append((position, flip))
            except IaeError:
                pass
    path.write_bytes(original)
    assert opened_any == []
    open_bundle(path, keyring)


def test_truncated_bundle_and_foreign_file_are_refused(tmp_path, keyring):
    _, _, path = saved(keyring, tmp_path)
    data = path.read_bytes()
    for cut in (0, 5, 20, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(BundleError):
            open_bundle(path, keyring)
    path.write_bytes(b"PAR1 not a bundle")
    with pytest.raises(BundleError, match="is not an iae-privacy model bundle"):
        open_bundle(path, keyring)


def test_bundle_moved_to_another_name_or_version_is_refused(tmp_path, keyring):
    registry, _, path = saved(keyring, tmp_path)
    target = registry.path("other", 1)
    target.parent.mkdir(parents=True)
    shutil.copy(path, target)
    with pytest.raises(BundleError, match="holds model 'm' v1, not 'other' v1"):
        registry.load("other", keyring)


def _blocks(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, key envelope, segments) of a sealed file."""
    import struct

    at = len(b"IAE-BUNDLE\x01")
    (n,) = struct.unpack_from("<I", data, at)
    header = data[at + 4 : at + 4 + n]
    at += 4 + n
    (m,) = struct.unpack_from("<I", data, at)
    return header, data[at + 4 : at + 4 + m], data[at + 4 + m :]


def _assemble(header: bytes, envelope: bytes, segments: bytes) -> bytes:
    import struct

    return (b"IAE-BUNDLE\x01" + struct.pack("<I", len(header)) + header + struct.pack("<I", len(envelope))
            + envelope + segments)


def test_swapped_associated_data_does_not_open(tmp_path, keyring):
    """A key envelope from another model cannot open this payload, nor can it pass as its own."""
    _, _, path_a = saved(keyring, tmp_path, "a")
    _, _, path_b = saved(keyring, tmp_path, "b")
    header_a, _, segments_a = _blocks(path_a.read_bytes())
    header_b, envelope_b, _ = _blocks(path_b.read_bytes())
    path_a.write_bytes(_assemble(header_a, envelope_b, segments_a))  # b's data key, a's payload
    with pytest.raises(WrongKeyError):
        open_bundle(path_a, keyring)
    path_a.write_bytes(_assemble(header_b, envelope_b, segments_a))  # all of b's header, a's payload
    with pytest.raises(BundleError, match="fails authentication"):
        open_bundle(path_a, keyring)


def test_rotation_keeps_every_bundle_openable_and_retirement_refuses_stragglers(tmp_path, keyring):
    registry, _, path = saved(keyring, tmp_path, "m", 1)
    registry.save(small_model(keyring, "m", 2), "m", 2, keyring, TrainReport("cpu", 50))
    straggler = tmp_path / "copy-under-v1.iae"
    shutil.copy(path, straggler)
    tokens_before = keyring.subkey(Purpose.TOKENS)
    transform_before = transform_key(keyring, "m", 1)

    assert keyring.rotate() == 2
    assert registry.rewrap_all(keyring) == 2
    reopened = Keyring.open(keyring.folder)
    assert all(h.key_version == 2 for _, h in registry.headers())
    for spec in ("m:v1", "m:v2"):
        registry.load(spec, reopened)
    assert reopened.subkey(Purpose.TOKENS) == tokens_before  # joins keep working
    assert transform_key(reopened, "m", 1) == transform_before  # the latent does not change
    assert reopened.subkey(Purpose.WEIGHTS) != keyring.subkey(Purpose.WEIGHTS, version=1)

    reopened.retire(1)
    assert not (keyring.folder / "master-v1.key").exists()
    after = Keyring.open(keyring.folder)
    registry.load("m:v1", after)
    with pytest.raises(RetiredKeyError, match="sealed with key version 1, which is retired"):
        open_bundle(straggler, after)
    with pytest.raises(KeyringError, match="is the current one"):
        after.retire(2)


def test_saving_never_overwrites_a_version(tmp_path, keyring):
    registry, model, _ = saved(keyring, tmp_path)
    with pytest.raises(IaeError, match="never overwritten"):
        registry.save(model, "m", 1, keyring, TrainReport("cpu", 50))


def test_logs_never_carry_key_material(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    keyring = Keyring.init(tmp_path / "keys")
    registry, _, path = saved(keyring, tmp_path)
    keyring.rotate()
    registry.rewrap_all(keyring)
    registry.load("m", Keyring.open(keyring.folder))
    for bad in (b"\x00" * 3, b"IAE-BUNDLE\x01garbage"):
        path.write_bytes(bad)
        with pytest.raises(IaeError) as error:
            open_bundle(path, keyring)
        caplog.records.append(logging.makeLogRecord({"msg": str(error.value)}))
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    secrets = [keyring.subkey(p) for p in Purpose] + [keyring.master(v.number) for v in keyring.versions]
    secrets += [(keyring.folder / f"master-v{v}.key").read_bytes() for v in (1, 2)]
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in text


# -- primitives ------------------------------------------------------------------------------------


def test_aead_refuses_wrong_associated_data_and_keys():
    key = crypto.random_key()
    sealed = crypto.seal(key, b"secret", b"model=a")
    assert crypto.open_sealed(key, sealed, b"model=a") == b"secret"
    with pytest.raises(crypto.AuthenticationFailed):
        crypto.open_sealed(key, sealed, b"model=b")
    with pytest.raises(crypto.AuthenticationFailed):
        crypto.open_sealed(crypto.random_key(), sealed, b"model=a")


def test_sealed_model_payload_round_trips_metadata(tmp_path, keyring):
    tensors = {"w": torch.arange(6, dtype=torch.int8).reshape(2, 3)}
    path = tmp_path / "x.iae"
    seal_bundle(path, "x", 1, "2026-01-01T00:00:00+00:00", SealedModel(tensors, {"k": "välue"}), keyring)
    header, model = open_bundle(path, keyring, expect=("x", 1))
    assert torch.equal(model.tensors["w"], tensors["w"]) and model.metadata == {"k": "välue"}
    assert header.key_version == 1 and np.all(model.tensors["w"].numpy() == np.arange(6).reshape(2, 3))


def test_a_bundle_under_a_key_version_this_keyring_lacks_is_refused(tmp_path, keyring):
    keyring.rotate()
    _, _, path = saved(keyring, tmp_path)  # sealed under v2
    only_v1 = Keyring.init(tmp_path / "other-keys")
    with pytest.raises(KeyringError, match="sealed with key version 2, which this keyring does not have"):
        open_bundle(path, only_v1)


def test_registry_names_what_it_cannot_find(tmp_path, keyring):
    registry, _, _ = saved(keyring, tmp_path)
    with pytest.raises(IaeError, match="no model named 'ghost'"):
        registry.resolve("ghost")
    with pytest.raises(IaeError, match=r"model 'm' has no version 7 \(it has v1\)"):
        registry.resolve("m:v7")
    with pytest.raises(IaeError, match="is not allowed"):
        registry.resolve("../etc")


def test_processes_the_workspace_starts_inherit_no_key_material(monkeypatch):
    """The workspace's Prefect server and flow worker get this environment (iae_privacy.server)."""
    from iae_privacy.server import child_environment

    monkeypatch.setenv("IAE_PASSPHRASE", "correct horse")
    monkeypatch.setenv("IAE_MASTER_KEY_V1", "00" * 32)
    monkeypatch.setenv("IAE_MASTER_KEY_V12", "11" * 32)
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    monkeypatch.setenv("IAE_HOME", "/somewhere")
    env = child_environment(PREFECT_API_URL="http://127.0.0.1:1/api")
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api" and env["IAE_HOME"] == "/somewhere"
    assert not {"IAE_PASSPHRASE", "IAE_MASTER_KEY_V1", "IAE_MASTER_KEY_V12"} & set(env)
    assert "correct horse" not in env.values() and "00" * 32 not in env.values()


@pytest.mark.parametrize("bound", [1, 2, 3, 7, 64, 1_338, 65_537, 300_000])
def test_permute_below_is_a_keyed_permutation_of_its_domain_and_undone_by_its_inverse(bound):
    """Format 3's row ids (the position of each row among its part's): every position once, the
    key's own order, undone exactly; a value outside the domain is refused, not wrapped."""
    key, other = bytes(range(32)), bytes(range(1, 33))  # fixed: the same permutations on every run
    values = np.arange(bound, dtype=np.uint64)
    mapped = crypto.permute_below(key, values, bound)
    assert np.array_equal(np.sort(mapped), values)
    assert np.array_equal(crypto.unpermute_below(key, mapped, bound), values)
    if bound >= 64:
        assert not np.array_equal(mapped, values)
        assert np.mean(crypto.permute_below(other, values, bound) == mapped) < 0.05
        assert abs(np.corrcoef(values.astype(float), mapped.astype(float))[0, 1]) < 0.35
    with pytest.raises(ValueError):
        crypto.permute_below(key, np.array([bound], dtype=np.uint64), bound)
