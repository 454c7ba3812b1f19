"""The local APIC register map as data (docs/spec/lapic.md §1.1).

One table serves the RTL decoder (:class:`apwake.rtl.lapic.local_apic.LocalApic`), the Python
bus-functional models and tests (:mod:`apwake.sim.vip.lapic`), and the Markdown register reference
(``python -m apwake.rtl.lapic.registers`` prints it).  Offsets are never typed anywhere else.

A register is addressed by its *index*: the xAPIC MMIO offset divided by 16, which is also the
x2APIC MSR number minus 0x800.
"""

import enum as _enum
from dataclasses import dataclass

from .layouts import MSR_X2APIC_FIRST

__all__ = ["Access", "Kind", "Register", "REGISTERS", "BY_NAME", "BY_INDEX", "markdown"]


class Access(_enum.Enum):
    RW = "RW"
    RO = "RO"
    WO = "WO"
    ABSENT = "-"


class Kind(_enum.Enum):
    #: plain storage: written through ``write_mask``, other bits read as ``reset``
    STORAGE = "storage"
    #: behaviour of its own in the RTL (ID, PPR, EOI, ESR, ICR, banks, ...)
    SPECIAL = "special"


@dataclass(frozen=True)
class Register:
    name: str
    index: int
    xapic: Access
    x2apic: Access
    reset: int = 0
    write_mask: int = 0
    #: defined read-only bits; a write of a bit outside ``write_mask | ro_mask`` is a
    #: reserved-bit write (#GP in x2APIC mode, ignored in xAPIC mode)
    ro_mask: int = 0
    kind: Kind = Kind.SPECIAL
    doc: str = ""

    @property
    def offset(self):
        """xAPIC MMIO offset."""
        return self.index << 4

    @property
    def msr(self):
        """x2APIC MSR number, or None when the register does not exist in x2APIC mode."""
        return None if self.x2apic is Access.ABSENT else MSR_X2APIC_FIRST + self.index


_RW, _RO, _WO, _NO = Access.RW, Access.RO, Access.WO, Access.ABSENT
_S = Kind.STORAGE

_LVT_MASKED = 0x1_0000
# Writable LVT bits follow KVM's apic_lvt_mask (docs/spec/lapic.md §1.1).  Read-only defined bits: 12
# (delivery status) in every LVT, 14 (remote IRR) only in LINT0/LINT1.
_NO_SOURCE = "LVT entry; apwake has no such source, so it never fires"
_LVT = [
    ("LVT_CMCI", 0x2F, 0x107FF, 0x1000, _NO_SOURCE),
    ("LVT_TIMER", 0x32, 0x700FF, 0x1000, "APIC timer LVT: vector, mask [16], mode [18:17] "
     "(one-shot, periodic, TSC-deadline)"),
    ("LVT_THERMAL", 0x33, 0x107FF, 0x1000, _NO_SOURCE),
    ("LVT_PERF", 0x34, 0x107FF, 0x1000, _NO_SOURCE),
    ("LVT_LINT0", 0x35, 0x1A7FF, 0x5000, "LINT0 pin: vector, mode (Fixed/SMI/NMI/INIT/ExtINT), "
     "polarity [13], remote IRR [14] (read-only), trigger [15], mask [16]"),
    ("LVT_LINT1", 0x36, 0x1A7FF, 0x5000, "LINT1 pin, as LINT0"),
    ("LVT_ERROR", 0x37, 0x100FF, 0x1000, "error interrupt: raised when ESR errors become "
     "pending; vector, mask [16]"),
]

#: VERSION[7:0]: an integrated APIC of the P4/Xeon kind, the value KVM reports too
_APIC_VERSION = 0x14

REGISTERS = [
    Register("ID", 0x02, _RO, _RO, doc="APIC ID: xAPIC bits 31:24, x2APIC all 32 bits; "
             "read-only in apwake, kept across INIT"),
    Register("VERSION", 0x03, _RO, _RO, reset=_APIC_VERSION | ((len(_LVT) - 1) << 16),
             doc="[7:0] version 0x14, [23:16] max LVT index (6: seven LVT entries)"),
    Register("TPR", 0x08, _RW, _RW, write_mask=0xFF, kind=_S, doc="task priority"),
    Register("APR", 0x09, _RO, _NO, doc="arbitration priority"),
    Register("PPR", 0x0A, _RO, _RO, doc="processor priority, from TPR and the highest ISR vector"),
    Register("EOI", 0x0B, _WO, _WO, doc="end of interrupt: clears the highest ISR bit; "
             "x2APIC: non-zero write is #GP"),
    Register("RRD", 0x0C, _RO, _NO, doc="remote read (82489DX): reads 0"),
    Register("LDR", 0x0D, _RW, _RO, write_mask=0xFF00_0000, kind=_S,
             doc="logical destination; x2APIC: derived from the ID, read-only"),
    Register("DFR", 0x0E, _RW, _NO, reset=0xFFFF_FFFF, write_mask=0xF000_0000, kind=_S,
             doc="destination format: 0xF flat, 0x0 cluster"),
    Register("SVR", 0x0F, _RW, _RW, reset=0xFF, write_mask=0x1FF, kind=_S,
             doc="spurious vector [7:0], APIC software enable [8]"),
    *[Register(f"ISR{i}", 0x10 + i, _RO, _RO, doc=f"in-service vectors {32*i}-{32*i+31}")
      for i in range(8)],
    *[Register(f"TMR{i}", 0x18 + i, _RO, _RO, doc=f"trigger mode of vectors {32*i}-{32*i+31} (1: level, only "
             "from a level-triggered LINT)")
      for i in range(8)],
    *[Register(f"IRR{i}", 0x20 + i, _RO, _RO, doc=f"requested vectors {32*i}-{32*i+31}")
      for i in range(8)],
    Register("ESR", 0x28, _RW, _RW, doc="error status; a write latches the pending errors; "
             "x2APIC: non-zero write is #GP"),
    *[Register(name, index, _RW, _RW, reset=_LVT_MASKED, write_mask=mask, ro_mask=ro,
               kind=_S, doc=doc)
      for name, index, mask, ro, doc in _LVT],
    Register("ICR", 0x30, _RW, _RW, doc="interrupt command (xAPIC low half; x2APIC all 64 bits); "
             "writing it sends the IPI"),
    Register("ICR_HI", 0x31, _RW, _NO, write_mask=0xFF00_0000,
             doc="xAPIC destination [31:24], sampled when ICR is written"),
    Register("TIMER_INITIAL", 0x38, _RW, _RW, write_mask=0xFFFF_FFFF, kind=_S,
             doc="timer initial count: writing it loads the current count and "
             "starts the timer (0 stops it); ignored in TSC-deadline mode"),
    Register("TIMER_CURRENT", 0x39, _RO, _RO, doc="timer current count, decremented every divisor fabric "
             "clocks; reads 0 in TSC-deadline mode"),
    Register("TIMER_DIVIDE", 0x3E, _RW, _RW, write_mask=0xB, kind=_S,
             doc="timer divide: bits 3,1,0 select 2, 4, ... 128 or 1"),
    Register("SELF_IPI", 0x3F, _NO, _WO, write_mask=0xFF,
             doc="x2APIC only: Fixed, edge IPI to self with vector [7:0]"),
]

BY_NAME = {r.name: r for r in REGISTERS}
BY_INDEX = {r.index: r for r in REGISTERS}
assert len(BY_INDEX) == len(REGISTERS), "two registers share an index"


def markdown():
    """The register reference as a Markdown table (docs/REGISTERS.md is generated from it)."""
    lines = ["| Register | MMIO offset | x2APIC MSR | xAPIC | x2APIC | Reset | Writable bits | Notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in REGISTERS:
        msr = "-" if r.msr is None else f"0x{r.msr:03X}"
        mask = f"0x{r.write_mask:08X}" if r.kind is Kind.STORAGE else "see notes"
        reset = "the APIC ID" if r.name == "ID" else f"0x{r.reset:08X}"
        lines.append(f"| {r.name} | 0x{r.offset:03X} | {msr} | {r.xapic.value} | {r.x2apic.value} "
                     f"| {reset} | {mask} | {r.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
