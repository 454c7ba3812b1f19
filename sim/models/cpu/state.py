"""Architectural register state of a CPU model: what start-up mechanisms set, and what guest
programs require on entry.

Each :class:`apwake.sim.models.cpu.model.CpuModel` carries an :class:`ArchState` (``cpu.arch``).
Start-up mechanisms set it as the architecture or their specification says:

* RESET and INIT: Intel SDM vol. 3A §10.1.1 (9.1.1 in older editions), Table "IA-32 and Intel 64
  Processor States Following Power-up, Reset, or INIT": CR0 = 0x6000_0010 at RESET and 0x10 with
  CD/NW kept at INIT, EIP = 0xFFF0, CS selector 0xF000 base 0xFFFF_0000, other segments 0,
  limits 0xFFFF, "Present, R/W, Accessed", EFLAGS = 0x2, GDTR/IDTR base 0 limit 0xFFFF, CR2/CR3/CR4
  and EFER 0 (:meth:`ArchState.reset`, :meth:`ArchState.after_init`).
* SIPI: real mode, CS selector = vector << 8, CS base = vector << 12, IP = 0; nothing else
  changes (SDM vol. 3A "MP Initialization Protocol"; :meth:`ArchState.after_sipi`).
* ACPI MADT multiprocessor wakeup (ACPI 6.5 §5.2.12.19): the AP enters the wakeup vector in
  64-bit long mode, paging on with the vector identity-mapped, interrupts off, flat selectors
  (:meth:`ArchState.long_mode_entry`).
* SEV-ES launch: real mode at the firmware's SEV-ES reset block, as QEMU sets the AP's launch VMSA
  from OVMF's reset-block address (CS base = address & 0xFFFF_0000, IP = address & 0xFFFF;
  :meth:`ArchState.sev_es_launch`).
* SMI: SDM vol. 3C §32.5.1 (34.5.1 in older editions), "Processor Register Initialization in
  SMM": CS selector SMBASE >> 4, base SMBASE, EIP 0x8000, CR0 PE/EM/TS/PG cleared, CR4 and EFER 0,
  4 GiB limits; RSM restores the saved state (:meth:`ArchState.smm_entry`).
* A carried context (VMI's ``SetInitialAPState``, a direct start): the start-context unit's
  launch record (:meth:`ArchState.from_context`, ``rtl/start_context``).

Guest programs declare the state they need (:class:`EntryRequirement`, given to
:meth:`apwake.sim.vip.memory.Memory.load_program` as ``entry``); the CPU checks it each time it
enters the program, and a wrong state is a failure naming the register and the value
("CPU 3 (APIC ID 0x3) entered start_secondary with FS base 0: per-CPU segment missing").

Segment attributes use the SVM VMCB/VMSA 12-bit format (AMD APM vol. 2, "VMCB Layout, State
Save Area"): bits 7:0 are the descriptor's access byte (type, S, DPL, P), bits 11:8 its flags
(AVL, L, D/B, G).
"""

import dataclasses
from dataclasses import dataclass, field

from apwake.rtl.start_context.layouts import SegmentAttributes
from apwake.sim.harness.codec import pack

__all__ = ["Segment", "DescriptorTable", "ArchState", "EntryRequirement", "CR0", "CR4", "EFER",
           "RFLAGS_IF", "SEGMENTS", "real_mode_at", "long_mode_flat", "segment_attrib"]

#: CR0 bits (SDM vol. 3A §2.5)
CR0 = {"PE": 1 << 0, "MP": 1 << 1, "EM": 1 << 2, "TS": 1 << 3, "ET": 1 << 4, "NE": 1 << 5,
       "WP": 1 << 16, "AM": 1 << 18, "NW": 1 << 29, "CD": 1 << 30, "PG": 1 << 31}
#: the CR4 bits the models use
CR4 = {"PSE": 1 << 4, "PAE": 1 << 5, "PGE": 1 << 7, "OSFXSR": 1 << 9, "VMXE": 1 << 13,
       "PCIDE": 1 << 17}
#: EFER bits (SDM vol. 4 / AMD APM vol. 2)
EFER = {"SCE": 1 << 0, "LME": 1 << 8, "LMA": 1 << 10, "NXE": 1 << 11, "SVME": 1 << 12}
RFLAGS_IF = 1 << 9
_RFLAGS_FIXED = 1 << 1
#: the segment registers, in the order state maps list them
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_ATTRIB_L = 1 << 9          # attrib bit 9: descriptor flag L (64-bit code)


def segment_attrib(*, type, s=1, dpl=0, p=1, avl=0, long=0, db=0, g=0):
    """The 12-bit VMCB attribute of a descriptor with these fields, packed with the layout the
    RTL uses (:class:`apwake.rtl.start_context.layouts.SegmentAttributes`; ``long`` is its
    ``l``).  ValueError naming a field out of range."""
    return pack(SegmentAttributes, type=type, s=s, dpl=dpl, p=p, avl=avl, l=long, db=db, g=g)


#: real-mode and SMM segments: "Present, R/W, Accessed" (data, type 3; CS: code, type 0xB)
_DATA_RW = segment_attrib(type=0x3)
_CODE_RX = segment_attrib(type=0xB)
#: flat 64-bit code and data segments, as firmware and Linux set them for long mode
_CODE64 = segment_attrib(type=0xB, long=1, g=1)
_DATA64 = segment_attrib(type=0x3, db=1, g=1)


@dataclass(frozen=True)
class Segment:
    """A segment register with its hidden part: ``selector`` (16 bits), ``base`` (linear
    address), ``limit`` (bytes, expanded), ``attrib`` (VMCB format, see the module docstring)."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    attrib: int = _DATA_RW

    def as_dict(self):
        # (not dataclasses.asdict, which deep-copies field by field: every CPU start records one)
        return {"selector": self.selector, "base": self.base, "limit": self.limit, "attrib": self.attrib}


@dataclass(frozen=True)
class DescriptorTable:
    """GDTR or IDTR: ``base`` (linear address) and ``limit`` (bytes - 1)."""

    base: int = 0
    limit: int = 0xFFFF

    def as_dict(self):
        return {"base": self.base, "limit": self.limit}


def _real_mode(selector):
    return Segment(selector=selector, base=selector << 4, limit=0xFFFF, attrib=_DATA_RW)


@dataclass
class ArchState:
    """A CPU's architectural state as start-up mechanisms set it (all integers; ``rip`` and
    ``rsp`` are EIP/ESP outside 64-bit mode).  Mutable: programs change it as the code they
    stand for would (``cpu.arch.rflags``, ``dataclasses.replace``)."""

    cr0: int = 0x6000_0010
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    rip: int = 0xFFF0
    rsp: int = 0
    rflags: int = _RFLAGS_FIXED
    cs: Segment = field(default_factory=lambda: Segment(0xF000, 0xFFFF_0000, 0xFFFF, _CODE_RX))
    ss: Segment = field(default_factory=Segment)
    ds: Segment = field(default_factory=Segment)
    es: Segment = field(default_factory=Segment)
    fs: Segment = field(default_factory=Segment)
    gs: Segment = field(default_factory=Segment)
    gdtr: DescriptorTable = field(default_factory=DescriptorTable)
    idtr: DescriptorTable = field(default_factory=DescriptorTable)

    # --- what the architecture and the specifications set -------------------------------------
    @classmethod
    def reset(cls):
        """Power-up or RESET."""
        return cls()

    def after_init(self):
        """INIT: as RESET, but CR0.CD and CR0.NW keep their values."""
        return dataclasses.replace(ArchState(), cr0=0x10 | self.cr0 & (CR0["CD"] | CR0["NW"]))

    def after_sipi(self, vector):
        """A SIPI with ``vector`` starts a CPU in wait-for-SIPI: CS = vector << 8, IP = 0."""
        if not 0 <= vector < 0x100:
            raise ValueError(f"SIPI vector must be 0 to 0xFF, not {vector!r}")
        cs = dataclasses.replace(_real_mode(vector << 8), attrib=_CODE_RX)
        return dataclasses.replace(self, cs=cs, rip=0)

    @classmethod
    def real_mode(cls, address, *, cs_base=None):
        """Real mode at physical ``address``: CS base ``cs_base`` (default: its 64 KiB
        segment), IP the rest."""
        base = address & 0xFFFF_0000 if cs_base is None else cs_base
        if not 0 <= address - base < 0x10000:
            raise ValueError(f"address {address:#x} is not within 64 KiB of CS base {base:#x}")
        state = cls(cr0=0x10)
        state.cs = Segment(selector=(base >> 4) & 0xFFFF, base=base, limit=0xFFFF, attrib=_CODE_RX)
        state.rip = address - base
        return state

    @classmethod
    def sev_es_launch(cls, address):
        """An SEV-ES AP's launch VMSA: real mode at the firmware's reset block ``address`` (QEMU
        ``sev_es_set_reset_vector``: CS base = address & 0xFFFF_0000, IP = address & 0xFFFF, CS
        selector 0xF000)."""
        state = cls.real_mode(address)
        state.cs = dataclasses.replace(state.cs, selector=0xF000)
        return state

    @classmethod
    def long_mode_entry(cls, rip, *, cr3, rsp=0, cr4_extra=0):
        """64-bit long mode at ``rip``: paging on with the page tables at ``cr3``, flat
        selectors (code 0x10, data 0x18: the selectors firmware and Linux's early GDT use),
        interrupts off."""
        state = cls(cr0=CR0["PE"] | CR0["MP"] | CR0["ET"] | CR0["NE"] | CR0["WP"] | CR0["PG"],
                    cr3=cr3, cr4=CR4["PAE"] | cr4_extra, efer=EFER["LME"] | EFER["LMA"],
                    rip=rip, rsp=rsp, rflags=_RFLAGS_FIXED)
        state.cs = Segment(selector=0x10, base=0, limit=0xFFFF_FFFF, attrib=_CODE64)
        for name in ("ss", "ds", "es", "fs", "gs"):
            setattr(state, name, Segment(selector=0x18, base=0, limit=0xFFFF_FFFF, attrib=_DATA64))
        state.gdtr = DescriptorTable(base=0, limit=0x1F)
        return state

    def smm_entry(self, smbase):
        """SMI: the SMM entry state for ``smbase`` (this state is what RSM restores)."""
        state = ArchState(cr0=self.cr0 & ~(CR0["PE"] | CR0["EM"] | CR0["TS"] | CR0["PG"]),
                          cr3=self.cr3, rip=0x8000, rflags=_RFLAGS_FIXED)
        state.cs = Segment(selector=(smbase >> 4) & 0xFFFF, base=smbase, limit=0xFFFF_FFFF,
                           attrib=_CODE_RX)
        for name in ("ss", "ds", "es", "fs", "gs"):
            setattr(state, name, Segment(selector=0, base=0, limit=0xFFFF_FFFF, attrib=_DATA_RW))
        state.gdtr, state.idtr = self.gdtr, self.idtr
        return state

    @classmethod
    def from_context(cls, context):
        """The state a start-context launch record carries (``rtl/start_context``: a dict with
        ``cr0`` ... ``idtr`` as the record's :class:`StartState` unpacks, segments as dicts
        with ``selector``, ``attrib``, ``limit``, ``base``)."""
        def segment(value):
            return Segment(selector=int(value["selector"]), base=int(value["base"]),
                           limit=int(value["limit"]), attrib=int(value["attrib"]))

        def table(value):
            return DescriptorTable(base=int(value["base"]), limit=int(value["limit"]))

        return cls(cr0=int(context["cr0"]), cr2=int(context["cr2"]), cr3=int(context["cr3"]),
                   cr4=int(context["cr4"]), efer=int(context["efer"]), rip=int(context["eip"]),
                   rsp=int(context["esp"]), rflags=int(context["eflags"]),
                   **{name: segment(context[name]) for name in SEGMENTS},
                   gdtr=table(context["gdtr"]), idtr=table(context["idtr"]))

    # --- what it means ------------------------------------------------------------------------
    @property
    def mode(self):
        """``real``, ``protected``, ``protected+paging``, ``compatibility`` or ``64-bit``."""
        if not self.cr0 & CR0["PE"]:
            return "real"
        if self.efer & EFER["LMA"]:
            return "64-bit" if self.cs.attrib & _ATTRIB_L else "compatibility"
        return "protected+paging" if self.cr0 & CR0["PG"] else "protected"

    @property
    def linear_ip(self):
        """Where the next instruction is fetched: CS base + RIP (64-bit mode: RIP)."""
        return self.rip if self.mode == "64-bit" else (self.cs.base + self.rip) & 0xFFFF_FFFF

    @property
    def interrupts_enabled(self):
        return bool(self.rflags & RFLAGS_IF)

    def set_interrupt_flag(self, enabled):
        self.rflags = self.rflags | RFLAGS_IF if enabled else self.rflags & ~RFLAGS_IF

    def as_dict(self):
        """The state as a report carries it: ``mode`` and every register (integers)."""
        return {"mode": self.mode, "cr0": self.cr0, "cr3": self.cr3, "cr4": self.cr4,
                "efer": self.efer, "rip": self.rip, "rsp": self.rsp, "rflags": self.rflags,
                **{name: getattr(self, name).as_dict() for name in SEGMENTS},
                "gdtr": self.gdtr.as_dict(), "idtr": self.idtr.as_dict()}

    def value(self, register):
        """One register by the name a failure gives it: ``cr0``, ``rip``, ``fs.base``,
        ``gdtr.limit``... (KeyError naming it if there is no such register)."""
        head, _, part = register.partition(".")
        if not hasattr(self, head) or head.startswith("_"):
            raise KeyError(f"no register {register!r}")
        value = getattr(self, head)
        if part:
            if not hasattr(value, part):
                raise KeyError(f"no register {register!r}")
            value = getattr(value, part)
        return value


class EntryRequirement:
    """What a guest program needs on entry, checked by the CPU each time it enters the program.

    Parameters
    ----------
    description : str
        What the program expects, for reports ("real mode at the trampoline page").
    checks : sequence of callables
        ``check(cpu, state) -> None`` if satisfied, else ``(register, meaning)``: the register
        by the name :meth:`ArchState.value` takes (``"fs.base"``) and what its value means
        ("per-CPU segment missing").  The first failing check is the one reported.
    alternatives : sequence of EntryRequirement, optional
        Instead of ``checks``: the program has several entry states (a trampoline entered in
        real mode by a SIPI or in 64-bit mode by a mailbox wakeup); one must hold, and the
        failure names the problem of the alternative that got furthest (the entry the CPU was
        nearest to).
    """

    def __init__(self, description, checks=(), *, alternatives=()):
        if bool(checks) == bool(alternatives):
            raise ValueError("an entry requirement has checks or alternatives, not both or neither")
        self.description = description
        self.checks = tuple(checks)
        self.alternatives = tuple(alternatives)

    def problem(self, cpu, state):
        """None, or ``(register, value, meaning)`` for the first check that fails; with
        alternatives, the problem of the one that got furthest (the entry it was meant to be)."""
        return self._problem(cpu, state)[1]

    def _problem(self, cpu, state):
        """``(checks passed, problem or None)``."""
        if self.alternatives:
            results = [alt._problem(cpu, state) for alt in self.alternatives]
            if any(problem is None for _, problem in results):
                return len(self.checks), None
            return max(results, key=lambda result: result[0])
        for passed, check in enumerate(self.checks):
            found = check(cpu, state)
            if found is not None:
                register, meaning = found
                return passed, (register, state.value(register), meaning)
        return len(self.checks), None

    def failure(self, cpu, state, program):
        """None, or the failure message: ``"<cpu> entered <program> with <REG> <value>:
        <meaning>"``."""
        found = self.problem(cpu, state)
        if found is None:
            return None
        register, value, meaning = found
        head, _, part = register.partition(".")
        shown = head.upper() + (f" {part}" if part else "")
        value = f"{value:#x}" if value else "0"
        return f"{cpu.name} entered {program} with {shown} {value}: {meaning}"


def real_mode_at(address, what):
    """An entry requirement: real mode, fetching at physical ``address`` (``what`` names the
    code, e.g. "the real-mode trampoline")."""
    def mode(cpu, state):
        return None if state.mode == "real" else ("cr0", f"{what} runs in real mode (CR0.PE = 0)")

    def at(cpu, state):
        if state.linear_ip == address:
            return None
        register = "cs.base" if state.cs.base != address & ~0xFFFF and state.cs.base != address else "rip"
        return register, f"{what} must be entered at {address:#x}, CS:IP gives {state.linear_ip:#x}"
    return EntryRequirement(f"real mode at {address:#x}", (mode, at))


def long_mode_flat(what, *, interrupts_off=True):
    """An entry requirement: 64-bit mode, paging on, flat code segment, and (by default)
    interrupts off: the MADT wakeup environment (ACPI 6.5 §5.2.12.19; the ResetVector environment
    too, docs/ARCHITECTURE.md)."""
    def mode(cpu, state):
        if state.mode == "64-bit":
            return None
        return ("efer" if not state.efer & EFER["LMA"] else "cs.attrib"), f"{what} needs 64-bit mode"

    def paging(cpu, state):
        return None if state.cr0 & CR0["PG"] else ("cr0", f"{what} needs paging on (CR0.PG)")

    def flat(cpu, state):
        return None if state.cs.base == 0 else ("cs.base", f"{what} needs a flat code segment")

    def cli(cpu, state):
        if not interrupts_off or not state.interrupts_enabled:
            return None
        return "rflags", f"{what} must be entered with interrupts off (RFLAGS.IF = 0)"
    return EntryRequirement(f"64-bit mode{', interrupts off' if interrupts_off else ''}",
                            (mode, paging, flat, cli))
