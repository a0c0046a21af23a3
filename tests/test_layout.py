"""The package layout: what is installed is what is in the tree, under names of ours."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed_and_the_flows_install_under_our_name():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "iae_privacy").rglob("__init__.py")}
    assert on_disk and on_disk <= set(setup["packages"]), sorted(on_disk - set(setup["packages"]))
    assert setup["package-dir"] == {"iae_privacy_flows": "flows"}
    assert "flows" not in setup["packages"]


def test_the_flows_import_as_iae_privacy_flows_from_anywhere(tmp_path):
    code = "import iae_privacy_flows.encode as m, importlib.util as u; print(m.__name__, u.find_spec('flows') is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["iae_privacy_flows.encode", "True"]
