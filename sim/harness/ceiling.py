"""The pure-C++ ceiling: a design's Verilog clocked by a C++ loop, with no VPI and no Python.

``apwake bench`` compares the scenario's speed under cocotb with this figure: the most any run
of the same model can reach (issue 12's target: the 64-CPU scenario at 50% or more of the
ceiling of the fastest model apwake ships).  Two builds of the same cached Verilog:

* ``hierarchical``: the APIC as a Verilator hierarchical block, the way the harness builds it
  (:func:`apwake.sim.harness.build.build`);
* ``flat``: everything inlined, Verilator's fastest model, slower to compile.

Both use the harness's flags (:data:`~apwake.sim.harness.build.VERILATOR_SPEED_ARGS`,
:data:`~apwake.sim.harness.build.MAKE_SPEED_ARGS`, the waivers) and ``ceiling_main.cpp``
beside this file.
"""

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .build import MAKE_SPEED_ARGS, VERILATOR_SPEED_ARGS, VERILATOR_WAIVERS, BuildError
from .toolchain import verilator_env, verilator_root

__all__ = ["Ceiling", "build_ceiling", "VARIANTS"]

MAIN = Path(__file__).with_name("ceiling_main.cpp")

#: ``hierarchical`` as the harness builds it, ``flat`` all inlined
VARIANTS = ("hierarchical", "flat")


@dataclass
class Ceiling:
    """A compiled ceiling binary.

    Attributes
    ----------
    variant : str
        One of :data:`VARIANTS`.
    binary : pathlib.Path
    compile_s : float
        Verilator plus the C++ compiler, seconds.
    """

    variant: str
    binary: Path
    compile_s: float

    def run(self, cycles):
        """Clock the idle design ``cycles`` times; return cycles per second (float).
        :meth:`measure` returns the whole result.

        Raises
        ------
        ValueError
            ``cycles`` is not a positive integer.
        RuntimeError
            The binary failed; the message has its output.
        """
        result = self.measure(cycles)
        return result["cycles"] / result["wall_s"]

    def measure(self, cycles, *, timeout_s=3600):
        """Clock the idle design ``cycles`` times; return the binary's report, a dict with
        ``cycles``, ``wall_s`` (seconds) and, for a design with a ``tsc`` port (the APIC
        fabric), ``tsc``, its time-stamp counter at the end.  Errors as :meth:`run`, and
        RuntimeError when the binary runs longer than ``timeout_s`` seconds."""
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles <= 0:
            raise ValueError(f"cycles must be a positive integer, not {cycles!r}")
        try:
            done = subprocess.run([str(self.binary), str(cycles)], capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.binary} {cycles} did not finish within {timeout_s} s") from None
        if done.returncode:
            raise RuntimeError(f"{self.binary} {cycles} exited with {done.returncode}: "
                               f"{(done.stdout + done.stderr)[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def build_ceiling(verilog_build, variant, out):
    """Compile the ceiling of ``verilog_build`` (a :class:`apwake.sim.harness.build.Build`,
    whose Verilog is used) as ``variant`` into the folder ``out`` (emptied first).

    Raises
    ------
    ValueError
        ``variant`` is not one of :data:`VARIANTS`.
    BuildError
        Verilator or the C++ compiler failed; the message has the log's last lines.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    verilog = sorted(verilog_build.verilog_dir.glob("*.v"))
    ports = json.loads((verilog_build.verilog_dir / "ports.json").read_text())
    control = [verilog_build.verilog_dir / "hier_blocks.vlt"] if variant == "hierarchical" else []
    command = [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build",
               "-j", "0", "-Mdir", str(out), "--top-module", verilog_build.toplevel,
               "--prefix", "Vtop", "-o", "ceiling", *VERILATOR_SPEED_ARGS, *VERILATOR_WAIVERS,
               *verilog_build.design.verilator_args(), *(["--hierarchical"] if control else []),
               "-MAKEFLAGS", " ".join(MAKE_SPEED_ARGS),
               *(["-CFLAGS", "-DAPWAKE_CEILING_TSC"] if "tsc" in ports else []),
               str(MAIN), *map(str, verilog), *map(str, control)]
    log = out / "build.log"
    started = time.monotonic()
    with open(log, "w") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT,
                              env=verilator_env(), cwd=out)
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise BuildError(f"the {variant} ceiling of {verilog_build.toplevel} failed to build "
                         f"(exit {done.returncode}); last lines of {log}:\n{tail}")
    return Ceiling(variant, out / "ceiling", time.monotonic() - started)
