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
    for command in ([], ["keys"], ["train"], ["demo"], ["profile"], ["roundtrip"], ["keys", "rotate"]):
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
