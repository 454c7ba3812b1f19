"""Where apwake writes (sim/harness/paths.py): a checkout's build/, else the user cache
directory and ./apwake-out, each overridable."""

from pathlib import Path

import platformdirs
import pytest

from apwake.sim.harness import paths


def test_a_checkout_writes_under_its_build_folder(monkeypatch):
    for var in ("APWAKE_CACHE_DIR", "APWAKE_RUNS_DIR", "APWAKE_OUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert paths.CHECKOUT is not None and (paths.CHECKOUT / "pyproject.toml").is_file()
    assert paths.cache_dir() == paths.CHECKOUT / "build" / "cache"
    assert paths.runs_root() == paths.CHECKOUT / "build" / "runs"
    assert paths.out_dir("bench") == paths.CHECKOUT / "build" / "bench"


def test_an_installed_package_writes_to_the_user_cache_and_the_current_folder(monkeypatch, tmp_path):
    for var in ("APWAKE_CACHE_DIR", "APWAKE_RUNS_DIR", "APWAKE_OUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(paths, "CHECKOUT", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    user_cache = platformdirs.user_cache_path("apwake", appauthor=False)
    assert user_cache.is_relative_to(tmp_path / "xdg")
    assert paths.cache_dir() == user_cache / "cache"
    assert paths.runs_root() == user_cache / "runs"
    assert paths.out_dir("synth") == tmp_path / "apwake-out" / "synth"
    # that nothing lands in the installed package is checked on a real wheel (test_wheel.py)


@pytest.mark.parametrize("var, function, args", [("APWAKE_CACHE_DIR", "cache_dir", ()),
                                                  ("APWAKE_RUNS_DIR", "runs_root", ())])
def test_the_environment_overrides_each_folder(monkeypatch, tmp_path, var, function, args):
    monkeypatch.setenv(var, str(tmp_path / "x"))
    assert getattr(paths, function)(*args) == tmp_path / "x"


def test_out_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("APWAKE_OUT_DIR", str(tmp_path))
    assert paths.out_dir("bench") == Path(tmp_path) / "bench"
