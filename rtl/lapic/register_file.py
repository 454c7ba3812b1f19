"""The local APIC's register access: xAPIC MMIO and x2APIC MSR decode, the storage registers and
IA32_APIC_BASE (docs/spec/lapic.md §1, §1.1, §8 #13).

The other parts of :class:`~apwake.rtl.lapic.local_apic.LocalApic` own the registers with a
behaviour of their own (ICR, IRR/ISR/TMR, ESR, the timer counts); this part reads them back and
hands every taken write to them on a :class:`~apwake.rtl.lapic.signatures.RegisterWriteSignature`.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.memory import registered_read_port

from .layouts import (XAPIC_MAX_ID, ApicBase, DeliveryMode, Icr, Lvt, LVT_MODE_BITS, Svr, TimerMode,
                      ICR_X2APIC_RESERVED, MSR_IA32_APIC_BASE, MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE,
                      MSR_X2APIC_FIRST, XAPIC_DEFAULT_BASE, x2apic_logical_id)
from .registers import Access, Kind, REGISTERS, BY_NAME
from .signatures import RegisterBusSignature, RegisterWriteSignature, Space

__all__ = ["RegisterFile", "VERSION", "MAX_LVT_INDEX", "STORAGE_CHOICES", "check_storage", "check_x2apic_support",
           "ram_registers"]

#: the VERSION register's value (version 0x14, max LVT index in [23:16]), from the table
VERSION = BY_NAME["VERSION"].reset & 0xFF
MAX_LVT_INDEX = BY_NAME["VERSION"].reset >> 16
#: the LVTs whose sources :class:`~apwake.rtl.lapic.local_sources.LocalSources` delivers
_SOURCE_LVTS = ("LVT_TIMER", "LVT_ERROR", "LVT_LINT0", "LVT_LINT1")
#: where the storage registers that no other part reads are kept: "flops" (each its own
#: flip-flops) or "ram" (one memory, block RAM on an FPGA; issue 16's smaller APIC)
STORAGE_CHOICES = ("flops", "ram")
#: the LVT mask bit, from the Lvt layout: kept in a flip-flop even with ``storage="ram"``, since
#: clearing SVR's software enable sets it in every LVT at once (docs/spec/lapic.md §5)
_LVT_MASK_BIT = data.Layout.cast(Lvt)["mask"].offset

#: what a register request decides by itself, whatever the APIC's state: the register index
#: (``addr[11:4]`` of the xAPIC page, ``addr[7:0]`` of an MSR), which MSR, the table's access
#: rights in each mode, and the value bits that make a write #GP (IA32_APIC_BASE's reserved bits;
#: an x2APIC write's reserved bits, upper half, or non-zero EOI/ESR value)
_RequestDecode = data.StructLayout({
    "index": 8,
    "is_msr": 1,
    "write": 1,
    "mmio_aligned": 1,
    "msr_x2apic": 1,
    "msr_apic_base": 1,
    "msr_tsc": 1,
    "msr_deadline": 1,
    "readable_x": 1,
    "writable_x": 1,
    "readable_x2": 1,
    "writable_x2": 1,
    "base_reserved": 1,
    "x2apic_bad_value": 1,
    "icr": 1,           # the register is ICR or SELF IPI (a write that sends): the handshake's
    "self_ipi": 1,      # back-pressure decided without comparing the index in the take cycle
})

#: what the request decides with the APIC's mode (IA32_APIC_BASE's EN and EXTD): its faults and
#: effects.  The mode changes only when an IA32_APIC_BASE write is taken, and INIT keeps it (SDM
#: vol. 3A §11.12.5.1, x2APIC state transitions: INIT leaves an APIC in the xAPIC, x2APIC or
#: disabled state it was in), so with ``registered_decode`` this is held from the decode cycle too.
_ModeDecode = data.StructLayout({
    "gp": 1,                # #GP (an MSR access)
    "illegal_address": 1,   # an xAPIC access to a reserved or unaligned offset (ESR bit 7)
    "do_write": 1,          # a write that takes effect on a register of the table
    "sends": 1,             # ... that sends an IPI (ICR, or SELF IPI in x2APIC mode)
    "readable": 1,          # a read of a readable register in the mode
    "absent_page": 1,       # an MMIO access outside xAPIC mode: the page reads all-ones
    "base_write": 1,        # an IA32_APIC_BASE write that takes effect
    "disabling": 1,         # ... and clears EN
    "x2apic_entry": 1,      # ... and enters x2APIC mode from xAPIC
})


def check_storage(storage):
    """``storage`` if it is one of :data:`STORAGE_CHOICES`; ValueError naming it otherwise."""
    if storage not in STORAGE_CHOICES:
        raise ValueError(f"storage must be one of {STORAGE_CHOICES}, not {storage!r}")
    return storage


def check_x2apic_support(x2apic_support):
    """``x2apic_support`` if it is a bool; TypeError naming it otherwise."""
    return check_bool("x2apic_support", x2apic_support)


def ram_registers(local_interrupts):
    """The storage registers that ``storage="ram"`` keeps in memory: those no other part of the
    APIC reads (TPR, SVR, LDR and DFR steer delivery; with ``local_interrupts`` the source LVTs
    and the timer's registers drive the local sources).  The memory slot is the list index."""
    steering = {"TPR", "SVR", "LDR", "DFR"}
    if local_interrupts:
        steering |= {*_SOURCE_LVTS, "TIMER_INITIAL", "TIMER_DIVIDE"}
    kept = [r for r in REGISTERS if r.kind is Kind.STORAGE and r.name not in steering]
    for r in kept:
        # a word's valid bit stands for its reset value, which must therefore be 0 (the LVT
        # mask bit apart, which stays a flip-flop)
        mask_bit = 1 << _LVT_MASK_BIT if r.name.startswith("LVT_") else 0
        if r.reset & ~mask_bit:
            raise AssertionError(f"{r.name} resets to {r.reset:#x}: a memory word can only reset to 0")
    return kept


class RegisterFile(wiring.Component):
    """Register access of one local APIC.

    * **Decode.**  ``bus.space`` selects the xAPIC page (offset ``addr``, index ``addr[11:4]``,
      legal only 16-byte aligned and only in xAPIC mode; the page reads all-ones and ignores
      writes otherwise) or the MSRs (IA32_APIC_BASE 0x1B, IA32_TSC 0x10, IA32_TSC_DEADLINE 0x6E0,
      the x2APIC range 0x800-0x8FF in x2APIC mode).  Access rights per mode come from the
      register table (:mod:`apwake.rtl.lapic.registers`).
    * **Faults.**  x2APIC: absent registers, reads of write-only and writes of read-only ones,
      reserved bits, non-zero upper halves (except ICR), non-zero EOI/ESR writes are ``gp``;
      IA32_APIC_BASE: reserved bits and illegal mode transitions (§1) are ``gp``.  xAPIC:
      reserved or unaligned offsets raise ``illegal_address`` (ESR bit 7).
    * **Handshake.**  ``bus.req_ready`` is low while an ICR or SELF IPI write meets a full
      transmit slot (``tx_busy``); the response comes one cycle after the take.  With
      ``registered_decode`` it is also low in a request's first cycle, so no request is taken
      in the cycle after a take (a pipelined APIC's reset after clearing EN comes then).
    * **Storage registers** (TPR, LDR, DFR, SVR, the LVTs, TIMER_INITIAL, TIMER_DIVIDE) are kept
      here, written through the table's write masks; LVT mask bits are forced while the APIC is
      software-disabled (§5).  LDR and the ICR are cleared on the switch to x2APIC mode
      (``x2apic_entry``).  ``soft_reset`` returns them to their reset values.
    * **IA32_APIC_BASE** (EN, EXTD, base) is kept here; BSP is the ``bsp`` input.  Clearing EN
      pulses ``disabling``.

    Parameters
    ----------
    n_vectors : int
        Width of the IRR/ISR/TMR read-back inputs.
    local_interrupts : bool
        Whether the APIC has the local sources: the TSC MSRs, TIMER_CURRENT, TMR, the LVT
        remote IRR bits and the LVT write check exist only then (their ports too).
    storage : str
        ``"flops"``: every storage register in flip-flops.  ``"ram"``: the storage registers no
        other part reads (:func:`ram_registers`: the LVTs without a source, and without local
        interrupts all seven LVTs and the timer's two registers) in one memory (words as wide
        as the widest register's writable bits), read synchronously in the cycle the request
        is taken, so the response keeps its one-cycle latency.  A valid bit per word stands
        for the reset value (so INIT and the disable reset them in one cycle) and each LVT's
        mask bit stays a flip-flop (SVR's software disable sets them all at once).  The
        behaviour is the same.
    x2apic_support : bool
        False: an APIC without x2APIC mode, as on processors whose CPUID.01H:ECX[21] is 0 (SDM
        vol. 3A §11.12.1): IA32_APIC_BASE.EXTD reads 0 and a write setting it is #GP, so the
        x2APIC MSRs are #GP too.  The x2APIC logic of the whole APIC (32-bit destinations,
        cluster matching, the MSR decode) then folds away in synthesis: 1,071 to 733 iCE40 LUTs
        for the APIC alone without local sources (synth/REPORT.md "apics-ice40").  The
        ``apic_id`` must fit 8 bits.
    registered_decode : bool
        True: what the request decides by itself and with the APIC's mode (its register, its
        faults, whether a write takes effect or sends an IPI) is decoded in the cycle the
        request is first offered and held in flip-flops; the request is taken in the next cycle
        at the earliest (``req_ready`` low in its first cycle), so every access takes a cycle
        more.  The decode then no longer shares a cycle with the register writes and the
        transmit slot it steers (a large FPGA build's critical path, synth/REPORT.md
        "ulx3s-timing").  The mode cannot change in between (only a taken IA32_APIC_BASE write
        changes it); what can (the storage registers INIT may reset, the transmit slot) is
        still read in the cycle of the take.  The requester must hold a
        request's fields unchanged until it is taken, as
        :class:`~apwake.rtl.lapic.signatures.RegisterBusSignature` asks.

    Attributes
    ----------
    bus : In(RegisterBusSignature)
        The CPU's register port.
    apic_id : In(32)
        Hardware APIC ID (read as ID); an ID above 0xFE makes the APIC x2APIC-only.  A constant
        in a design (LocalApic ties it); with ``registered_decode`` it must not change while a
        request waits, since the held decode was made with it.
    bsp : In(1)
        IA32_APIC_BASE.BSP.
    tsc : In(64), only with ``local_interrupts``
        Read as IA32_TSC.
    write : Out(RegisterWriteSignature)
        The write taken this cycle, for the parts that own a register.
    deadline_write : Out(1), only with ``local_interrupts``
        A WRMSR to IA32_TSC_DEADLINE is taken (its value on ``write.data``).
    enabled, x2apic : Out(1)
        IA32_APIC_BASE.EN; EN and EXTD (x2APIC mode).
    tpr : Out(8)
    svr : Out(Svr)
    ldr, dfr : Out(32)
        The xAPIC LDR and DFR registers.
    lvt_timer, lvt_error, lvt_lint0, lvt_lint1 : Out(Lvt), only with ``local_interrupts``
    timer_divide : Out(4), only with ``local_interrupts``
        TIMER_DIVIDE bits 3:0.
    timer_initial : Out(32), only with ``local_interrupts``
    x2apic_entry : Out(1)
        Pulse: IA32_APIC_BASE written from xAPIC to x2APIC mode.
    disabling : Out(1)
        Pulse: IA32_APIC_BASE.EN cleared (the APIC resets and drops its pending events).
    soft_reset : In(1)
        Return the storage registers to their reset values (INIT taken, or ``disabling``; a
        pipelined APIC gives ``disabling`` one cycle later, when its registered decode takes
        no request).
    illegal_address : Out(1)
        Pulse: ESR *illegal register address*.
    lvt_write_illegal : Out(1), only with ``local_interrupts``
        Pulse: an LVT written with Fixed mode and vector 0-15 (ESR *receive illegal vector*).
    tx_busy : In(1)
        The transmit slot is full: back-pressure for ICR writes, ICR bit 12 (delivery status).
    icr : In(Icr)
        The ICR, for read-back.
    irr, isr : In(n_vectors)
    tmr : In(n_vectors), only with ``local_interrupts``
    ppr, apr : In(8)
    esr : In(8)
        The ESR as software reads it.
    timer_current : In(32), only with ``local_interrupts``
    tsc_deadline : In(64), only with ``local_interrupts``
    lint_rirr : In(2), only with ``local_interrupts``
        Remote IRR of LVT LINT0/LINT1 (their bit 14).
    """

    def __init__(self, *, n_vectors, local_interrupts, storage="flops", x2apic_support=True,
                 registered_decode=False):
        self.n_vectors = n_vectors
        self.local_interrupts = local_interrupts
        self.storage = check_storage(storage)
        self.x2apic_support = check_x2apic_support(x2apic_support)
        self.registered_decode = check_bool("registered_decode", registered_decode)
        members = {
            "bus": In(RegisterBusSignature()),
            "apic_id": In(32),
            "bsp": In(1),
            "write": Out(RegisterWriteSignature()),
            "enabled": Out(1),
            "x2apic": Out(1),
            "tpr": Out(8),
            "svr": Out(Svr),
            "ldr": Out(32),
            "dfr": Out(32),
            "x2apic_entry": Out(1),
            "disabling": Out(1),
            "soft_reset": In(1),
            "illegal_address": Out(1),
            "tx_busy": In(1),
            "icr": In(Icr),
            "irr": In(n_vectors),
            "isr": In(n_vectors),
            "ppr": In(8),
            "apr": In(8),
            "esr": In(8),
        }
        if local_interrupts:
            members.update({
                "tsc": In(64),
                "deadline_write": Out(1),
                **{name.lower(): Out(Lvt) for name in _SOURCE_LVTS},
                "timer_divide": Out(4),
                "timer_initial": Out(32),
                "lvt_write_illegal": Out(1),
                "tmr": In(n_vectors),
                "timer_current": In(32),
                "tsc_deadline": In(64),
                "lint_rirr": In(2),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        lsrc = self.local_interrupts
        port = self.bus

        apic_base = Signal(ApicBase, init={"enable": 1, "base": XAPIC_DEFAULT_BASE >> 12})
        in_ram = ram_registers(lsrc) if self.storage == "ram" else []
        ram_names = [r.name for r in in_ram]
        storage = {r.name: Signal(32, init=r.reset, name=r.name.lower())
                   for r in REGISTERS if r.kind is Kind.STORAGE and r.name not in ram_names}
        # storage="ram": the words, whether each was written since reset, the LVTs' mask bits
        lvt_mask = {name: Signal(init=1, name=f"{name.lower()}_mask")
                    for name in ram_names if name.startswith("LVT_")}
        if in_ram:
            ram_valid = Signal(len(in_ram))
            # as wide as the widest word (the mask bit apart): one iCE40 block of 16-bit words
            # when only the source-less LVTs are kept; block RAM where the FPGA has a choice
            width = max(self._kept_mask(r, lvt_mask).bit_length() for r in in_ram)
            m.submodules.ram = ram = Memory(shape=width, depth=len(in_ram), init=[],
                                            attrs={"ram_style": "block"})
            ram_write = ram.write_port()
            ram_read = registered_read_port(m, ram, name="ram")
        resp_valid = Signal()
        resp_rdata = Signal(64)
        resp_gp = Signal()

        # An APIC whose ID does not fit the xAPIC's 8 bits (0xFF is the xAPIC broadcast) can
        # only run in x2APIC mode (SDM vol. 3A §11.12, x2APIC; ACPI lists such IDs in Local
        # x2APIC entries): EXTD reads as 1 from reset, and a write that would leave x2APIC mode
        # is #GP.  The SDM allows x2APIC -> disabled, but the way back from disabled goes
        # through xAPIC mode, which such an ID cannot use; apwake refuses the disable rather
        # than strand the APIC (a deliberate deviation).  The ID is an input, so this is
        # decided at run time.
        # Without x2APIC support (a processor whose CPUID.01H:ECX[21] is 0) EXTD stays 0 and
        # setting it is #GP (SDM vol. 3A §11.12.1); the fabric refuses IDs above 0xFE then.
        if self.x2apic_support:
            x2apic_only = self.apic_id > XAPIC_MAX_ID
            extd = apic_base.extd | x2apic_only
        else:
            x2apic_only = extd = Const(0)
        enabled = apic_base.enable
        x2apic = apic_base.enable & extd
        xapic = apic_base.enable & ~extd
        sw_enabled = Svr(storage["SVR"]).apic_enable
        m.d.comb += [
            self.enabled.eq(enabled),
            self.x2apic.eq(x2apic),
            self.tpr.eq(storage["TPR"][0:8]),
            self.svr.eq(storage["SVR"]),
            self.ldr.eq(storage["LDR"]),
            self.dfr.eq(storage["DFR"]),
        ]
        if lsrc:
            m.d.comb += [getattr(self, name.lower()).eq(storage[name]) for name in _SOURCE_LVTS]
            m.d.comb += [self.timer_divide.eq(storage["TIMER_DIVIDE"][0:4]),
                         self.timer_initial.eq(storage["TIMER_INITIAL"])]

        # --- decode -------------------------------------------------------------------------
        # What the request alone decides is decoded on its own (``pre``); with
        # ``registered_decode`` it is held in flip-flops a cycle before the request is taken.
        pre = Signal(_RequestDecode)
        is_msr = port.space == Space.MSR
        index = Mux(is_msr, port.addr[0:8], port.addr[4:12])
        new_base = ApicBase(port.wdata)
        m.d.comb += [
            pre.index.eq(index),
            pre.is_msr.eq(is_msr),
            pre.write.eq(port.write),
            pre.mmio_aligned.eq((port.addr[0:4] == 0) & (port.addr[12:32] == 0)),
            pre.msr_x2apic.eq(is_msr & (port.addr[8:32] == (MSR_X2APIC_FIRST >> 8))),
            pre.msr_apic_base.eq(is_msr & (port.addr == MSR_IA32_APIC_BASE)),
            pre.msr_tsc.eq(is_msr & (port.addr == MSR_IA32_TSC)),       # used with local sources only
            pre.msr_deadline.eq(is_msr & (port.addr == MSR_IA32_TSC_DEADLINE)),
            pre.base_reserved.eq((new_base.rsvd0 != 0) | new_base.rsvd9 | (new_base.rsvd36 != 0)),
            pre.icr.eq(index == BY_NAME["ICR"].index),
            pre.self_ipi.eq(index == BY_NAME["SELF_IPI"].index),
        ]
        reserved_x2 = Signal(32)   # defined-bit mask complement for x2APIC #GP checks
        with m.Switch(index):
            for r in REGISTERS:
                with m.Case(r.index):
                    m.d.comb += [
                        pre.readable_x.eq(r.xapic in (Access.RW, Access.RO)),
                        pre.writable_x.eq(r.xapic in (Access.RW, Access.WO)),
                        pre.readable_x2.eq(r.x2apic in (Access.RW, Access.RO)),
                        pre.writable_x2.eq(r.x2apic in (Access.RW, Access.WO)),
                    ]
                    if r.kind is Kind.STORAGE or r.name == "SELF_IPI":
                        m.d.comb += reserved_x2.eq(~(r.write_mask | r.ro_mask) & 0xFFFF_FFFF)
        # the value bits an x2APIC write must leave zero (reserved bits, the upper half, a
        # non-zero EOI or ESR write): #GP whatever the mode, so decided from the request too
        wdata = port.wdata
        with m.Switch(index):
            with m.Case(BY_NAME["EOI"].index, BY_NAME["ESR"].index):
                m.d.comb += pre.x2apic_bad_value.eq(wdata != 0)
            with m.Case(BY_NAME["ICR"].index):
                m.d.comb += pre.x2apic_bad_value.eq((wdata & ICR_X2APIC_RESERVED) != 0)
            with m.Default():
                m.d.comb += pre.x2apic_bad_value.eq((wdata[32:64] != 0) | ((wdata[0:32] & reserved_x2) != 0))

        # ... and what it decides with the APIC's mode
        mode = Signal(_ModeDecode)
        xapic_access = ~pre.is_msr & xapic
        x2apic_access = pre.msr_x2apic & x2apic
        with m.If(pre.msr_apic_base):
            with m.If(pre.write):
                bad_transition = (
                    (~new_base.enable & new_base.extd) |
                    (x2apic & new_base.enable & ~new_base.extd) |
                    (~enabled & new_base.enable & new_base.extd) |
                    (x2apic_only & ~(new_base.enable & new_base.extd)))
                if not self.x2apic_support:     # EXTD cannot be set at all
                    bad_transition = bad_transition | new_base.extd
                m.d.comb += mode.gp.eq(pre.base_reserved | bad_transition)
        if lsrc:    # (no constant branches without them: Verilator calls those case overlaps)
            with m.Elif(pre.msr_tsc):
                m.d.comb += mode.gp.eq(pre.write)   # the shared TSC is read-only here
            with m.Elif(pre.msr_deadline):
                pass                            # any 64-bit value; ignored outside deadline mode
        with m.Elif(pre.is_msr):
            with m.If(~x2apic_access):
                m.d.comb += mode.gp.eq(1)
            with m.Elif(pre.write):
                m.d.comb += mode.gp.eq(~pre.writable_x2 | pre.x2apic_bad_value)
            with m.Else():
                m.d.comb += mode.gp.eq(~pre.readable_x2)
        with m.Elif(xapic_access):
            m.d.comb += mode.illegal_address.eq(~pre.mmio_aligned | ~(pre.readable_x | pre.writable_x))
        base_write = pre.write & pre.msr_apic_base & ~mode.gp
        m.d.comb += [
            # register writes take effect only when legal in the current mode
            mode.do_write.eq(pre.write & ~mode.gp & ~mode.illegal_address &
                             ((xapic_access & pre.writable_x) | x2apic_access)),
            # an IPI waits for the previous one: back-pressure instead of loss
            mode.sends.eq(mode.do_write & (pre.icr | (x2apic & pre.self_ipi))),
            mode.readable.eq((xapic_access & pre.readable_x & pre.mmio_aligned) | (x2apic_access & pre.readable_x2)),
            mode.absent_page.eq(~pre.is_msr & ~xapic),
            mode.base_write.eq(base_write),
            mode.disabling.eq(base_write & enabled & ~new_base.enable),
            mode.x2apic_entry.eq(base_write & xapic & new_base.extd),
        ]

        if self.registered_decode:
            # The request is decoded in the cycle it is first offered and taken in the next one
            # (``req_ready`` low until then): the decode no longer shares a cycle with the
            # writes it steers, which is a large FPGA build's critical path.  Held with it: what
            # it decides with the mode, which only a taken IA32_APIC_BASE write changes (and
            # ``decoded`` is low in the cycle after a take); never the storage registers (INIT
            # may reset them in between) or the transmit slot.
            dec, legal = Signal(_RequestDecode), Signal(_ModeDecode)
            decoded = Signal()      # ``dec`` and ``legal`` hold the request on the port
            m.d.sync += [dec.eq(pre), legal.eq(mode)]
        else:
            dec, legal, decoded = pre, mode, Const(1)
        index = dec.index
        msr_apic_base, msr_tsc, msr_deadline = dec.msr_apic_base, dec.msr_tsc, dec.msr_deadline
        deadline_mode = (Lvt(storage["LVT_TIMER"]).timer_mode == TimerMode.TSC_DEADLINE
                         if lsrc else Const(0))

        write = port.req_valid & dec.write
        read = port.req_valid & ~dec.write
        gp, illegal_address, readable = legal.gp, legal.illegal_address, legal.readable
        do_write = port.req_valid & legal.do_write
        sends = port.req_valid & legal.sends
        m.d.comb += port.req_ready.eq(decoded & ~(sends & self.tx_busy))
        fire = port.req_valid & port.req_ready
        if self.registered_decode:
            m.d.sync += decoded.eq(port.req_valid & ~fire)
        m.d.comb += [
            self.write.valid.eq(fire & do_write),
            self.write.index.eq(index),
            self.write.data.eq(wdata),
        ]
        if lsrc:
            m.d.comb += self.deadline_write.eq(fire & write & msr_deadline)

        # --- read data ----------------------------------------------------------------------
        rdata = Signal(64)
        with m.If(msr_apic_base):
            m.d.comb += rdata.eq(Cat(apic_base.as_value()[0:8], self.bsp, apic_base.as_value()[9],
                                     extd, apic_base.as_value()[11:64]))
        if lsrc:
            with m.Elif(msr_tsc):
                m.d.comb += rdata.eq(self.tsc)
            with m.Elif(msr_deadline):
                m.d.comb += rdata.eq(Mux(deadline_mode, self.tsc_deadline, 0))
        with m.Elif(legal.absent_page):
            m.d.comb += rdata.eq(0xFFFF_FFFF)   # absent MMIO page (disabled or x2APIC)
        with m.Elif(readable):
            with m.Switch(index):
                for r in REGISTERS:
                    with m.Case(r.index):
                        m.d.comb += rdata.eq(self._read_value(r, storage=storage, lvt_mask=lvt_mask,
                                                              x2apic=x2apic, deadline_mode=deadline_mode))

        m.d.comb += self.illegal_address.eq(fire & illegal_address)

        m.d.sync += [
            resp_valid.eq(fire),
            # 0 unless answering a read (RegisterBusSignature): a CPU side may OR many ports
            resp_rdata.eq(Mux(fire & read & ~gp, rdata, 0)),
            resp_gp.eq(fire & gp),
        ]
        ram_word = Signal(32)   # storage="ram": the word a read response adds
        m.d.comb += [
            port.resp_valid.eq(resp_valid),
            port.rdata.eq(resp_rdata | ram_word),
            port.gp.eq(resp_gp),
        ]
        if in_ram:
            # The word is read in the cycle the request is taken and arrives with the response;
            # a word not written since reset reads 0 (its reset value, the LVT mask bit apart).
            slot = Signal(range(len(in_ram)))
            slot_hit = Signal()
            with m.Switch(index):
                for k, r in enumerate(in_ram):
                    with m.Case(r.index):
                        m.d.comb += [slot.eq(k), slot_hit.eq(1)]
            resp_ram = Signal()
            # A request is a read or a write, so the ports never meet on one word; the read
            # port idles during writes (only reads use its data).  What spares the FPGA mapping
            # the collision logic is registered_read_port's no_rw_check (rtl/lib/memory.py).
            m.d.comb += [ram_read.addr.eq(slot), ram_read.en.eq(~ram_write.en)]
            m.d.sync += resp_ram.eq(fire & read & ~gp & readable & slot_hit & ram_valid.bit_select(slot, 1))
            # A word holds the written data as it came (one write path for every word, no mux of
            # each register's masked value); its register's writable bits are chosen as it is
            # read, by the slot held until the data arrives.
            resp_slot = Signal.like(slot)
            m.d.sync += resp_slot.eq(slot)
            word = ram_read.data & Array(Const(self._kept_mask(r, lvt_mask), width) for r in in_ram)[resp_slot]
            m.d.comb += [ram_word.eq(Mux(resp_ram, word, 0)), ram_write.data.eq(wdata[0:width])]
            # the write address decoded on its own: Yosys maps it 64 LUT4 smaller on ECP5 (with
            # the local sources) than when it shares the read's `slot`
            with m.Switch(index):
                for k, r in enumerate(in_ram):
                    with m.Case(r.index):
                        m.d.comb += ram_write.addr.eq(k)

        # --- write effects on the storage registers -----------------------------------------
        with m.If(fire & do_write):
            with m.Switch(index):
                for r in REGISTERS:
                    if r.kind is not Kind.STORAGE:
                        continue
                    with m.Case(r.index):
                        value = (wdata[0:32] & r.write_mask) | (r.reset & ~r.write_mask)
                        if r.name.startswith("LVT_"):
                            # Software-disabled: LVT mask bits are forced on (docs/spec/lapic.md §5).
                            value = value | Mux(sw_enabled, 0, 1 << _LVT_MASK_BIT)
                        if r.name in ram_names:
                            k = ram_names.index(r.name)
                            m.d.comb += ram_write.en.eq(1)
                            m.d.sync += ram_valid[k].eq(1)
                            if r.name in lvt_mask:
                                m.d.sync += lvt_mask[r.name].eq(value[_LVT_MASK_BIT])
                        elif lsrc and r.name == "TIMER_INITIAL":
                            # Ignored in TSC-deadline mode (the timer loads its count then too).
                            with m.If(~deadline_mode):
                                m.d.sync += storage[r.name].eq(value)
                        else:
                            m.d.sync += storage[r.name].eq(value)
                        if lsrc and r.name.startswith("LVT_"):
                            new_lvt = Lvt(value)
                            fixed = (new_lvt.delivery_mode == DeliveryMode.FIXED
                                     if r.write_mask & LVT_MODE_BITS else Const(1))
                            m.d.comb += self.lvt_write_illegal.eq(fixed & (new_lvt.vector < 16))
                        if lsrc and r.name == "LVT_TIMER":
                            # Into or out of TSC-deadline mode: the timer is disarmed (KVM's
                            # apic_update_lvtt; the timer clears its counts in the same cycle).
                            with m.If(deadline_mode != (new_lvt.timer_mode == TimerMode.TSC_DEADLINE)):
                                m.d.sync += storage["TIMER_INITIAL"].eq(0)
                        if r.name == "SVR":
                            with m.If(~Svr(value).apic_enable):
                                for lvt in storage:
                                    if lvt.startswith("LVT_"):
                                        m.d.sync += storage[lvt][_LVT_MASK_BIT].eq(1)
                                m.d.sync += [mask.eq(1) for mask in lvt_mask.values()]
        with m.If(fire & legal.base_write):
            m.d.sync += [
                apic_base.enable.eq(new_base.enable),
                apic_base.extd.eq(new_base.extd),
                apic_base.base.eq(new_base.base),
            ]
            with m.If(legal.disabling):
                m.d.comb += self.disabling.eq(1)
            with m.If(legal.x2apic_entry):
                # xAPIC -> x2APIC: LDR and ICR high are not preserved (docs/spec/lapic.md §1).
                m.d.sync += storage["LDR"].eq(0)
                m.d.comb += self.x2apic_entry.eq(1)

        # INIT or disable: back to the reset state, keeping ID, mode and BSP (§6.1).
        with m.If(self.soft_reset):
            m.d.sync += [reg.eq(BY_NAME[name].reset) for name, reg in storage.items()]
            if in_ram:
                m.d.sync += [ram_valid.eq(0), *(mask.eq(1) for mask in lvt_mask.values())]
        return m

    @staticmethod
    def _kept_mask(r, lvt_mask):
        """The bits of register ``r`` (kept in memory) that its word holds: its writable bits,
        but the LVT mask bit, which stays a flip-flop (``lvt_mask``)."""
        return r.write_mask & ~(1 << _LVT_MASK_BIT) if r.name in lvt_mask else r.write_mask

    def _read_value(self, r, *, storage, lvt_mask, x2apic, deadline_mode):
        """The value register ``r`` reads, in the current mode (of a register kept in memory,
        the bits kept in flip-flops: the response adds the word)."""
        lsrc = self.local_interrupts
        if r.kind is Kind.STORAGE and r.name not in storage:
            return lvt_mask[r.name] << _LVT_MASK_BIT if r.name in lvt_mask else 0
        if r.kind is Kind.STORAGE:
            if r.name == "LDR":
                return Mux(x2apic, x2apic_logical_id(self.apic_id), storage["LDR"])
            if lsrc and r.name in ("LVT_LINT0", "LVT_LINT1"):
                return storage[r.name] | (self.lint_rirr[int(r.name[-1])] << 14)
            return storage[r.name]
        name = r.name
        if name == "ID":
            return Mux(x2apic, self.apic_id, Cat(Const(0, 24), self.apic_id[0:8]))
        if name == "VERSION":
            return VERSION | (MAX_LVT_INDEX << 16)
        if name == "APR":
            return self.apr
        if name == "PPR":
            return self.ppr
        if name == "TIMER_CURRENT" and lsrc:
            return Mux(deadline_mode, 0, self.timer_current)
        if name[:3] in ("ISR", "IRR") or (name.startswith("TMR") and lsrc):
            bank = int(name[3:])
            vectors = getattr(self, name[:3].lower())
            return vectors.word_select(bank, 32) if 32 * bank < self.n_vectors else 0
        if name == "ESR":
            return self.esr
        icr = self.icr
        if name == "ICR":
            low = Cat(icr.as_value()[0:12], self.tx_busy, icr.as_value()[13:32])
            return Mux(x2apic, Cat(icr.as_value()[0:32], icr.destination), low)
        if name == "ICR_HI":
            return icr.destination
        # RRD, EOI, SELF_IPI (and TMRn, TIMER_CURRENT without local interrupts) read 0
        return 0
