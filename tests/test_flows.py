"""The Prefect flows run the product end to end, and Prefect never sees a sensitive value."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iae_privacy import progress
from iae_privacy.access.control import AccessControl, AccessRefused, make_request
from iae_privacy.arrow.exactness import first_difference
from iae_privacy.errors import IaeError
from iae_privacy.keys.keyring import Keyring, Purpose
from iae_privacy.samples import write_synthetic_patients
from iae_privacy.workspace import Workspace


def test_train_encode_decode_flows_restore_bit_for_bit(tmp_path, prefect_harness):
    from iae_privacy_flows.decode import decode_flow, run_decode
    from iae_privacy_flows.encode import encode_flow
    from iae_privacy_flows.train import train_flow

    keyring = Keyring.init(tmp_path / "keys")
    admin_key = AccessControl(Workspace.at(tmp_path), keyring).initialise()
    landing = tmp_path / "landing"
    write_synthetic_patients(landing / "day1.parquet", 4_000, seed=1, row_group_size=1_500)
    home = str(tmp_path)
    reports = []
    with progress.listening(lambda *report: reports.append(report)):  # what the CLI's bars show
        trained = train_flow(data=str(landing / "day1.parquet"), model="pat", home=home, epochs=2)
        assert trained.version == 1 and trained.features
        assert Path(trained.loss_curve).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        first = encode_flow(source=str(landing), model="pat", out=str(tmp_path / "enc"), home=home)
        assert (first.encoded_parts, first.rows) == (1, 4_000)
    assert [r for r in reports if r[3] == "epochs"] == \
        [("training pat", 1, 2, "epochs"), ("training pat", 2, 2, "epochs")]
    encoding = [r for r in reports if r[0] == "encoding part 1"]
    assert len(encoding) > 1 and encoding[-1] == ("encoding part 1", 4_000, 4_000, "rows")
    assert [r[1] for r in encoding] == sorted(r[1] for r in encoding)

    # the analysts' share explains itself: a data dictionary beside the parts, names and figures only
    dictionary = (tmp_path / "enc" / "latent" / "DICTIONARY.md").read_text()
    assert "| `email` | a 32-hex keyed token" in dictionary and "`z_public_0` .." in dictionary
    assert "## What z_public carries about each source column" in dictionary and "`notes`" in dictionary
    source = pq.read_table(landing / "day1.parquet")
    assert str(landing) not in dictionary and str(tmp_path) not in dictionary
    assert not any(v in dictionary for v in source.column("email").drop_null().to_pylist()[:200])
    assert not any(v in dictionary for v in source.column("diagnosis_code").chunk(0).dictionary.to_pylist())

    early = tmp_path / "early-request.json"  # made before the next scheduled encode adds a part
    early.write_bytes(make_request(tmp_path / "enc", "admin", admin_key, purpose="test"))

    write_synthetic_patients(landing / "day2.parquet", 2_500, seed=2)
    (landing / "day3.parquet").write_bytes(b"PAR1 still being copied")  # a scheduled run skips it, says so
    (landing / "day4.parquet").mkdir()
    with pytest.raises(IaeError, match="day3.parquet: not a readable Parquet file"):
        encode_flow(source=str(landing), model="pat", out=str(tmp_path / "enc"), home=home)
    second = encode_flow(source=str(landing), model="pat", out=str(tmp_path / "enc"), home=home,
                         skip_unreadable=True, check=True)  # as serve runs it: verified after the commit
    assert (second.encoded_parts, second.skipped_sources, second.rows) == (1, 1, 6_500)
    (landing / "day3.parquet").unlink()
    (landing / "day4.parquet").rmdir()

    # a retrain (pat:v2) does not break the schedule: "pat" into this dataset means its own version,
    # v1; a pinned other version is refused, naming the way out
    assert train_flow(data=str(landing / "day1.parquet"), model="pat", home=home, epochs=0).version == 2
    write_synthetic_patients(landing / "day6.parquet", 200, seed=6)
    third = encode_flow(source=str(landing), model="pat", out=str(tmp_path / "enc"), home=home)
    assert (third.encoded_parts, third.rows) == (1, 6_700)
    with pytest.raises(IaeError, match="encoded with model pat:v1; it cannot take parts from pat:v2"):
        encode_flow(source=str(landing), model="pat:v2", out=str(tmp_path / "enc"), home=home)

    # the request made before part 2 still works, and restores the part it pinned
    kept = decode_flow(encoded=str(tmp_path / "enc"), request=str(early), out=str(tmp_path / "early.parquet"),
                       home=home)
    assert kept.restored_rows == 4_000
    assert first_difference(pq.read_table(landing / "day1.parquet"), pq.read_table(tmp_path / "early.parquet")) is None

    request = tmp_path / "request.json"
    request.write_bytes(make_request(tmp_path / "enc", "admin", admin_key, purpose="test"))
    restored = decode_flow(encoded=str(tmp_path / "enc"), request=str(request), out=str(tmp_path / "restored"),
                           home=home)
    assert restored.restored_rows == 6_700
    for part, name in ((1, "day1"), (2, "day2"), (3, "day6")):
        got = pq.read_table(tmp_path / "restored" / f"part-{part:05d}-{name}.parquet")
        assert first_difference(pq.read_table(landing / f"{name}.parquet"), got) is None

    # the same request again: the flow run ends Failed with the reason, and nothing is written
    state = decode_flow(encoded=str(tmp_path / "enc"), request=str(request), out=str(tmp_path / "again"),
                        home=home, return_state=True)
    assert state.is_failed() and "already used" in state.message
    assert isinstance(state.result(raise_on_failure=False), AccessRefused)  # the refusal itself, in the state
    assert not (tmp_path / "again").exists()
    with pytest.raises(AccessRefused, match="already used"):
        run_decode(str(tmp_path / "enc"), str(request), str(tmp_path / "again"), home)

    # a scheduled run (check=True) that adds a part verifies the whole dataset, and fails on a part
    # altered since: the run's error names it
    latent = tmp_path / "enc" / "latent" / "part-00001.parquet"
    latent.write_bytes(latent.read_bytes()[:-20] + bytes(20))
    write_synthetic_patients(landing / "day5.parquet", 300, seed=5)
    with pytest.raises(IaeError, match="does not verify after this encode: part 1: latent part .* differs"):
        encode_flow(source=str(landing), model="pat", out=str(tmp_path / "enc"), home=home, skip_unreadable=True,
                    check=True)


def test_a_large_source_is_encoded_as_several_parts_and_restored_whole(tmp_path, prefect_harness, monkeypatch):
    """--split: one big file as N parts, one task each (what lets Dask workers share it)."""
    import iae_privacy_flows.encode as encode
    from iae_privacy_flows.decode import decode_flow
    from iae_privacy_flows.train import train_flow

    monkeypatch.setattr(encode, "SPLIT_ROWS", 1_000)  # a small file stands for a big one
    keyring = Keyring.init(tmp_path / "keys")
    admin_key = AccessControl(Workspace.at(tmp_path), keyring).initialise()
    landing = tmp_path / "landing"
    write_synthetic_patients(landing / "big.parquet", 5_000, seed=3, row_group_size=2_000)
    write_synthetic_patients(landing / "small.parquet", 1_500, seed=4)  # under 3 x 1,000: one part
    home = str(tmp_path)
    train_flow(data=str(landing / "big.parquet"), model="pat", home=home, epochs=0)
    result = encode.run_encode(str(landing), "pat", str(tmp_path / "enc"), home, split=3)
    assert (result.encoded_parts, result.skipped_sources, result.rows) == (4, 0, 6_500)
    assert _encode_part_runs_of_the_last_flow_run() == 4
    again = encode.run_encode(str(landing), "pat", str(tmp_path / "enc"), home, split=3)
    assert (again.encoded_parts, again.skipped_sources, again.parts) == (0, 2, 4)

    request = tmp_path / "request.json"
    request.write_bytes(make_request(tmp_path / "enc", "admin", admin_key, purpose="test"))
    restored = decode_flow(encoded=str(tmp_path / "enc"), request=str(request), out=str(tmp_path / "restored"),
                           home=home)
    assert restored.restored_rows == 6_500
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["part-00001-big.parquet",
                                                                        "part-00004-small.parquet"]
    for name, part in (("big", 1), ("small", 4)):
        got = pq.read_table(tmp_path / "restored" / f"part-{part:05d}-{name}.parquet")
        assert first_difference(pq.read_table(landing / f"{name}.parquet"), got) is None
    with pytest.raises(IaeError, match="split must be 1 or more"):
        encode.run_encode(str(landing), "pat", str(tmp_path / "enc"), home, split=0)


def test_the_library_never_imports_prefect():
    code = ("import sys, importlib, pkgutil, iae_privacy\n"
            "for m in pkgutil.walk_packages(iae_privacy.__path__, 'iae_privacy.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n == 'prefect' or n.startswith('prefect.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_prefect_home_holds_no_sample_values_and_no_key_bytes(tmp_path):
    """train → encode → decode through the CLI with a private PREFECT_HOME, then scan all of it."""
    home, prefect_home = tmp_path / "ws", tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "IAE_HOME": str(home),
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    source = write_synthetic_patients(home / "landing" / "patients.parquet", 3_000, seed=5)
    cli = [sys.executable, "-c", "from iae_privacy.cli import main; main()"]
    request = str(home / "request.json")
    for args in (["keys", "init"], ["train", str(source), "--model", "pat", "--epochs", "2"],
                 ["encode", str(source), "--model", "pat", "--out", str(home / "enc")],
                 ["request", str(home / "enc"), "--as", "admin", "--out", request, "--purpose", "scan"],
                 ["decode", str(home / "enc"), "--request", request, "--out", str(home / "restored.parquet")]):
        result = subprocess.run(cli + args, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    files = [p for p in prefect_home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), "Prefect's database should be under PREFECT_HOME"
    stored = b"".join(p.read_bytes() for p in files)

    table = pq.read_table(source)
    needles = set()
    for column in ("full_name", "email", "national_id", "patient_id", "notes"):
        needles |= {v.encode() for v in table.column(column).drop_null().to_pylist()[:300]}
    found = [n for n in needles if n in stored]
    assert found == []
    audit = (home / "audit" / "audit.log").read_bytes()  # the audit log holds counts and tokens, no values
    assert b'"outcome":"restored"' in audit and [n for n in needles if n in audit] == []
    keyring = Keyring.open(home / "keys")
    secrets = [keyring.subkey(p) for p in Purpose] + [keyring.master(1), (home / "keys" / "master-v1.key").read_bytes(),
               (home / "principals" / "admin.key").read_bytes()]
    for secret in secrets:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form not in stored


@pytest.mark.slow
def test_encode_on_a_dask_cluster_matches_the_local_run(tmp_path, prefect_harness):

    from iae_privacy_flows.encode import run_encode
    from iae_privacy_flows.train import train_flow

    Keyring.init(tmp_path / "keys")
    landing = tmp_path / "landing"
    for day in range(3):
        write_synthetic_patients(landing / f"day{day}.parquet", 1_500, seed=day)
    home = str(tmp_path)
    train_flow(data=str(landing / "day0.parquet"), model="pat", home=home, epochs=1)
    local = run_encode(str(landing), "pat", str(tmp_path / "local"), home, dataset="patients")
    # the temporary cluster run_encode starts: its workers must report to this run's API (the
    # harness's), not start temporary servers of their own, whose task runs the harness never sees
    distributed = run_encode(str(landing), "pat", str(tmp_path / "dask"), home, dataset="patients", runner="dask")
    assert local == distributed and local.encoded_parts == 3
    assert _encode_part_runs_of_the_last_flow_run() == 3
    for part in (1, 2, 3):
        a = pq.read_table(tmp_path / "local" / "latent" / f"part-{part:05d}.parquet")
        b = pq.read_table(tmp_path / "dask" / "latent" / f"part-{part:05d}.parquet")
        assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)


def _encode_part_runs_of_the_last_flow_run() -> int:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async def count() -> int:
        async with get_client() as client:
            last = (await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))[0]
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[last.id])))
            return sum(r.name.startswith("encode part") for r in runs)

    return asyncio.run(count())


def test_serve_registers_scheduled_deployments_with_paths_only(tmp_path, prefect_harness):
    import asyncio

    from prefect.client.orchestration import get_client

    from iae_privacy_flows.serve import build_deployments

    pinned = build_deployments(str(tmp_path / "landing"), "pat:v2", str(tmp_path / "enc"), str(tmp_path))
    assert pinned[0].parameters["model"] == "pat:v2"  # serve can pin a version
    deployments = build_deployments(str(tmp_path / "landing"), "pat", str(tmp_path / "enc"), str(tmp_path),
                                    cron="0 * * * *", retrain_cron="0 3 * * 0",
                                    retrain_data=str(tmp_path / "train.parquet"))
    assert [d.name for d in deployments] == ["encode-enc", "retrain-pat"]
    ids = [d.apply() for d in deployments]

    async def read():
        async with get_client() as client:
            return [await client.read_deployment(i) for i in ids]

    encode, retrain = asyncio.run(read())
    assert encode.parameters == {"source": str((tmp_path / "landing").resolve()), "model": "pat",
                                 "out": str((tmp_path / "enc").resolve()), "home": str(tmp_path.resolve()),
                                 "dataset": "enc", "skip_unreadable": True, "check": True}
    assert encode.schedules[0].schedule.cron == "0 * * * *"
    assert retrain.schedules[0].schedule.cron == "0 3 * * 0" and retrain.parameters["model"] == "pat"
    assert all(isinstance(v, (str, bool)) for d in (encode, retrain) for v in d.parameters.values())


def test_a_failed_seal_is_retried_without_training_again(tmp_path, prefect_harness, monkeypatch):
    """Sealing is its own task: a transient failure there (a full disk, say) is retried, and the
    model trained once is what gets sealed."""
    from iae_privacy.model.registry import ModelRegistry
    from iae_privacy_flows import train as train_module

    Keyring.init(tmp_path / "keys")
    data = write_synthetic_patients(tmp_path / "p.parquet", 1_500, seed=4)
    monkeypatch.setattr(train_module.verify_and_seal, "retry_delay_seconds", 0)
    real_save, saves, fits = ModelRegistry.save, [], []

    def full_disk_once(self, *args, **kwargs):
        saves.append(1)
        if len(saves) == 1:
            raise OSError(28, "No space left on device")
        return real_save(self, *args, **kwargs)

    real_fit = train_module.fit_model
    monkeypatch.setattr(ModelRegistry, "save", full_disk_once)
    monkeypatch.setattr(train_module, "fit_model", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    result = train_module.train_flow(data=str(data), model="pat", home=str(tmp_path), epochs=1)
    assert (len(fits), len(saves), result.version) == (1, 2, 1)
    assert Path(result.path).is_file()


def test_the_flow_worker_runs_a_command_sends_back_its_lines_and_forgets_the_passphrase(tmp_path, monkeypatch):
    """The protocol of the workspace's flow worker, with a stand-in for the flow it would run (the
    real decode through a real worker is in test_cli's workspace-server test)."""
    import logging
    import threading
    import time

    import iae_privacy_flows.worker as worker
    from iae_privacy.keys.keyring import ENV_PASSPHRASE, env_passphrase
    from iae_privacy.server import WorkspaceServer

    monkeypatch.delenv(ENV_PASSPHRASE, raising=False)
    seen = []

    def decode(home: str, args: dict) -> dict:
        seen.append((home, args, env_passphrase()))
        progress.report("restoring", 1, 2)
        logging.getLogger("prefect.iae-test").warning("half way")
        if args.get("refuse"):
            raise AccessRefused("this request was already used")
        if args.get("crash"):
            raise ValueError("a cell value 1234-5678")
        return {"restored_rows": 2}

    monkeypatch.setitem(worker.COMMANDS, "decode", decode)
    (tmp_path / "server").mkdir(mode=0o700)
    threading.Thread(target=worker.serve, args=(tmp_path,), daemon=True).start()
    server = WorkspaceServer(tmp_path)
    until = time.monotonic() + 10
    while not server.worker_answers() and time.monotonic() < until:
        time.sleep(0.05)
    assert server.worker_answers() and oct(server.socket.stat().st_mode & 0o777) == "0o600"

    reports, lines = [], []
    result = server._call("decode", {"out": "x"}, "secret words", on_progress=lambda *r: reports.append(r),
                          on_log=lambda level, line: lines.append((level, line)))
    assert result == {"restored_rows": 2} and seen == [(str(tmp_path), {"out": "x"}, "secret words")]
    assert reports == [("restoring", 1, 2, "rows")] and lines[0][0] == logging.WARNING and "half way" in lines[0][1]
    assert env_passphrase() is None  # held for that run only
    with pytest.raises(AccessRefused, match="already used"):
        server._call("decode", {"refuse": True}, None)
    with pytest.raises(IaeError, match="the flow worker failed: ValueError") as failed:
        server._call("decode", {"crash": True}, None)
    assert "1234" not in str(failed.value)  # a library's message is withheld, as anywhere else
    with pytest.raises(IaeError, match="runs no command 'train'"):
        server._call("train", {}, None)


@pytest.mark.parametrize("answer", [b'{"nonsense": 1}\n', b'{"progress": [1]}\n', b'{"error": "text"}\n', b"[1]\n",
                                    b"not json\n", b""])
def test_an_answer_the_flow_worker_should_not_give_is_one_line_naming_its_log(tmp_path, answer):
    import socket
    import threading

    from iae_privacy.errors import ServerError
    from iae_privacy.server import WorkspaceServer

    (tmp_path / "server").mkdir()
    server = WorkspaceServer(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(server.socket))
    listener.listen(1)

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.makefile("rb").readline()
            conn.sendall(answer)

    threading.Thread(target=answer_once, daemon=True).start()
    expected = "stopped during the decode" if not answer else "gave an unreadable answer"
    with pytest.raises(ServerError, match=expected) as failed:
        server._call("decode", {}, None, timeout=10)
    assert str(server.worker_log) in str(failed.value)
    listener.close()
