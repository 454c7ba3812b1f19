"""GTKWave save files written beside a waveform, with signals grouped as the design says.

The file is written with pyvcd's :class:`vcd.gtkw.GTKWSave`, not by hand.
"""

from pathlib import Path

from vcd.gtkw import GTKWSave

__all__ = ["write_gtkw", "SCOPE"]

#: Hierarchy prefix of the top's signals in Verilator's FST trace.
SCOPE = "{top}."


def write_gtkw(wave_file, top, groups, *, out=None):
    """Write ``<wave_file>.gtkw`` (or ``out``) opening ``wave_file`` with ``groups``
    (``[(name, [signal, ...])]``, signal names relative to the top); returns its path."""
    wave_file = Path(wave_file)
    out = Path(out) if out else wave_file.with_suffix(".gtkw")
    scope = SCOPE.format(top=top)
    with open(out, "w") as f:
        save = GTKWSave(f)
        save.comment(f"apwake waveform view of {top}; open with: gtkwave {out.name}")
        save.dumpfile(str(wave_file.resolve()))
        save.savefile(str(out.resolve()))
        save.sst_expanded(True)
        for i, (name, signals) in enumerate(groups):
            with save.group(name, closed=i > 0):
                for signal in signals:
                    save.trace(scope + signal)
    return out
