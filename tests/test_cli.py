"""The command line as a user meets it: clear errors without tracebacks, and the main job runs."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from iae_privacy.cli import app, main

runner = CliRunner()


def run(*args: str, home=None):
    prefix = ["--home", str(home)] if home is not None else []
    return runner.invoke(app, prefix + list(args), catch_exceptions=False)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["iae-privacy", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out + out.err


def test_every_command_has_help():
    for command in ([], ["keys"], ["train"], ["demo"], ["profile"], ["roundtrip"], ["keys", "rotate"],
                    ["keys", "add-principal"], ["keys", "remove-principal"], ["request"], ["decode"], ["policy", "set-role"], ["audit", "verify"],
                    ["audit", "show"], ["query"], ["evaluate"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_user_mistakes_are_one_line_errors_not_tracebacks(monkeypatch, capsys, tmp_path):
    code, out = run_main(monkeypatch, capsys, "roundtrip", str(tmp_path / "missing.parquet"))
    assert code == 2 and "missing.parquet: no such file" in out and "Traceback" not in out
    code, out = run_main(monkeypatch, capsys, "--home", str(tmp_path), "keys", "status")
    assert code == 2 and "no keyring in" in out and "keys init" in out


def test_keys_train_models_rotate_retire(tmp_path, data_dir, prefect_harness):
    assert run("keys", "init", home=tmp_path).exit_code == 0
    result = run("train", str(data_dir / "health_insurance.parquet"), "--model", "hi", "--epochs", "2",
                 home=tmp_path)
    assert result.exit_code == 0, result.output
    assert "sealed hi:v1" in result.output and (tmp_path / "models" / "hi" / "v1.iae").exists()
    assert "hi" in run("models", home=tmp_path).output
    assert "key version 2 is now current; 1 model bundle(s) and 0 vault part(s) re-wrapped" in run("keys", "rotate", home=tmp_path).output
    assert run("keys", "retire", "1", home=tmp_path).exit_code == 0
    status = run("keys", "status", home=tmp_path).output
    assert "retired" in status and "current" in status
    events = [(e["event"], e["outcome"]) for e in json_lines(tmp_path / "audit" / "audit.log")]
    assert events[-2:] == [("keys", "rotated"), ("keys", "retired")]


def json_lines(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_request_decode_and_audit_from_the_command_line(tmp_path, data_dir, monkeypatch, capsys, prefect_harness):
    import os
    import stat

    import pyarrow.parquet as pq

    from iae_privacy.exactness import first_difference

    source = data_dir / "health_insurance.parquet"
    assert "principal 'admin'" in run("keys", "init", home=tmp_path).output
    assert stat.S_IMODE(os.stat(tmp_path / "principals" / "admin.key").st_mode) == 0o600
    assert run("policy", "set-role", "analyst", "--columns", "region,health", "--max-rows", "2", home=tmp_path).exit_code == 0
    assert "principal 'ana'" in run("keys", "add-principal", "ana", "--role", "analyst", home=tmp_path).output
    assert "analyst" in run("policy", "show", home=tmp_path).output
    assert run("train", str(source), "--model", "hi", "--epochs", "1", home=tmp_path).exit_code == 0
    encoded = tmp_path / "enc"
    assert run("encode", str(source), "--model", "hi", "--out", str(encoded), home=tmp_path).exit_code == 0

    request, out = tmp_path / "r.json", tmp_path / "two.parquet"
    assert run("request", str(encoded), "--as", "ana", "--rows", f"{1 << 32},{(1 << 32) + 7}", "--columns",
               "health,region", "--purpose", "check", "--out", str(request), home=tmp_path).exit_code == 0
    result = run("decode", str(encoded), "--request", str(request), "--out", str(out), home=tmp_path)
    assert result.exit_code == 0 and "2 rows restored" in result.output, result.output
    expected = pq.read_table(source).take([0, 7]).select(["health", "region"])  # source order
    assert first_difference(expected, pq.read_table(out)) is None

    code, text = run_main(monkeypatch, capsys, "--home", str(tmp_path), "decode", str(encoded), "--request",
                          str(request), "--out", str(tmp_path / "again.parquet"))
    # one line, no traceback through our code (capsys closes streams Prefect's log handler still holds,
    # which prints "--- Logging error ---" blocks here but not in a terminal)
    assert code == 2 and "error: this request was already used" in text and "AccessRefused" not in text
    assert not (tmp_path / "again.parquet").exists()
    assert "refused" in run("audit", "show", home=tmp_path).output
    assert "audit log intact" in run("audit", "verify", home=tmp_path).output

    log = tmp_path / "audit" / "audit.log"
    log.write_text(log.read_text().replace('"purpose":"check"', '"purpose":"other"', 1))
    code, text = run_main(monkeypatch, capsys, "--home", str(tmp_path), "audit", "verify")
    assert code == 1 and "entry was edited" in text


def test_demo_runs_end_to_end_on_a_small_sample(tmp_path, data_dir, prefect_harness):
    small = tmp_path / "data"
    small.mkdir()
    shutil.copy(data_dir / "health_insurance.parquet", small)
    result = run("demo", "--data", str(small), "--work", str(tmp_path / "work"), "--patients", "3000",
                 "--epochs", "2", "--seconds", "5")
    assert result.exit_code == 0, result.output
    assert "every dataset restored bit for bit" in result.output
    assert (tmp_path / "work" / "models" / "patients" / "v1.iae").exists()
    assert (tmp_path / "work" / "encoded" / "patients-v1" / "manifest.json").exists()


def test_serve_without_a_prefect_server_says_how_to_start_one(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out = run_main(monkeypatch, capsys, "--home", str(tmp_path), "serve", str(tmp_path), "--model", "m",
                         "--out", str(tmp_path / "enc"))
    assert code == 2 and "prefect server start" in out and "PREFECT_API_URL" in out


def test_query_and_evaluate_from_the_command_line(tmp_path, data_dir, prefect_harness):
    import csv

    source = data_dir / "cps1988_wages.parquet"
    assert run("keys", "init", home=tmp_path).exit_code == 0
    assert run("train", str(source), "--model", "w", "--epochs", "1", home=tmp_path).exit_code == 0
    assert run("encode", str(source), "--model", "w", "--out", str(tmp_path / "wages"), home=tmp_path).exit_code == 0
    result = run("query", "SELECT count(*) AS n FROM wages", home=tmp_path)  # the workspace's datasets by folder name
    assert result.exit_code == 0 and "28155" in result.output, result.output
    out = tmp_path / "q.csv"
    assert run("query", "SELECT row_id FROM w ORDER BY row_id LIMIT 3", "--dataset", f"w={tmp_path / 'wages'}",
               "--out", str(out)).exit_code == 0
    assert [r["row_id"] for r in csv.DictReader(out.open())] == [str(1 << 32), str((1 << 32) + 1), str((1 << 32) + 2)]

    result = run("evaluate", str(source), "--target", "wage", "--ks", "1,3", "--rows", "3000", "--leaked", "10,100",
                 "--epochs", "1", "--model", "w", "--out", str(tmp_path / "ev"), home=tmp_path)
    assert result.exit_code == 0, result.output
    assert "inversion exact" in result.output and "(w:v1)" in result.output
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| 1 / 6 |" in report and "(w:v1) | nan |" in report  # wage is inside z in w: no utility figure


def test_flow_progress_draws_bars_in_a_terminal_and_stays_quiet_elsewhere(monkeypatch):
    import io

    from rich.console import Console

    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from iae_privacy import cli, progress

    prefect_console = PrefectConsoleHandler(stream=io.StringIO())  # as Prefect's logging set-up adds it
    logging.getLogger().addHandler(prefect_console)
    monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", raising=False)
    try:
        for terminal in (True, False):
            out = io.StringIO()
            monkeypatch.setattr(cli, "console", Console(file=out, force_terminal=terminal, width=100))
            with cli.flow_progress():
                # Prefect's INFO lines would break the bars: only warnings reach its console meanwhile
                assert prefect_console.level == (logging.WARNING if terminal else logging.NOTSET)
                for done in (1_500, 3_000, 4_000):
                    progress.report("encoding part 1", done, 4_000)
                progress.report("training pat", 2, 2, "epochs")
            assert prefect_console.level == logging.NOTSET
            text = out.getvalue()
            if terminal:
                assert "encoding part 1" in text and "4000/4000" in text and "rows" in text
                assert "training pat" in text and "2/2" in text and "epochs" in text
            else:
                assert text == ""  # Prefect's own log lines are the progress when output is not a terminal
    finally:
        logging.getLogger().removeHandler(prefect_console)
    assert progress._listeners == []  # no listener is left behind
