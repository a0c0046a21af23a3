"""Every parser of a file a user or an attacker can write only ever refuses, with its own error.

Request files, the access policy, manifests, sealed-file headers, audit lines and the keyring's
state are fed arbitrary bytes and single-byte edits, insertions and cuts of genuine documents
(hypothesis). A parser may accept a genuine document and must refuse anything else with the
error its callers turn into a one-line refusal; any other exception is a bug.
"""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iae_privacy.access.audit import AuditLog
from iae_privacy.access.control import (
    AccessControl,
    AccessRefused,
    DecodeRequest,
    Policy,
    make_request,
)
from iae_privacy.dataset.store import EncodedDataset, Manifest, PartRecord, StoreError
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, KeyringError, Purpose
from iae_privacy.keys.sealed import SealedFileError, read_sealed_header, write_sealed
from iae_privacy.workspace import Workspace

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def damaged(draw, genuine: bytes) -> bytes:
    """``genuine`` with one edit: a byte changed, bytes inserted, a cut, or nested brackets."""
    data = bytearray(genuine)
    at = draw(st.integers(0, len(data)))
    kind = draw(st.sampled_from(["change", "insert", "cut", "nest"]))
    if kind == "change" and at < len(data):
        data[at] = draw(st.integers(0, 255).filter(lambda b: b != data[at]))
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "cut":
        del data[at:]
    else:
        depth = draw(st.integers(1, 50_000))
        data[at:at] = b"[" * depth + b"]" * depth
    return bytes(data)


def hostile(genuine: bytes):
    return st.one_of(st.binary(max_size=300), damaged(genuine))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    workspace = Workspace.at(root)
    keyring = Keyring.init(workspace.keys)
    access = AccessControl(workspace, keyring)
    admin_key = access.initialise()
    dataset = EncodedDataset(root / "enc")
    dataset.folder.mkdir()
    part = PartRecord(1, "s.parquet", "0" * 64, 3, 1, "latent/part-00001.parquet", "1" * 64, "vault/part-00001.vault",
                      "2" * 64, "3" * 64)
    dataset.write_manifest(Manifest("d", "m", 1, [part]), keyring)
    write_sealed(root / "x.vault", b"IAE-VAULT\x01", {"kind": "vault", "dataset": "d", "part": 1}, Purpose.VAULT,
                 b"aad", iter([b"segment"]), keyring)
    return root, keyring, access, admin_key


@FUZZ
@given(data=st.data())
def test_request_files_parse_or_refuse_with_value_error(workspace, data):
    root, _, _, admin_key = workspace
    genuine = make_request(root / "enc", "admin", admin_key, rows=[1 << 32], purpose="fuzz")
    candidate = data.draw(hostile(genuine))
    try:
        request, signature = DecodeRequest.parse(candidate)
    except ValueError:
        return
    # a canonical document with other values parses; its signature is what authorize then checks
    assert request.serialize(signature) == candidate


@pytest.mark.parametrize("spelling", ["upper", "spaced", "tabbed"])
def test_a_policy_whose_mac_is_spelled_otherwise_is_refused(workspace, tmp_path, spelling):
    """Found by the fuzz test below: a MAC only changed in case read as the genuine one
    (``bytes.fromhex`` takes upper case and whitespace); the file is not what was written."""
    root, keyring, access, _ = workspace
    doc = json.loads(access.policy_path.read_bytes())
    mac = doc["mac"]
    doc["mac"] = {"upper": mac.upper(), "spaced": mac[:8] + " " + mac[8:], "tabbed": mac[:8] + "\t" + mac[8:]}[spelling]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc, indent=1))
    with pytest.raises(AccessRefused, match="damaged"):
        Policy.load(path, keyring)
    Policy.load(access.policy_path, keyring)  # the genuine one loads


@FUZZ
@given(data=st.data())
def test_the_policy_loads_or_is_refused(workspace, data, tmp_path_factory):
    root, keyring, access, _ = workspace
    genuine = access.policy_path.read_bytes()
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_bytes(data.draw(hostile(genuine)))
    try:
        Policy.load(path, keyring)
    except AccessRefused:
        return
    assert json.loads(path.read_bytes()) == json.loads(genuine)  # whitespace aside, only the genuine one loads


@FUZZ
@given(data=st.data())
def test_manifests_are_read_or_refused(workspace, data, tmp_path_factory):
    root, keyring, _, _ = workspace
    genuine = (root / "enc" / "manifest.json").read_bytes()
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "manifest.json").write_bytes(data.draw(hostile(genuine)))
    dataset = EncodedDataset(folder)
    for read in (lambda: dataset.read_manifest(keyring), dataset.manifest_identity, dataset.manifest_pin,
                 dataset.listed_latent_parts):
        try:
            read()
        except StoreError:
            pass


@FUZZ
@given(data=st.data())
def test_sealed_headers_are_read_or_refused(workspace, data, tmp_path_factory):
    root, _, _, _ = workspace
    genuine = (root / "x.vault").read_bytes()
    path = tmp_path_factory.mktemp("sealed") / "x.vault"
    path.write_bytes(data.draw(hostile(genuine)))
    try:
        header, version = read_sealed_header(path, b"IAE-VAULT\x01", "vault part")
    except SealedFileError:
        return
    # a canonical header with other values parses; opening the file authenticates it
    assert isinstance(header, dict) and isinstance(version, int)


@FUZZ
@given(data=st.data())
def test_audit_logs_verify_to_a_report_whatever_their_bytes(workspace, data, tmp_path_factory):
    root, keyring, access, _ = workspace
    genuine = access.audit.path.read_bytes()
    folder = tmp_path_factory.mktemp("audit")
    shutil.copy(access.audit.checkpoint, folder / "audit.checkpoint")
    (folder / "audit.log").write_bytes(data.draw(hostile(genuine)))
    log = AuditLog(folder / "audit.log", folder / "audit.checkpoint", keyring)
    report = log.verify()
    assert report.ok == ((folder / "audit.log").read_bytes() == genuine)
    for line in (folder / "audit.log").read_bytes().splitlines():
        assert log._parse(line) is None or isinstance(log._parse(line), dict)


@FUZZ
@given(data=st.data())
def test_keyring_state_opens_or_is_refused(workspace, data, tmp_path_factory):
    root, _, _, _ = workspace
    folder = tmp_path_factory.mktemp("keys")
    for name in ("master-v1.key", "root.sealed"):
        shutil.copy(root / "keys" / name, folder / name)
    (folder / "keyring.json").write_bytes(data.draw(hostile((root / "keys" / "keyring.json").read_bytes())))
    folder.chmod(0o700)
    try:
        Keyring.open(folder)
    except KeyringError:
        pass


def test_a_genuine_request_signed_by_its_principal_parses(workspace):
    root, _, _, admin_key = workspace
    request, signature = DecodeRequest.parse(make_request(root / "enc", "admin", admin_key, rows=[7]))
    assert len(signature) == 64 and crypto.KEY_BYTES == 32 and request.rows == (7,)
