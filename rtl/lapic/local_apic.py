"""One local APIC: register file, IPI sender and receiver (docs/spec/lapic.md §§1-6, §8).

The CPU side is :class:`~apwake.rtl.lapic.signatures.CpuPortSignature`, the fabric side
:class:`~apwake.rtl.lapic.signatures.FabricLinkSignature`.  The register map comes from
:mod:`apwake.rtl.lapic.registers`, the bit layouts from :mod:`apwake.rtl.lapic.layouts`.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import (ApicBase, DeliveryMode, DestMode, Esr, FabricMessage, Icr, Level,
                      Lvt, LVT_MODE_BITS, Shorthand, Svr, TimerMode, Trigger,
                      ICR_X2APIC_RESERVED,
                      MSR_IA32_APIC_BASE, MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE, MSR_X2APIC_FIRST,
                      TIMER_DIVIDE_CODES, XAPIC_BROADCAST, X2APIC_BROADCAST, XAPIC_DEFAULT_BASE)
from apwake.rtl.lib.priority import find_set, or_tree
from .registers import Access, Kind, REGISTERS, BY_NAME
from .signatures import CpuPortSignature, FabricLinkSignature, Space

__all__ = ["LocalApic", "local_apic_signature", "check_n_vectors", "VERSION", "MAX_LVT_INDEX",
           "VECTOR_COUNTS"]

#: the VERSION register's value (version 0x14, max LVT index in [23:16]), from the table
VERSION = BY_NAME["VERSION"].reset & 0xFF
MAX_LVT_INDEX = BY_NAME["VERSION"].reset >> 16
VECTOR_COUNTS = (32, 64, 128, 256)


def check_n_vectors(n_vectors):
    if n_vectors not in VECTOR_COUNTS:
        raise ValueError(f"n_vectors must be one of {VECTOR_COUNTS}, not {n_vectors!r}")
    return n_vectors


def local_apic_signature():
    """The ports of :class:`LocalApic` (the same for every parameter)."""
    return wiring.Signature({
        "cpu": In(CpuPortSignature()),
        "link": Out(FabricLinkSignature()),
        "apic_id": In(32),
        "bsp": In(1),
        "lint": In(2),
        "tsc": In(64),
    })


class LocalApic(wiring.Component):
    """A local APIC in xAPIC or x2APIC mode.

    Behaviour chosen where the architecture leaves room (docs/spec/lapic.md §2.2, §8):

    * **Refused ICR writes.** Reserved delivery modes (0b011, 0b111), and any mode other than
      Fixed with shorthand *self* or *all including self*, are not sent; the sender's ESR gets
      *send accept error* (bit 2): the message reached no APIC.  The write still completes and
      the ICR reads back what was written.
    * **Unaccepted IPIs.** A message that no APIC accepts (no such ID, all targets
      software-disabled for Fixed) also sets *send accept error* when the fabric reports it
      done, as P6 and Bochs do; P4 parts lose it silently, which apwake does not.
    * **Illegal vectors.** Fixed/lowest-priority with vector 0-15: *send illegal vector* at the
      sender, the message is still sent, and every accepting APIC sets *receive illegal
      vector* and no IRR bit.  Vectors at or above ``n_vectors`` (fewer vectors implemented)
      are also refused with *receive illegal vector*.
    * **Level-triggered IPIs** other than INIT are sent as edge, asserted (P4 rule, §8 #20), so
      an IPI clears the TMR bit of its vector.  INIT with trigger=level, level=de-assert is
      INIT de-assert: it reaches every APIC whatever its destination or shorthand (all
      including self is allowed for it) and changes nothing (§8 #8).
    * **ICR write while busy.** The register port holds ``req_ready`` low until the previous IPI
      is done, in both modes, so no IPI is dropped (§8 #11).
    * **Destination in mixed modes.** Whether a message is a broadcast is decided by the
      format the sender used (0xFF from an xAPIC sender, 0xFFFF_FFFF from an x2APIC sender), as
      KVM's ``kvm_apic_broadcast`` does; IDs and logical IDs are matched under the receiver's
      own mode, and an x2APIC destination above 0xFF never aliases onto an xAPIC ID (§8 #17).
      So 0xFF written by an x2APIC sender is an ordinary ID (§8 #16).  An xAPIC APIC with
      LDR = 0 matches no logical destination, logical broadcast included (§3).
    * **Lowest priority** goes to the candidate with the lowest PPR class, ties to the lowest
      port index (the fabric decides).
    * **INIT**: accepting it raises ``init`` and clears a pending SIPI; the APIC registers are
      reset when the CPU takes it (``init_ack``), except the ID, IA32_APIC_BASE (mode, BSP) and
      an IPI already handed to the fabric, which is still delivered.  A CPU in SMM holds INIT
      pending until RSM (SDM vol. 3, chapter "System Management Mode"; KVM
      ``kvm_apic_accept_events``), and its APIC keeps its state until then.
    * **Globally disabled APIC** (IA32_APIC_BASE.EN=0) accepts no message and drops pending
      INIT/SIPI/NMI/SMI; its MMIO page reads all-ones and ignores writes, as does the MMIO page
      in x2APIC mode.  Leaving EN=1 resets the registers.
    * **APR** follows the SDM: TPR when TPR[7:4] >= IRRV[7:4] and > ISRV[7:4], otherwise
      max(TPR[7:4] & ISRV[7:4], IRRV[7:4]) << 4.  It is informational: lowest-priority
      arbitration uses the PPR class.
    * **xAPIC MMIO**: reserved or unaligned offsets set ESR *illegal register address*; reads
      of write-only registers return 0; writes to read-only registers are ignored.  The xAPIC
      ID is read-only.  MSR accesses in xAPIC mode are #GP.
    * **x2APIC MSRs**: absent registers, reads of write-only and writes of read-only registers,
      reserved bits, non-zero upper halves (except ICR), non-zero EOI/ESR writes: ``gp``.
    * **xAPIC ICR read-back** (KVM's choice, checked by its ``xapic_state_test`` selftest): ICR
      low keeps every written bit, reserved bits 13, 16-17 and 20-31 included, and reads it back
      with bit 12 showing the delivery status.  Reserved bits never reach the message.  ICR high
      keeps bits 31:24 only (KVM likewise).  In x2APIC mode reserved bits are #GP instead.
    * **SIPI latch**: the first SIPI that reaches a CPU is kept until the CPU acknowledges it; a
      second SIPI arriving before that is dropped (SDM vol. 3 §9.4.4: the first SIPI starts the
      processor).  A SIPI arriving in the cycle of the acknowledge is latched anew.
    * **Local interrupts** (SDM vol. 3 §11.5, with ``local_interrupts``):

      - *Timer.*  The current count decrements once every *divisor* fabric clock cycles
        (TIMER_DIVIDE: 1 to 128), so the timer's clock is the fabric clock.  The divider runs
        freely: the first decrement after a write of the initial count comes within one divide
        period.  One-shot fires when the count reaches 0 and stops; periodic reloads the initial
        count; writing 0 stops the timer.  Mode 0b11 (reserved) counts as one-shot.
      - *TSC-deadline.*  IA32_TSC_DEADLINE (MSR 0x6E0) arms the timer when written with a non-zero
        value in TSC-deadline mode; it fires once the TSC (the ``tsc`` input, one count per fabric
        clock) reaches it and then reads 0.  In other modes the MSR reads 0 and writes are
        ignored; in TSC-deadline mode TIMER_INITIAL writes are ignored and TIMER_CURRENT reads 0.
        Switching the timer LVT into or out of TSC-deadline mode disarms the timer (initial,
        current and deadline to 0), as KVM's ``apic_update_lvtt`` does.  IA32_TSC (MSR 0x10)
        reads the TSC; writing it is #GP (apwake's TSC is one shared counter).
      - *LINT0/LINT1* pins (``lint`` bits 0 and 1): active level = pin XOR polarity.  Fixed,
        edge-triggered: a rising active edge sets IRR; level-triggered Fixed: while the pin is
        active and remote IRR is clear, IRR and TMR are set and remote IRR (LVT bit 14) rises;
        the EOI of that vector clears it.  NMI, SMI and INIT are edge-triggered whatever bit 15
        says (SDM).  ExtINT needs an 8259 to supply the vector; apwake has none, so an ExtINT
        LINT never interrupts.  Reserved modes never interrupt.
      - *Error.*  The error LVT fires when the pending ESR goes from empty to non-empty (newer
        Intel parts; older ones fire on every new bit), one cycle after the error, also when
        the ESR write that empties it sees a new error.  Errors are collected while it is
        masked.
      - *Illegal vectors.*  A local interrupt (Fixed) with vector 0-15, or at or above
        ``n_vectors``, sets *receive illegal vector* instead of an IRR bit.  Writing an LVT
        whose mode is Fixed with vector 0-15 sets it too, masked or not (SDM §11.5.2 allows
        it; Linux's ``clear_local_APIC`` masks LVTERR first for this reason).
      - Delivery status (LVT bit 12) always reads 0: a local interrupt reaches IRR in the
        cycle it fires.  TMR reads the trigger mode of the last acceptance of each vector.
      - CMCI, thermal and performance-monitor LVTs are storage: apwake has no such sources.

      Without ``local_interrupts`` (the smallest FPGA builds) the LVT and timer registers are
      storage only (no illegal-vector check on LVT writes), TIMER_CURRENT and TMR read 0,
      IA32_TSC/IA32_TSC_DEADLINE are #GP, and the xAPIC ICR keeps only its defined bits
      (reserved bits read 0, which the architecture also allows).
    * **INIT** also stops the timer and clears the TSC deadline and remote IRR bits.
    * EOI broadcast to I/O APICs does not exist (no I/O APIC).

    Parameters
    ----------
    n_vectors : int
        Implemented vectors (32, 64, 128 or 256); IRR/ISR/TMR are this wide.
    local_interrupts : bool
        Build the local interrupt sources (timer with TSC-deadline, LINT0/LINT1, error LVT,
        TMR).  False only to save logic on the smallest FPGAs.

    Attributes
    ----------
    cpu : In(CpuPortSignature)
        The CPU's port.
    link : Out(FabricLinkSignature)
        The port to the IPI fabric.
    apic_id : Signal(32), in
        Hardware APIC ID (x2APIC ID; its low 8 bits are the xAPIC ID).  Tie to a constant.
    bsp : Signal(1), in
        IA32_APIC_BASE.BSP of this APIC.  Tie to a constant.
    lint : Signal(2), in
        The LINT0 (bit 0) and LINT1 (bit 1) pins, synchronous to the fabric clock.
    tsc : Signal(64), in
        The time-stamp counter, shared by all APICs of a fabric.

    Raises
    ------
    ValueError, TypeError
        ``n_vectors`` not one of :data:`VECTOR_COUNTS`; ``local_interrupts`` not a bool.

    Sources: Intel SDM vol. 3 ch. 11 (APIC: §11.5 local vector table, timer and error
    handling, §11.6 ICR, §11.8 EOI, §11.12 x2APIC) and ch. 9 (§9.4 MP initialisation); KVM
    ``arch/x86/kvm/lapic.c`` where the SDM leaves room.
    """

    def __init__(self, *, n_vectors=256, local_interrupts=True):
        self.n_vectors = check_n_vectors(n_vectors)
        if not isinstance(local_interrupts, bool):
            raise TypeError(f"local_interrupts must be a bool, not {local_interrupts!r}")
        self.local_interrupts = local_interrupts
        super().__init__(local_apic_signature())

    def elaborate(self, platform):
        m = Module()
        nv = self.n_vectors
        port = self.cpu.reg
        link = self.link

        # --- architectural state ----------------------------------------------------------
        apic_base = Signal(ApicBase, init={"enable": 1, "base": XAPIC_DEFAULT_BASE >> 12})
        storage = {r.name: Signal(32, init=r.reset, name=r.name.lower())
                   for r in REGISTERS if r.kind is Kind.STORAGE}
        icr = Signal(Icr)
        irr = Signal(nv)
        isr = Signal(nv)
        esr_pending = Signal(8)
        esr_visible = Signal(8)
        tx_valid = Signal()
        tx_msg = Signal(FabricMessage)
        init_pending = Signal()
        sipi_pending = Signal()
        sipi_vector = Signal(8)
        nmi_pending = Signal()
        smi_pending = Signal()
        inta_done = Signal()
        inta_vector = Signal(8)
        resp_valid = Signal()
        resp_rdata = Signal(64)
        resp_gp = Signal()
        lsrc = self.local_interrupts
        tmr = Signal(nv)                 # trigger mode of the last acceptance per vector
        timer_current = Signal(32)
        tsc_deadline = Signal(64)
        lint_rirr = Signal(2)            # LVT LINT0/LINT1 remote IRR (bit 14)

        enabled = apic_base.enable
        x2apic = apic_base.enable & apic_base.extd
        xapic = apic_base.enable & ~apic_base.extd
        svr = Svr(storage["SVR"])
        sw_enabled = svr.apic_enable
        tpr = storage["TPR"][0:8]
        xapic_id = self.apic_id[0:8]
        # x2APIC logical ID (docs/spec/lapic.md §1): cluster in [31:16], one-hot position in [15:0].
        x2apic_ldr = Signal(32)
        m.d.comb += x2apic_ldr.eq(Cat((Const(1, 16) << self.apic_id[0:4])[0:16], self.apic_id[4:20]))

        # --- priorities (docs/spec/lapic.md §5) -------------------------------------------------------
        irr_any, irrv = find_set(m, irr, highest=True, name="irrv")
        isr_any, isrv = find_set(m, isr, highest=True, name="isrv")
        irrv8, isrv8 = Signal(8), Signal(8)
        m.d.comb += [irrv8.eq(irrv), isrv8.eq(isrv)]
        ppr = Signal(8)
        m.d.comb += ppr.eq(Mux(tpr[4:8] >= isrv8[4:8], tpr, Cat(Const(0, 4), isrv8[4:8])))
        apr = Signal(8)
        with m.If((tpr[4:8] >= irrv8[4:8]) & (tpr[4:8] > isrv8[4:8])):
            m.d.comb += apr.eq(tpr)
        with m.Else():
            # SDM: APR[7:4] = max(TPR[7:4] & ISRV[7:4], IRRV[7:4]), APR[3:0] = 0
            masked = tpr[4:8] & isrv8[4:8]
            m.d.comb += apr.eq(Cat(Const(0, 4), Mux(irrv8[4:8] > masked, irrv8[4:8], masked)))
        deliverable = Signal()
        m.d.comb += deliverable.eq(enabled & sw_enabled & irr_any & (irrv8[4:8] > ppr[4:8]))

        # Next-state terms collected from the register, receive and INTA paths.
        irr_set, irr_clr = Signal(nv), Signal(nv)
        isr_set, isr_clr = Signal(nv), Signal(nv)
        # Errors detected this cycle, one signal each; the ESR byte is composed from them
        # (a comb signal with constant bits becomes a constant-only `always @*` in Amaranth's
        # Verilog, which Verilator and Icarus never run).
        err_refused = Signal()        # ICR write not sent (docs/spec/lapic.md §2.2)
        err_unaccepted = Signal()     # sent, but no APIC accepted it
        err_send_illegal = Signal()
        err_receive_illegal = Signal()   # a received message with an illegal vector
        err_local_illegal = Signal()     # a local interrupt with an illegal vector
        err_lvt_write_illegal = Signal() # an LVT written with Fixed mode and vector 0-15
        err_register_address = Signal()
        soft_reset = Signal()

        # --- register port decode -----------------------------------------------------------
        is_msr = port.space == Space.MSR
        index = Signal(8)
        m.d.comb += index.eq(Mux(is_msr, port.addr[0:8], port.addr[4:12]))
        mmio_aligned = (port.addr[0:4] == 0) & (port.addr[12:32] == 0)
        msr_x2apic = is_msr & (port.addr[8:32] == (MSR_X2APIC_FIRST >> 8))
        msr_apic_base = is_msr & (port.addr == MSR_IA32_APIC_BASE)
        msr_tsc = is_msr & (port.addr == MSR_IA32_TSC) if lsrc else Const(0)
        msr_deadline = is_msr & (port.addr == MSR_IA32_TSC_DEADLINE) if lsrc else Const(0)
        lvtt = Lvt(storage["LVT_TIMER"])
        deadline_mode = lvtt.timer_mode == TimerMode.TSC_DEADLINE
        xapic_access = ~is_msr & xapic
        x2apic_access = msr_x2apic & x2apic

        readable_x, writable_x = Signal(), Signal()
        readable_x2, writable_x2 = Signal(), Signal()
        reserved_x2 = Signal(32)   # defined-bit mask complement for x2APIC #GP checks
        with m.Switch(index):
            for r in REGISTERS:
                with m.Case(r.index):
                    m.d.comb += [
                        readable_x.eq(r.xapic in (Access.RW, Access.RO)),
                        writable_x.eq(r.xapic in (Access.RW, Access.WO)),
                        readable_x2.eq(r.x2apic in (Access.RW, Access.RO)),
                        writable_x2.eq(r.x2apic in (Access.RW, Access.WO)),
                    ]
                    if r.kind is Kind.STORAGE or r.name == "SELF_IPI":
                        m.d.comb += reserved_x2.eq(~(r.write_mask | r.ro_mask) & 0xFFFF_FFFF)

        # The value a write hands to the register, after the mode's rules.
        wdata = port.wdata
        write = port.req_valid & port.write
        read = port.req_valid & ~port.write

        gp = Signal()
        illegal_address = Signal()
        new_base = ApicBase(wdata)
        with m.If(msr_apic_base):
            with m.If(port.write):
                bad_transition = (
                    (~new_base.enable & new_base.extd) |
                    (x2apic & new_base.enable & ~new_base.extd) |
                    (~enabled & new_base.enable & new_base.extd))
                m.d.comb += gp.eq((new_base.rsvd0 != 0) | new_base.rsvd9 |
                                  (new_base.rsvd36 != 0) | bad_transition)
        with m.Elif(msr_tsc):
            m.d.comb += gp.eq(port.write)       # the shared TSC is read-only here
        with m.Elif(msr_deadline):
            pass                                # any 64-bit value; ignored outside deadline mode
        with m.Elif(is_msr):
            with m.If(~x2apic_access):
                m.d.comb += gp.eq(1)
            with m.Elif(port.write):
                special_bad = Signal()
                with m.Switch(index):
                    with m.Case(BY_NAME["EOI"].index, BY_NAME["ESR"].index):
                        m.d.comb += special_bad.eq(wdata != 0)
                    with m.Case(BY_NAME["ICR"].index):
                        m.d.comb += special_bad.eq((wdata & ICR_X2APIC_RESERVED) != 0)
                    with m.Default():
                        m.d.comb += special_bad.eq((wdata[32:64] != 0) |
                                                   ((wdata[0:32] & reserved_x2) != 0))
                m.d.comb += gp.eq(~writable_x2 | special_bad)
            with m.Else():
                m.d.comb += gp.eq(~readable_x2)
        with m.Elif(xapic_access):
            m.d.comb += illegal_address.eq(~mmio_aligned | ~(readable_x | writable_x))

        # Register writes take effect only when legal in the current mode.
        do_write = Signal()
        m.d.comb += do_write.eq(write & ~gp & ~illegal_address &
                                ((xapic_access & writable_x) | x2apic_access))

        def writes(name):
            return do_write & (index == BY_NAME[name].index)

        icr_write = writes("ICR")
        self_ipi_write = x2apic & writes("SELF_IPI")
        sends = Signal()
        m.d.comb += sends.eq(icr_write | self_ipi_write)
        # An IPI waits for the previous one: back-pressure instead of loss.
        m.d.comb += port.req_ready.eq(~(sends & tx_valid))
        fire = port.req_valid & port.req_ready

        # --- read data ------------------------------------------------------------------------
        rdata = Signal(64)
        with m.If(msr_apic_base):
            m.d.comb += rdata.eq(Cat(apic_base.as_value()[0:8], self.bsp,
                                     apic_base.as_value()[9:64]))
        with m.Elif(msr_tsc):
            m.d.comb += rdata.eq(self.tsc)
        with m.Elif(msr_deadline):
            m.d.comb += rdata.eq(Mux(deadline_mode, tsc_deadline, 0))
        with m.Elif(~is_msr & ~xapic):
            m.d.comb += rdata.eq(0xFFFF_FFFF)   # absent MMIO page (disabled or x2APIC)
        with m.Elif((xapic_access & readable_x & mmio_aligned) | (x2apic_access & readable_x2)):
            with m.Switch(index):
                for r in REGISTERS:
                    with m.Case(r.index):
                        m.d.comb += rdata.eq(self._read_value(
                            r, storage=storage, x2apic=x2apic, xapic_id=xapic_id,
                            x2apic_ldr=x2apic_ldr, tpr=tpr, ppr=ppr, apr=apr, isr=isr, irr=irr,
                            esr=esr_visible, icr=icr, tx_valid=tx_valid, tmr=tmr,
                            timer_current=Mux(deadline_mode, 0, timer_current),
                            lint_rirr=lint_rirr))

        m.d.comb += err_register_address.eq(fire & illegal_address)

        m.d.sync += [
            resp_valid.eq(fire),
            resp_rdata.eq(Mux(read & ~gp, rdata, 0)),
            resp_gp.eq(fire & gp),
        ]
        m.d.comb += [
            port.resp_valid.eq(resp_valid),
            port.rdata.eq(resp_rdata),
            port.gp.eq(resp_gp),
        ]

        # --- APIC timer (SDM vol. 3 §11.5.4) ----------------------------------------------------
        # Placed before the register writes: a write of TIMER_INITIAL in the cycle of a
        # decrement wins.
        timer_fire = Signal()
        if lsrc:
            prescaler = Signal(7)       # free-running: the divider does not restart on writes
            m.d.sync += prescaler.eq(prescaler + 1)
            tdcr = storage["TIMER_DIVIDE"]
            tick = Signal()
            with m.Switch(Cat(tdcr[0:2], tdcr[3])):
                for code, divisor in TIMER_DIVIDE_CODES.items():
                    with m.Case(code):
                        m.d.comb += tick.eq((prescaler & (divisor - 1)) == divisor - 1)
            periodic = lvtt.timer_mode == TimerMode.PERIODIC
            with m.If(~deadline_mode & (timer_current != 0) & tick):
                with m.If(timer_current == 1):
                    m.d.comb += timer_fire.eq(1)
                    m.d.sync += timer_current.eq(Mux(periodic, storage["TIMER_INITIAL"], 0))
                with m.Else():
                    m.d.sync += timer_current.eq(timer_current - 1)
            with m.If(deadline_mode & (tsc_deadline != 0) & (self.tsc >= tsc_deadline)):
                m.d.comb += timer_fire.eq(1)
                m.d.sync += tsc_deadline.eq(0)
            with m.If(fire & write & msr_deadline & deadline_mode):
                m.d.sync += tsc_deadline.eq(wdata)

        # --- register write effects -------------------------------------------------------------
        with m.If(fire & do_write):
            with m.Switch(index):
                for r in REGISTERS:
                    if r.kind is not Kind.STORAGE:
                        continue
                    with m.Case(r.index):
                        value = (wdata[0:32] & r.write_mask) | (r.reset & ~r.write_mask)
                        if r.name.startswith("LVT_"):
                            # Software-disabled: LVT mask bits are forced on (docs/spec/lapic.md §5).
                            value = value | Mux(sw_enabled, 0, 1 << 16)
                        if lsrc and r.name == "TIMER_INITIAL":
                            # Ignored in TSC-deadline mode; otherwise (re)starts the count.
                            with m.If(~deadline_mode):
                                m.d.sync += [storage[r.name].eq(value), timer_current.eq(value)]
                        else:
                            m.d.sync += storage[r.name].eq(value)
                        if lsrc and r.name.startswith("LVT_"):
                            new_lvt = Lvt(value)
                            fixed = (new_lvt.delivery_mode == DeliveryMode.FIXED
                                     if r.write_mask & LVT_MODE_BITS else Const(1))
                            m.d.comb += err_lvt_write_illegal.eq(fixed & (new_lvt.vector < 16))
                        if lsrc and r.name == "LVT_TIMER":
                            # Into or out of TSC-deadline mode: the timer is disarmed (KVM's
                            # apic_update_lvtt).
                            with m.If(deadline_mode != (new_lvt.timer_mode == TimerMode.TSC_DEADLINE)):
                                m.d.sync += [storage["TIMER_INITIAL"].eq(0), timer_current.eq(0),
                                             tsc_deadline.eq(0)]
                        if r.name == "SVR":
                            with m.If(~Svr(value).apic_enable):
                                for lvt in storage:
                                    if lvt.startswith("LVT_"):
                                        m.d.sync += storage[lvt][16].eq(1)
                with m.Case(BY_NAME["ICR_HI"].index):
                    m.d.sync += icr.destination.eq(wdata[0:32] & BY_NAME["ICR_HI"].write_mask)
                with m.Case(BY_NAME["ICR"].index):
                    # Every written bit is kept (x2APIC reserved bits were #GP); bit 12 reads
                    # the delivery status (see the read-back choice above).
                    # (the smallest build keeps only the defined bits: 15 flip-flops fewer)
                    keep = ~(1 << 12) if lsrc else ~(ICR_X2APIC_RESERVED | (1 << 12))
                    with m.If(x2apic):
                        m.d.sync += icr.eq(wdata & keep)
                    with m.Else():
                        m.d.sync += icr.as_value()[0:32].eq(wdata[0:32] & keep)
                with m.Case(BY_NAME["EOI"].index):
                    m.d.comb += isr_clr.eq(Mux(isr_any, Const(1, nv) << isrv, 0))
        with m.If(fire & write & msr_apic_base & ~gp):
            m.d.sync += [
                apic_base.enable.eq(new_base.enable),
                apic_base.extd.eq(new_base.extd),
                apic_base.base.eq(new_base.base),
            ]
            with m.If(enabled & ~new_base.enable):
                m.d.comb += soft_reset.eq(1)
            with m.If(xapic & new_base.extd):
                # xAPIC -> x2APIC: LDR and ICR high are not preserved (docs/spec/lapic.md §1).
                m.d.sync += [storage["LDR"].eq(0), icr.eq(0)]

        # --- ESR (write-then-read, docs/spec/lapic.md §4) -------------------------------------------------
        esr_new = _compose(Esr, 8, send_accept=err_refused | err_unaccepted,
                           send_illegal_vector=err_send_illegal,
                           receive_illegal_vector=(err_receive_illegal | err_local_illegal |
                                                   err_lvt_write_illegal),
                           illegal_register_address=err_register_address)
        esr_write = fire & writes("ESR")
        esr_next = Signal(8)
        m.d.comb += esr_next.eq(Mux(esr_write, esr_new, esr_pending | esr_new))
        m.d.sync += esr_pending.eq(esr_next)
        with m.If(esr_write):
            m.d.sync += esr_visible.eq(esr_pending)
        # The error LVT fires when pending errors appear (empty -> non-empty), one cycle later:
        # registered, so that an error LVT with an illegal vector (itself an error) is no loop.
        error_fire = Signal()
        if lsrc:
            m.d.sync += error_fire.eq((esr_next != 0) & ((esr_pending == 0) | esr_write))

        # --- send ---------------------------------------------------------------------------------
        new_icr = Icr(Signal(64))
        m.d.comb += new_icr.as_value().eq(wdata)
        msg = Signal(FabricMessage)
        with m.If(self_ipi_write):
            m.d.comb += [
                msg.vector.eq(wdata[0:8]),
                msg.delivery_mode.eq(DeliveryMode.FIXED),
                msg.shorthand.eq(Shorthand.SELF),
                msg.x2apic.eq(1),
            ]
        with m.Else():
            m.d.comb += [
                msg.vector.eq(new_icr.vector),
                msg.delivery_mode.eq(new_icr.delivery_mode),
                msg.dest_mode.eq(new_icr.dest_mode),
                msg.shorthand.eq(new_icr.shorthand),
                msg.x2apic.eq(x2apic),
                msg.destination.eq(Mux(x2apic, new_icr.destination, icr.destination[24:32])),
            ]
        mode = msg.delivery_mode
        is_init_deassert = ((mode == DeliveryMode.INIT) & (new_icr.trigger == Trigger.LEVEL) &
                            (new_icr.level == Level.DEASSERT) & ~self_ipi_write)
        m.d.comb += [
            msg.level.eq(Mux(is_init_deassert, Level.DEASSERT, Level.ASSERT)),
            msg.trigger.eq(Mux(is_init_deassert, Trigger.LEVEL, Trigger.EDGE)),
        ]
        # INIT de-assert may use "all including self" (docs/spec/lapic.md §2.1 recommends it).
        refused = ((mode == DeliveryMode.RESERVED_3) | (mode == DeliveryMode.EXTINT) |
                   (((msg.shorthand == Shorthand.SELF) |
                     ((msg.shorthand == Shorthand.ALL_INCLUDING_SELF) & ~is_init_deassert)) &
                    (mode != DeliveryMode.FIXED)))
        fixed_like = (mode == DeliveryMode.FIXED) | (mode == DeliveryMode.LOWEST_PRIORITY)
        with m.If(fire & sends):
            m.d.comb += err_send_illegal.eq(fixed_like & (msg.vector < 16) & ~refused)
            with m.If(refused):
                m.d.comb += err_refused.eq(1)
            with m.Else():
                m.d.sync += [tx_valid.eq(1), tx_msg.eq(msg)]
        with m.If(link.tx_done):
            m.d.sync += tx_valid.eq(0)
            m.d.comb += err_unaccepted.eq(~link.tx_accepted)
        m.d.comb += [link.tx_valid.eq(tx_valid), link.tx_msg.eq(tx_msg)]

        # --- receive ------------------------------------------------------------------------------
        rx = link.rx_msg
        my_id = Mux(x2apic, self.apic_id, xapic_id)
        dest = rx.destination
        broadcast = Mux(rx.x2apic, dest == X2APIC_BROADCAST, dest == XAPIC_BROADCAST)
        physical_match = (dest == my_id) | broadcast
        ldr8 = storage["LDR"][24:32]
        dfr_model = storage["DFR"][28:32]
        mda = dest[0:8]
        xapic_logical = (dest[8:32] == 0) & Mux(
            dfr_model == 0xF, (ldr8 & mda) != 0,
            (dfr_model == 0x0) & (mda[4:8] == ldr8[4:8]) & ((mda[0:4] & ldr8[0:4]) != 0))
        x2apic_logical = ((dest[16:32] == x2apic_ldr[16:32]) &
                          ((dest[0:16] & x2apic_ldr[0:16]) != 0))
        # An xAPIC APIC with LDR = 0 (the state after INIT) matches no logical destination,
        # broadcast included (docs/spec/lapic.md §3); the x2APIC LDR is never 0.
        logical_match = Mux(x2apic, broadcast | x2apic_logical,
                            (ldr8 != 0) & (broadcast | xapic_logical))
        dest_match = Mux(rx.dest_mode == DestMode.LOGICAL, logical_match, physical_match)
        addressed = Signal()
        with m.Switch(rx.shorthand):
            with m.Case(Shorthand.NONE):
                m.d.comb += addressed.eq(dest_match)
            with m.Case(Shorthand.SELF):
                m.d.comb += addressed.eq(link.rx_self)
            with m.Case(Shorthand.ALL_INCLUDING_SELF):
                m.d.comb += addressed.eq(1)
            with m.Case(Shorthand.ALL_EXCLUDING_SELF):
                m.d.comb += addressed.eq(~link.rx_self)
        rx_init_deassert = (rx.delivery_mode == DeliveryMode.INIT) & (rx.level == Level.DEASSERT)
        rx_fixed_like = ((rx.delivery_mode == DeliveryMode.FIXED) |
                         (rx.delivery_mode == DeliveryMode.LOWEST_PRIORITY))
        match = Signal()
        m.d.comb += match.eq(enabled & (rx_init_deassert | addressed) &
                             (sw_enabled | ~rx_fixed_like))
        lowest = rx.delivery_mode == DeliveryMode.LOWEST_PRIORITY
        m.d.comb += [link.rx_match.eq(match), link.rx_priority.eq(ppr[4:8])]
        accept = Signal()
        m.d.comb += accept.eq(link.rx_valid & Mux(lowest, link.lp_grant, match))
        rx_irr_set = Signal(nv)

        # Acknowledges first: an event accepted in the same cycle (below) stays pending.
        for pending, ack in ((init_pending, self.cpu.init_ack), (sipi_pending, self.cpu.sipi_ack),
                             (nmi_pending, self.cpu.nmi_ack), (smi_pending, self.cpu.smi_ack)):
            with m.If(ack):
                m.d.sync += pending.eq(0)
        with m.If(accept):
            with m.Switch(rx.delivery_mode):
                with m.Case(DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY):
                    with m.If((rx.vector < 16) | (rx.vector >= nv)):
                        m.d.comb += err_receive_illegal.eq(1)
                    with m.Else():
                        m.d.comb += rx_irr_set.eq(Const(1, nv) << rx.vector)
                with m.Case(DeliveryMode.NMI):
                    m.d.sync += nmi_pending.eq(1)
                with m.Case(DeliveryMode.SMI):
                    m.d.sync += smi_pending.eq(1)
                with m.Case(DeliveryMode.STARTUP):
                    # The first SIPI wins: a second one before the acknowledge is dropped.
                    with m.If(~sipi_pending | self.cpu.sipi_ack):
                        m.d.sync += [sipi_pending.eq(1), sipi_vector.eq(rx.vector)]
                with m.Case(DeliveryMode.INIT):
                    with m.If(~rx_init_deassert):
                        m.d.sync += [init_pending.eq(1), sipi_pending.eq(0)]

        # --- local interrupts (SDM vol. 3 §11.5) ---------------------------------------------------
        # After the acknowledges above: an event raised in the cycle of an acknowledge stays.
        edge_set = Signal(nv)       # IRR bits set by edge-triggered acceptances
        level_set = Signal(nv)      # ... and by level-triggered ones (TMR set)
        eoi = fire & writes("EOI") & isr_any
        if lsrc:
            raised = []     # (IRR one-hot, level-triggered, illegal vector) per source

            def local(name, fires, level=Const(0)):
                """Deliver LVT ``name`` when ``fires``; returns the IRR one-hot it sets.  Its
                delivery mode is its own only if the register table lets software write it."""
                lvt = Lvt(storage[name])
                has_mode = bool(BY_NAME[name].write_mask & LVT_MODE_BITS)
                taken = fires & ~lvt.mask & enabled
                one_hot = Signal(nv, name=f"{name.lower()}_irr")
                illegal = Signal(name=f"{name.lower()}_illegal")
                fixed = lvt.delivery_mode == DeliveryMode.FIXED if has_mode else Const(1)
                with m.If(taken & fixed):
                    with m.If((lvt.vector < 16) | (lvt.vector >= nv)):
                        m.d.comb += illegal.eq(1)
                    with m.Else():
                        m.d.comb += one_hot.eq(Const(1, nv) << lvt.vector)
                if has_mode:
                    with m.If(taken):
                        with m.Switch(lvt.delivery_mode):
                            with m.Case(DeliveryMode.NMI):
                                m.d.sync += nmi_pending.eq(1)
                            with m.Case(DeliveryMode.SMI):
                                m.d.sync += smi_pending.eq(1)
                            with m.Case(DeliveryMode.INIT):
                                m.d.sync += [init_pending.eq(1), sipi_pending.eq(0)]
                            # ExtINT (no 8259 to give the vector) and reserved modes: nothing.
                raised.append((one_hot, level, illegal))
                return one_hot

            local("LVT_TIMER", timer_fire)
            local("LVT_ERROR", error_fire)
            lint_lvts = [Lvt(storage["LVT_LINT0"]), Lvt(storage["LVT_LINT1"])]
            active = Signal(2)
            active_prev = Signal(2)
            m.d.comb += active.eq(self.lint ^ Cat(*(lvt.polarity for lvt in lint_lvts)))
            m.d.sync += active_prev.eq(active)
            for i, lvt in enumerate(lint_lvts):
                # Only Fixed can be level-triggered; NMI, SMI and INIT are edge (SDM §11.5.1).
                level = (lvt.trigger == Trigger.LEVEL) & (lvt.delivery_mode == DeliveryMode.FIXED)
                fires = Mux(level, active[i] & ~lint_rirr[i], active[i] & ~active_prev[i])
                one_hot = local(f"LVT_LINT{i}", fires, level)
                with m.If(level & (one_hot != 0)):
                    m.d.sync += lint_rirr[i].eq(1)
                # EOI of the vector a level-triggered LINT raised clears its remote IRR.
                with m.If(eoi & tmr.bit_select(isrv, 1) & (lvt.vector == isrv8)):
                    m.d.sync += lint_rirr[i].eq(0)
            m.d.comb += [
                err_local_illegal.eq(or_tree(illegal for _, _, illegal in raised)),
                edge_set.eq(or_tree([Mux(lv, 0, h) for h, lv, _ in raised] + [rx_irr_set])),
                level_set.eq(or_tree(Mux(lv, h, 0) for h, lv, _ in raised)),
            ]
            m.d.sync += tmr.eq((tmr & ~edge_set) | level_set)
        else:
            m.d.comb += edge_set.eq(rx_irr_set)
        m.d.comb += irr_set.eq(edge_set | level_set)

        # --- CPU events ------------------------------------------------------------------------------
        cpu = self.cpu
        # INTA: move the highest deliverable vector to ISR, or hand out the spurious vector.
        m.d.sync += inta_done.eq(cpu.inta)
        with m.If(cpu.inta):
            with m.If(deliverable):
                m.d.comb += [irr_clr.eq(Const(1, nv) << irrv), isr_set.eq(Const(1, nv) << irrv)]
                m.d.sync += inta_vector.eq(irrv8)
            with m.Else():
                m.d.sync += inta_vector.eq(svr.spurious_vector)
        m.d.comb += [
            cpu.init.eq(init_pending),
            cpu.sipi.eq(sipi_pending),
            cpu.sipi_vector.eq(sipi_vector),
            cpu.nmi.eq(nmi_pending),
            cpu.smi.eq(smi_pending),
            cpu.intr.eq(deliverable),
            cpu.inta_done.eq(inta_done),
            cpu.inta_vector.eq(inta_vector),
        ]

        # IRR/ISR: a vector accepted in the cycle its predecessor is acknowledged stays pending.
        m.d.sync += [
            irr.eq((irr & ~irr_clr) | irr_set),
            isr.eq((isr & ~isr_clr) | isr_set),
        ]

        # --- INIT / disable: back to the reset state, keeping ID, mode and BSP (docs/spec/lapic.md §6.1) --
        # The registers are reset when the CPU takes the INIT (its acknowledge), not when the
        # APIC accepts it: a CPU in SMM holds INIT pending and its APIC keeps its state until RSM
        # (KVM resets the APIC in kvm_apic_accept_events, when the INIT is processed).
        with m.If(self.cpu.init_ack & init_pending):
            m.d.comb += soft_reset.eq(1)
        with m.If(fire & write & msr_apic_base & ~gp & enabled & ~new_base.enable):
            # A globally disabled APIC is absent: nothing stays pending towards the CPU.
            m.d.sync += [init_pending.eq(0), sipi_pending.eq(0), nmi_pending.eq(0),
                         smi_pending.eq(0)]

        with m.If(soft_reset):
            m.d.sync += [irr.eq(0), isr.eq(0), esr_pending.eq(0), esr_visible.eq(0), icr.eq(0),
                         tmr.eq(0), timer_current.eq(0), tsc_deadline.eq(0), lint_rirr.eq(0)]
            m.d.sync += [reg.eq(BY_NAME[name].reset) for name, reg in storage.items()]
        return m

    def _read_value(self, r, *, storage, x2apic, xapic_id, x2apic_ldr, tpr, ppr, apr, isr, irr,
                    esr, icr, tx_valid, tmr, timer_current, lint_rirr):
        """The value register ``r`` reads, in the current mode."""
        if r.kind is Kind.STORAGE:
            if r.name == "LDR":
                return Mux(x2apic, x2apic_ldr, storage["LDR"])
            if self.local_interrupts and r.name in ("LVT_LINT0", "LVT_LINT1"):
                return storage[r.name] | (lint_rirr[int(r.name[-1])] << 14)
            return storage[r.name]
        name = r.name
        if name == "ID":
            return Mux(x2apic, self.apic_id, Cat(Const(0, 24), xapic_id))
        if name == "VERSION":
            return VERSION | (MAX_LVT_INDEX << 16)
        if name == "APR":
            return apr
        if name == "PPR":
            return ppr
        if name == "TIMER_CURRENT" and self.local_interrupts:
            return timer_current
        if name[:3] in ("ISR", "IRR") or (name.startswith("TMR") and self.local_interrupts):
            bank = int(name[3:])
            vectors = {"ISR": isr, "IRR": irr, "TMR": tmr}[name[:3]]
            return vectors.word_select(bank, 32) if 32 * bank < self.n_vectors else 0
        if name == "ESR":
            return esr
        if name == "ICR":
            low = Cat(icr.as_value()[0:12], tx_valid, icr.as_value()[13:32])
            return Mux(x2apic, Cat(icr.as_value()[0:32], icr.destination), low)
        if name == "ICR_HI":
            return icr.destination
        # RRD, EOI, SELF_IPI (and TMRn, TIMER_CURRENT without local interrupts) read 0
        return 0


def _compose(layout, width, **fields):
    """A ``width``-bit value with each named one-bit field of ``layout`` set from a signal."""
    layout = data.Layout.cast(layout)
    value = Const(0, width)
    for name, bit in fields.items():
        value = value | (bit << layout[name].offset)
    return value[0:width]

