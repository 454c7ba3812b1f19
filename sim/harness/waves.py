"""GTKWave save files written beside a waveform, with signals grouped as the design says.

The file is written with pyvcd's :class:`vcd.gtkw.GTKWSave`, not by hand.  The waveform is
read back (pywellen) so that every trace names a signal the file really has, with the bit range
GTKWave needs for vectors (``irr[255:0]``).
"""

from pathlib import Path

import pywellen
from vcd.gtkw import GTKWSave

__all__ = ["write_gtkw", "SCOPE"]

#: Hierarchy prefix of the top's signals in Verilator's FST trace.
SCOPE = "{top}."


def _widths(wave_file):
    return {str(var)[4:-1]: var.bitwidth for var in pywellen.Waveform(str(wave_file)).all_vars()}


def write_gtkw(wave_file, top, groups, *, out=None):
    """Write ``<wave_file>.gtkw`` (or ``out``) opening ``wave_file`` with ``groups``
    (``[(name, [signal, ...])]``, signal names relative to the top); returns its path.
    Signals the waveform lacks are listed in a comment instead of silently dropped."""
    wave_file = Path(wave_file)
    out = Path(out) if out else wave_file.with_suffix(".gtkw")
    scope = SCOPE.format(top=top)
    widths = _widths(wave_file)
    missing = []
    with open(out, "w") as f:
        save = GTKWSave(f)
        save.comment(f"apwake waveform view of {top}; open with: gtkwave {out.name}")
        save.dumpfile(str(wave_file.resolve()))
        save.savefile(str(out.resolve()))
        save.zoom_markers(-20.0)        # about 2 us across the default window
        save.sst_expanded(True)
        for i, (name, signals) in enumerate(groups):
            with save.group(name, closed=i > 1):     # fabric and the first APIC open
                for signal in signals:
                    full = scope + signal
                    if full not in widths:
                        missing.append(full)
                        continue
                    width = widths[full]
                    save.trace(full if width == 1 else f"{full}[{width - 1}:0]",
                               datafmt="hex")
        if missing:
            save.comment("not in the waveform: " + " ".join(missing))
    return out
