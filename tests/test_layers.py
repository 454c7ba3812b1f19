"""The package layout: one-way layers checked by import-linter ([tool.importlinter] in
pyproject.toml), every package folder shipped as a subpackage of ``apwake``, and no import
under the checkout's bare folder names."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from apwake.sim.harness.paths import CHECKOUT

PYPROJECT = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]


def _tracked(pattern):
    out = subprocess.run(["git", "ls-files", pattern], cwd=CHECKOUT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_linter_contracts_hold(tmp_path):
    """``lint-imports`` on an ``apwake`` tree made of links to the checkout's folders, the
    layout the wheel installs (the editable install's import hook is invisible to grimp)."""
    root = tmp_path / "apwake"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for package, folder in PACKAGE_DIRS.items():
        (root / package.split(".", 1)[1]).symlink_to(CHECKOUT / folder)
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    out = subprocess.run([sys.executable, "-c", lint, str(CHECKOUT / "pyproject.toml")], cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "BROKEN" not in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
    assert "apwake layers KEPT" in out.stdout


def test_every_package_folder_ships():
    """Each folder with an ``__init__.py`` under the mapped folders is in the wheel's package
    list, and nothing else is but folders of package data only (no Python, declared in
    ``package-data`` so that setuptools does not guess them)."""
    folder_of = {folder: package for package, folder in PACKAGE_DIRS.items()}
    found = set()
    for init in _tracked("*__init__.py"):
        top, *rest = Path(init).parent.parts
        if top in folder_of:
            found.add(".".join([folder_of[top], *rest]))
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert found <= set(setuptools["packages"])
    for package in set(setuptools["packages"]) - found:
        top, *rest = package.split(".")[1:]
        folder = Path(PACKAGE_DIRS[f"apwake.{top}"], *rest)
        assert package in setuptools["package-data"], package
        assert (CHECKOUT / folder).is_dir() and not list((CHECKOUT / folder).glob("*.py")), package


def test_no_import_by_bare_folder_name():
    """``import sim`` beside ``import apwake.sim`` would load every module twice (two event
    loops' worth of state); only the ``apwake.`` names are used."""
    bare = re.compile(r"^\s*(from|import)\s+(rtl|sim|synth|firmware)\b", re.M)
    offenders = [f for f in _tracked("*.py") if "third_party" not in f and bare.search((CHECKOUT / f).read_text())]
    assert not offenders
