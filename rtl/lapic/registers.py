"""The local APIC register map as data (docs/spec/lapic.md §1.1).

One table serves the RTL decoder (:class:`apwake.rtl.lapic.register_file.RegisterFile`), the Python
bus-functional models and tests (:mod:`apwake.sim.vip.lapic`), and, through the register
description layer (:mod:`apwake.rtl.lib.registers`: :data:`XAPIC_MAP`, :data:`X2APIC_MAP`), the
firmware header and ``docs/REGISTERS.md`` (``python -m apwake.firmware.export``).  Offsets are
never typed anywhere else.

A register is addressed by its *index*: the xAPIC MMIO offset divided by 16, which is also the
x2APIC MSR number minus 0x800.
"""

import enum as _enum
from dataclasses import dataclass

from apwake.rtl.lib import registers as desc
from .layouts import MSR_X2APIC_FIRST, MSR_X2APIC_LAST, XAPIC_DEFAULT_BASE, Esr, Icr, Lvt, Svr

__all__ = ["Access", "Kind", "Register", "REGISTERS", "BY_NAME", "BY_INDEX", "XAPIC_MAP", "X2APIC_MAP"]


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
    #: a write does more than store (sends an IPI, ends an interrupt, starts the timer)
    write_acts: bool = False
    #: the reset value in words where it depends on the instance (the APIC ID)
    reset_doc: str = None

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
    Register("ID", 0x02, _RO, _RO, reset_doc="the APIC ID", doc="APIC ID: xAPIC bits 31:24, x2APIC all 32 bits; "
             "read-only in apwake, kept across INIT"),
    Register("VERSION", 0x03, _RO, _RO, reset=_APIC_VERSION | ((len(_LVT) - 1) << 16),
             doc="[7:0] version 0x14, [23:16] max LVT index (6: seven LVT entries)"),
    Register("TPR", 0x08, _RW, _RW, write_mask=0xFF, kind=_S, doc="task priority"),
    Register("APR", 0x09, _RO, _NO, doc="arbitration priority"),
    Register("PPR", 0x0A, _RO, _RO, doc="processor priority, from TPR and the highest ISR vector"),
    Register("EOI", 0x0B, _WO, _WO, write_acts=True, doc="end of interrupt: clears the highest ISR bit; "
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
    Register("ESR", 0x28, _RW, _RW, write_acts=True, doc="error status; a write latches the pending errors; "
             "x2APIC: non-zero write is #GP"),
    *[Register(name, index, _RW, _RW, reset=_LVT_MASKED, write_mask=mask, ro_mask=ro,
               kind=_S, doc=doc)
      for name, index, mask, ro, doc in _LVT],
    Register("ICR", 0x30, _RW, _RW, write_acts=True, doc="interrupt command (xAPIC low half; x2APIC all 64 bits); "
             "writing it sends the IPI"),
    Register("ICR_HI", 0x31, _RW, _NO, write_mask=0xFF00_0000,
             doc="xAPIC destination [31:24], sampled when ICR is written"),
    Register("TIMER_INITIAL", 0x38, _RW, _RW, write_mask=0xFFFF_FFFF, kind=_S, write_acts=True,
             doc="timer initial count: writing it loads the current count and "
             "starts the timer (0 stops it); ignored in TSC-deadline mode"),
    Register("TIMER_CURRENT", 0x39, _RO, _RO, doc="timer current count, decremented every divisor fabric "
             "clocks; reads 0 in TSC-deadline mode"),
    Register("TIMER_DIVIDE", 0x3E, _RW, _RW, write_mask=0xB, kind=_S,
             doc="timer divide: bits 3,1,0 select 2, 4, ... 128 or 1"),
    Register("SELF_IPI", 0x3F, _NO, _WO, write_mask=0xFF, write_acts=True,
             doc="x2APIC only: Fixed, edge IPI to self with vector [7:0]"),
]

BY_NAME = {r.name: r for r in REGISTERS}
BY_INDEX = {r.index: r for r in REGISTERS}
assert len(BY_INDEX) == len(REGISTERS), "two registers share an index"


# --- the same table through the register description layer ----------------------------------------

#: bit layouts of the registers that have one (docs/spec/lapic.md §1.1, §2, §4, §5)
_LAYOUTS = {"ICR": Icr, "ESR": Esr, "SVR": Svr, **{name: Lvt for name, *_ in _LVT}}
#: fields of the registers without a layout struct; bits not listed are reserved
_FIELDS = {
    "ID": {False: [desc.Field("apic_id", 8, desc.Access.R, lsb=24)],
           True: [desc.Field("apic_id", 32, desc.Access.R)]},
    "VERSION": [desc.Field("version", 8, desc.Access.R), desc.Field("max_lvt", 8, desc.Access.R, lsb=16)],
    "TIMER_DIVIDE": [desc.Field("divide_lo", 2), desc.Field("divide_hi", 1, lsb=3)],
}
_ACCESS = {(_RO, False): desc.Access.R, (_WO, False): desc.Access.W, (_RW, False): desc.Access.RW,
           (_WO, True): desc.Access.WS, (_RW, True): desc.Access.RWS}


def _fields(r, x2apic, width):
    """The fields of ``r`` in one mode: a layout's fields with the access the masks give
    (STORAGE) or the register's access (SPECIAL), else the listed ones, else one ``value``."""
    access = _ACCESS[(r.x2apic if x2apic else r.xapic, r.write_acts)]
    listed = _FIELDS.get(r.name)
    if isinstance(listed, dict):
        return listed[x2apic]
    if listed is not None:
        return listed
    layout = _LAYOUTS.get(r.name)
    if layout is None:
        if r.kind is Kind.STORAGE and r.write_mask != (1 << width) - 1:
            lsb = (r.write_mask & -r.write_mask).bit_length() - 1
            size = r.write_mask.bit_length() - lsb
            if r.write_mask != ((1 << size) - 1) << lsb:
                raise ValueError(f"register {r.name}: write mask {r.write_mask:#x} needs a field list")
            kept = [desc.Field("value", size, access, lsb=lsb)]
            if r.reset & ~r.write_mask:      # DFR: the other bits read as their reset value
                kept.append(desc.Field("ones", width - size,
                                       desc.Access.R, lsb=0 if lsb else size))
            return kept
        return [desc.Field("value", width, access)]
    fields = []
    for f in desc.fields_of(layout, access):
        if f.lsb >= width or f.access is desc.Access.RSVD:
            if f.lsb < width:
                fields.append(desc.Field(f.name, min(f.width, width - f.lsb), desc.Access.RSVD, lsb=f.lsb))
            continue
        if r.kind is Kind.STORAGE:
            if f.mask & r.write_mask == f.mask:
                pass
            elif f.mask & r.ro_mask == f.mask:
                f = desc.Field(f.name, f.width, desc.Access.R, lsb=f.lsb)
            elif not f.mask & (r.write_mask | r.ro_mask):
                f = desc.Field(f.name, f.width, desc.Access.RSVD, lsb=f.lsb)
            else:
                raise ValueError(f"register {r.name}: field {f.name} is partly writable")
        elif f.name == "delivery_status":
            f = desc.Field(f.name, f.width, desc.Access.R, lsb=f.lsb)
        fields.append(f)
    return fields


def _map(x2apic):
    rows = []
    for r in REGISTERS:
        if (r.x2apic if x2apic else r.xapic) is Access.ABSENT:
            continue
        width = 64 if x2apic and r.name == "ICR" else 32
        rows.append(desc.Register(r.name, r.index if x2apic else r.offset, _fields(r, x2apic, width),
                                  width=width, reset=r.reset, reset_doc=r.reset_doc, doc=r.doc))
    if x2apic:
        return desc.RegisterMap("lapic_x2apic", MSR_X2APIC_FIRST, MSR_X2APIC_LAST - MSR_X2APIC_FIRST + 1, rows,
                                space="msr", prefix="MSR_X2APIC", source="docs/spec/lapic.md §1.1",
                                doc="The local APIC in x2APIC mode: MSR 0x800 + index (RDMSR/WRMSR).")
    return desc.RegisterMap("lapic_xapic", XAPIC_DEFAULT_BASE, 0x1000, rows, prefix="APIC",
                            source="docs/spec/lapic.md §1.1",
                            doc="The local APIC in xAPIC mode: 32-bit MMIO slots in a 4 KiB page "
                                "(default base 0xFEE0_0000; the soft-SoC puts each core's at its APIC window).")


#: the xAPIC MMIO page and the x2APIC MSR range as register maps
XAPIC_MAP = _map(x2apic=False)
X2APIC_MAP = _map(x2apic=True)
