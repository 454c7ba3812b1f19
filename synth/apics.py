"""Per-core FPGA cost of the local APIC's size options (issue 16): one
:class:`~apwake.rtl.lapic.local_apic.LocalApic` alone, for each register storage
(:data:`~apwake.rtl.lapic.register_file.STORAGE_CHOICES`) with and without the local sources,
and without x2APIC mode, synthesised by Yosys for a family and counted, at the boards' 32
vectors.

``python -m apwake.synth.apics [--family ice40|ecp5] [--write]`` prints the Markdown table
(and with ``--write`` puts it in synth/REPORT.md as the section "apics-FAMILY").
"""

from apwake.rtl.lapic import LocalApic
from apwake.rtl.lapic.register_file import STORAGE_CHOICES, ram_registers

from .cores import COUNTS, SYNTH, core_utilisation, counts_header, counts_row, table_main, unit_utilisation

__all__ = ["N_VECTORS", "ROWS", "apic_utilisation", "per_core_utilisation", "format_per_core", "format_apics",
           "main"]

#: the boards' APIC size (synth/boards.py BOARDS)
N_VECTORS = 32


def apic_utilisation(family="ice40", *, storage="flops", local_interrupts=False, x2apic_support=True,
                     n_vectors=N_VECTORS, pipelined=False, work_dir=None):
    """:func:`~apwake.synth.cores.unit_utilisation` of one APIC of ``n_vectors`` vectors
    with the given ``storage``, ``local_interrupts``, ``x2apic_support`` and ``pipelined``.

    Raises
    ------
    ValueError
        An unknown ``family`` or ``storage``.
    RuntimeError
        Yosys failed (the message ends with its output).
    """
    top = LocalApic(n_vectors=n_vectors, local_interrupts=local_interrupts, storage=storage,
                    x2apic_support=x2apic_support, pipelined=pipelined)
    return unit_utilisation(top, family, work_dir=work_dir)


def per_core_utilisation(board, *, work_dir=None):
    """What one core of ``board`` (a :class:`~apwake.synth.boards.Board`) costs with each APIC
    option: ``{storage: counts}`` for every storage of :data:`STORAGE_CHOICES`, the counts
    (LUT, CARRY, FF, BRAM, LUTRAM as :func:`~apwake.synth.cores.unit_utilisation` gives them)
    of the board's core (:func:`~apwake.synth.cores.core_utilisation`, with its reset
    flip-flop in a pipelined build) plus one APIC as the
    board builds it (its vectors, local sources, x2APIC choice and pipelining) with that storage, each
    synthesised alone, flattened, for the board's family.  The APIC alone keeps its whole
    register port (as the MSR window makes it reachable), and the SoC's shared parts (bus,
    windows engine, RAM, fabric arbitration) are not in it.

    Raises
    ------
    RuntimeError
        Yosys failed (the message ends with its output).
    """
    # a pipelined (large) build's SoC takes each core's reset from a flip-flop (rtl/soc/soc.py)
    core = core_utilisation(board.core, board.family, registered_reset=board.pipelined_fabric,
                            work_dir=work_dir)
    result = {}
    for storage in STORAGE_CHOICES:
        apic = apic_utilisation(board.family, **board.apic_options(storage), work_dir=work_dir)
        result[storage] = {kind: core[kind] + apic[kind] for kind in COUNTS}
    return result


def format_per_core(per_core, *, core, storage):
    """The Markdown lines of a board section for :func:`per_core_utilisation`'s result
    ``per_core``: a table with a row per APIC option, the build's own (``storage``) marked."""
    lines = [f"Per core, for each APIC option (one {core} core and its APIC, each synthesised alone and "
             f"flattened: synth/apics.py `per_core_utilisation`; the shared bus, windows engine, RAM "
             f"and fabric arbitration are not in it):", "",
             *counts_header("APIC storage", seconds=False)]
    for option, c in per_core.items():
        mark = " (this build)" if option == storage else ""
        lines.append(f"| {option}{mark} | {counts_row(c, seconds=False)} |")
    return lines


def format_apics(results, family):
    """The REPORT.md section: ``results`` is ``{(storage, local_interrupts, x2apic_support):
    apic_utilisation(...)}``."""
    lines = [f"## apics-{family} (one APIC of each option, {N_VECTORS} vectors, Yosys "
             f"{SYNTH[family].split()[0]}, flattened)", "",
             f"Command: `python -m apwake.synth.apics --family {family} --write` (synth/apics.py): one "
             f"`LocalApic` alone per register storage (`--apic-storage` of `apwake build`) and with or "
             f"without the local sources (`--[no-]local-interrupts`) and x2APIC mode (`--[no-]x2apic`), "
             f"then `{SYNTH[family]}; stat`.  "
             f"`ram` keeps the storage-only registers in one memory (words as wide as the widest "
             f"one's writable bits; rtl/lapic/register_file.py); the words it holds are listed.", "",
             *counts_header("Storage", "Local sources", "x2APIC", "Words in memory")]
    yes = lambda on: "yes" if on else "no"     # noqa: E731
    for (storage, local, x2apic), c in results.items():
        words = ", ".join(r.name for r in ram_registers(local)) if storage == "ram" else "-"
        lines.append(f"| {storage} | {yes(local)} | {yes(x2apic)} | {words} | {counts_row(c)} |")
    return "\n".join(lines) + "\n"


#: the table's rows: (storage, local sources, x2APIC mode); without x2APIC only as the smallest
#: boards build it (no local sources)
ROWS = [(storage, local, True) for local in (False, True) for storage in STORAGE_CHOICES] + [
    (storage, False, False) for storage in STORAGE_CHOICES]


def _table(family):
    return format_apics({(storage, local, x2apic): apic_utilisation(family, storage=storage, local_interrupts=local,
                                                                    x2apic_support=x2apic)
                         for storage, local, x2apic in ROWS}, family)


def main(argv=None):
    return table_main(argv, module="apwake.synth.apics", doc=__doc__, section="apics", table=_table)


if __name__ == "__main__":
    raise SystemExit(main())
