"""Per-core FPGA cost of the soft-SoC's core choices (issue 16): each core as the SoC
instantiates it (:meth:`apwake.rtl.soc.cores.CoreChoice.make`: PicoRV32 alone, SERV with its
register-file RAM and its bus adapter), synthesised alone by Yosys for a family and counted.

``python -m apwake.synth.cores [--family ice40|ecp5] [--write]`` prints the Markdown table
(and with ``--write`` puts it in synth/REPORT.md as the section "cores-FAMILY").
"""

import argparse
import tempfile
import time
from pathlib import Path

from amaranth.back import verilog

from apwake.rtl.soc.cores import CORES, core_choice
from apwake.rtl.soc.memory_map import AP_BOOT
from apwake.sim.harness.toolchain import yowasp_tool

from .boards import count_cells, write_report, yosys_stat

__all__ = ["SYNTH", "COUNTS", "unit_utilisation", "core_utilisation", "format_cores", "counts_header", "counts_row",
           "table_main", "main"]

#: the Yosys script per family: the same mapping as the per-block pass of synth/boards.py, flat
SYNTH = {"ice40": "synth_ice40 -top core", "ecp5": "synth_ecp5 -top core"}

#: finer than the per-block pass's kinds (synth/boards.py BLOCK_KINDS): carries apart from LUTs,
#: ECP5 distributed RAM
_KINDS = {"LUT": ("SB_LUT4", "LUT4"), "CARRY": ("SB_CARRY", "CCU2C"), "FF": ("SB_DFF", "TRELLIS_FF"),
          "BRAM": ("SB_RAM40_4K", "DP16KD", "PDPW16KD"), "LUTRAM": ("TRELLIS_DPR16X4",)}
#: the counts :func:`unit_utilisation` gives, in table order
COUNTS = tuple(_KINDS)
#: their column headings in the REPORT.md tables
_HEADINGS = {"LUT": "LUT4", "CARRY": "Carry", "FF": "FF", "BRAM": "Block RAM", "LUTRAM": "LUT RAM",
             "seconds": "Yosys time (s)"}


def unit_utilisation(top, family="ice40", *, verilog_files=None, work_dir=None):
    """Yosys's cell counts for one Amaranth component ``top`` alone (with ``verilog_files``,
    ``{name: text}``, beside it), mapped for ``family``, flattened.

    Returns ``{"LUT": n, "CARRY": n, "FF": n, "BRAM": n, "LUTRAM": n, "seconds": s}``: LUT4s,
    carry cells (SB_CARRY; ECP5's CCU2C, two LUTs each), flip-flops, block RAMs (iCE40 4-Kbit
    SB_RAM40_4K, ECP5 18-Kbit DP16KD), ECP5 distributed-RAM cells (TRELLIS_DPR16X4, 16 x 4
    bits each), and Yosys's wall time.

    Raises
    ------
    ValueError
        An unknown ``family``.
    RuntimeError
        Yosys failed (the message ends with its output).
    """
    if family not in SYNTH:
        raise ValueError(f"family must be one of {tuple(SYNTH)}, not {family!r}")
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        out = Path(folder)
        names = []
        for name, text in (verilog_files or {}).items():
            (out / name).write_text(text)
            names.append(name)
        (out / "core.v").write_text(verilog.convert(top, name="core", emit_src=False))
        script = "".join(f"read_verilog {name}\n" for name in [*names, "core.v"]) + f"{SYNTH[family]}\n"
        started = time.monotonic()
        stat = yosys_stat(yowasp_tool("yosys"), out, script, name="core")
        seconds = time.monotonic() - started
    counts = count_cells(stat["modules"]["\\core"].get("num_cells_by_type", {}), _KINDS)
    return {**counts, "seconds": round(seconds, 1)}


def core_utilisation(core, family="ice40", *, registered_reset=False, work_dir=None):
    """:func:`unit_utilisation` of one ``core`` (a name in :data:`apwake.rtl.soc.cores.CORES`)
    as an AP's core (reset at ``AP_BOOT``) with its Verilog from its pythondata package;
    ``registered_reset`` as a large build's SoC makes it (``CoreChoice.make``).

    Raises
    ------
    ValueError
        An unknown ``core`` or ``family``.
    RuntimeError
        Yosys failed (the message ends with its output).
    """
    choice = core_choice(core)
    top = choice.make(reset_address=AP_BOOT, registered_reset=registered_reset)
    return unit_utilisation(top, family, verilog_files=choice.verilog_files(), work_dir=work_dir)


def format_cores(results, family):
    """The REPORT.md section: ``results`` is ``{core: core_utilisation(core, family)}``."""
    lines = [f"## cores-{family} (one core of each kind, Yosys {SYNTH[family].split()[0]}, flattened)", "",
             f"Command: `python -m apwake.synth.cores --family {family} --write` (synth/cores.py): each "
             f"core as the SoC instantiates it, alone: Amaranth's Verilog of the wrapper plus the "
             f"core's Verilog from its pythondata package, then `{SYNTH[family]}; stat`.  Counts "
             f"before placement (nextpnr packs LUTs, carries and flip-flops into logic cells).", "",
             *counts_header("Core")]
    for core, c in results.items():
        lines.append(f"| {core} ({CORES[core].description}) | {counts_row(c)} |")
    return "\n".join(lines) + "\n"


def counts_header(*leading, seconds=True):
    """The heading line and the rule line of a table whose rows end with :func:`counts_row`
    (the same ``seconds``), after the ``leading`` columns' headings."""
    headings = [*leading, *(_HEADINGS[k] for k in COUNTS + (("seconds",) if seconds else ()))]
    return ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]


def counts_row(counts, *, seconds=True):
    """The count columns of a table row: :data:`COUNTS` (LUT4, carry, FF, block RAM, LUT RAM),
    then Yosys's time unless ``seconds`` is False."""
    return " | ".join(str(counts[k]) for k in COUNTS + (("seconds",) if seconds else ()))


def table_main(argv, *, module, doc, section, table):
    """The command line of a per-unit table module (``python -m MODULE [--family F] [--write]``,
    described by the first paragraph of ``doc``): prints ``table(family)`` and with ``--write``
    puts it in synth/REPORT.md as the section ``SECTION-FAMILY``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--family", choices=tuple(SYNTH), default="ice40")
    parser.add_argument("--write", action="store_true", help="put the table in synth/REPORT.md")
    args = parser.parse_args(argv)
    text = table(args.family)
    print(text)
    if args.write:
        write_report([], sections={f"{section}-{args.family}": text})
    return 0


def main(argv=None):
    return table_main(argv, module="apwake.synth.cores", doc=__doc__, section="cores",
                      table=lambda family: format_cores({core: core_utilisation(core, family) for core in CORES},
                                                        family))


if __name__ == "__main__":
    raise SystemExit(main())
