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


def test_the_package_docstring_names_every_folder_and_module():
    import iae_privacy

    names = {p.name for p in (ROOT / "iae_privacy").iterdir() if (p / "__init__.py").exists()}
    names |= {p.stem for p in (ROOT / "iae_privacy").glob("*.py") if p.stem != "__init__"}
    doc = iae_privacy.__doc__
    missing = sorted(n for n in names if f"{n}/" not in doc and f"``{n}``" not in doc)
    assert not missing, f"iae_privacy/__init__.py does not describe {missing}"


def test_ruff_is_clean():
    """Lint and import order as configured in pyproject.toml ([tool.ruff])."""
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
