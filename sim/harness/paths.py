"""Where apwake writes: builds, runs and outputs, never into the installed package.

In a source checkout (the folder holding ``pyproject.toml`` beside ``rtl/`` and ``sim/``)
everything goes under its ``build/`` as before.  Installed from a wheel, the Verilator build
cache and the run logs go to the user cache directory (``platformdirs.user_cache_path``, for
example ``~/.cache/apwake`` on Linux) and the outputs a user asks for (reports, bench figures,
bitstreams) to ``apwake-out/`` in the current directory.  ``APWAKE_CACHE_DIR``,
``APWAKE_RUNS_DIR`` and ``APWAKE_OUT_DIR`` override each.
"""

import os
import threading
from pathlib import Path

import platformdirs

__all__ = ["PACKAGE_ROOT", "CHECKOUT", "RTL_ROOT", "cache_dir", "runs_root", "out_dir", "temporary_sibling",
           "write_atomically"]

#: the folder holding ``rtl/``, ``sim/``, ``synth/`` and ``firmware/``: the checkout, or the
#: ``apwake`` folder of an installed wheel
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: the source checkout apwake runs from, or None when it is installed from a wheel
CHECKOUT = PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() else None
#: the RTL sources (their content is part of every build's cache key)
RTL_ROOT = PACKAGE_ROOT / "rtl"


def _work_root():
    if CHECKOUT is not None:
        return CHECKOUT / "build"
    return platformdirs.user_cache_path("apwake", appauthor=False)


def cache_dir():
    """The Verilator build cache: ``APWAKE_CACHE_DIR``, else ``build/cache`` of the checkout,
    else ``cache`` in the user cache directory."""
    return Path(os.environ.get("APWAKE_CACHE_DIR", _work_root() / "cache"))


def runs_root():
    """Simulator run folders (logs, results): ``APWAKE_RUNS_DIR``, else ``build/runs`` of the
    checkout, else ``runs`` in the user cache directory."""
    return Path(os.environ.get("APWAKE_RUNS_DIR", _work_root() / "runs"))


def out_dir(kind):
    """The folder for outputs of ``kind`` (``"bench"``, ``"synth"``,
    ``"waves"``): ``APWAKE_OUT_DIR/kind``, else ``build/kind`` of the checkout, else
    ``apwake-out/kind`` in the current directory."""
    if "APWAKE_OUT_DIR" in os.environ:
        root = Path(os.environ["APWAKE_OUT_DIR"])
    elif CHECKOUT is not None:
        root = CHECKOUT / "build"
    else:
        root = Path.cwd() / "apwake-out"
    return root / kind


def temporary_sibling(path):
    """A name beside ``path`` that no other process or thread writing ``path`` uses (for a
    file made whole there and then put in place with :func:`os.replace`)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_atomically(path, text):
    """Write ``text`` to ``path`` so that a reader sees the old file, or none, or all of it (a
    file of its own, then :func:`os.replace`); two writers of the same text both succeed."""
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
