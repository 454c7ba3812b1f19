"""One local APIC: the parts below joined (docs/spec/lapic.md §§1-6, §8).

The CPU side is :class:`~apwake.rtl.lapic.signatures.CpuPortSignature`, the fabric side
:class:`~apwake.rtl.lapic.signatures.FabricLinkSignature`.  The parts, one file each:

* :class:`~apwake.rtl.lapic.register_file.RegisterFile`: register decode, storage registers,
  IA32_APIC_BASE; hands taken writes to the parts that own a register;
* :class:`~apwake.rtl.lapic.icr_sender.IcrSender`: the ICR and the transmit slot;
* :class:`~apwake.rtl.lapic.receiver.Receiver`: destination matching and acceptance;
* :class:`~apwake.rtl.lapic.interrupt_state.InterruptState`: IRR/ISR/TMR, PPR/APR, INTA, EOI;
* :class:`~apwake.rtl.lapic.events.PendingEvents`: INIT/SIPI/NMI/SMI towards the CPU;
* :class:`~apwake.rtl.lapic.esr.ErrorStatus`: the ESR;
* :class:`~apwake.rtl.lapic.timer.ApicTimer` and :class:`~apwake.rtl.lapic.local_sources.LocalSources`:
  the local interrupts (with ``local_interrupts``).
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

from apwake.rtl.lib.checks import check_bool

from .esr import ErrorStatus
from .events import PendingEvents
from .icr_sender import IcrSender
from .interrupt_state import InterruptState
from .local_sources import LocalSources
from .receiver import ACCEPT_DELAYS, Receiver
from .register_file import MAX_LVT_INDEX, RegisterFile, VERSION, check_storage, check_x2apic_support
from .signatures import CpuPortSignature, FabricLinkSignature, LINK_RX, LINK_TX
from .timer import ApicTimer

__all__ = ["LocalApic", "local_apic_signature", "check_n_vectors", "check_same_timing",
           "VERSION", "MAX_LVT_INDEX", "VECTOR_COUNTS"]

VECTOR_COUNTS = (32, 64, 128, 256)


def check_same_timing(part, pipelined, what):
    """A factory-made APIC or cluster must have the fabric's timing: ValueError when ``part``
    says (its ``pipelined`` attribute) that it has the other one.  A part without the
    attribute (a :class:`~apwake.rtl.lib.instance.SeparateModule`) is taken at its maker's word."""
    got = getattr(part, "pipelined", pipelined)
    if got != pipelined:
        raise ValueError(f"{what} was made with pipelined={got!r} for a fabric with pipelined={pipelined!r}: "
                         f"it would accept messages in the wrong stage")


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
        "advance": In(32),
        "quiescent": Out(1),
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
    storage : str
        ``"flops"`` (default) or ``"ram"``: where the storage registers that no other part
        reads are kept (:class:`~apwake.rtl.lapic.register_file.RegisterFile`; the LVTs without
        a source, and without ``local_interrupts`` every LVT and the timer's registers).  A
        size knob for FPGAs with block RAM to spare; the behaviour is the same (the block tests
        run on both, synth/REPORT.md has the cost of each).
    x2apic_support : bool
        False: no x2APIC mode (setting IA32_APIC_BASE.EXTD is #GP, as on processors without
        it; :class:`~apwake.rtl.lapic.register_file.RegisterFile`), the size knob for the
        smallest FPGAs: the x2APIC logic folds away in synthesis.
    pipelined : bool
        For the pipelined fabric (:class:`~apwake.rtl.lapic.fabric.ApicFabric` ``pipelined``):
        a message is matched in its bus cycle and accepted three cycles later
        (:class:`~apwake.rtl.lapic.receiver.Receiver` ``delay``), and the transmit slot's
        message register loads while the slot is empty
        (:class:`~apwake.rtl.lapic.icr_sender.IcrSender` ``capture_when_idle``: the same
        behaviour at the link, a shorter path for a large FPGA build); clearing
        IA32_APIC_BASE.EN resets the registers one cycle later; and a register request is
        decoded in a cycle of its own before it is taken
        (:class:`~apwake.rtl.lapic.register_file.RegisterFile` ``registered_decode``: a cycle
        more per access, the decode cut from the writes it steers), so the register port takes
        nothing in the reset's cycle (nothing can read the registers in between: the APIC is
        disabled).

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
    advance : Signal(32), in
        Time skipping: the extra cycles this clock edge stands for (0 in normal clocking); only
        while ``quiescent``.  The timer counts them exactly (:class:`ApicTimer`).
    quiescent : Signal(1), out
        Nothing of this APIC changes on its own for ``advance`` + 1 cycles while its inputs hold:
        no IPI waiting for the fabric, no received message waiting for its acceptance and no
        reset still to come (``pipelined``), no error interrupt on its way, no timer firing (state
        that only follows an input settles in one edge, which a skipping edge also is).

    Raises
    ------
    ValueError, TypeError
        ``n_vectors`` not one of :data:`VECTOR_COUNTS`; ``local_interrupts`` not a bool;
        ``storage`` not one of :data:`~apwake.rtl.lapic.register_file.STORAGE_CHOICES`;
        ``x2apic_support`` or ``pipelined`` not a bool.

    Sources: Intel SDM vol. 3 ch. 11 (APIC: §11.5 local vector table, timer and error
    handling, §11.6 ICR, §11.8 EOI, §11.12 x2APIC) and ch. 9 (§9.4 MP initialisation); KVM
    ``arch/x86/kvm/lapic.c`` where the SDM leaves room.
    """

    def __init__(self, *, n_vectors=256, local_interrupts=True, storage="flops", x2apic_support=True,
                 pipelined=False):
        self.n_vectors = check_n_vectors(n_vectors)
        check_bool("local_interrupts", local_interrupts)
        self.local_interrupts = local_interrupts
        self.pipelined = check_bool("pipelined", pipelined)
        self.storage = check_storage(storage)
        self.x2apic_support = check_x2apic_support(x2apic_support)
        super().__init__(local_apic_signature())

    def elaborate(self, platform):
        m = Module()
        nv, lsrc = self.n_vectors, self.local_interrupts
        cpu, link = self.cpu, self.link

        m.submodules.registers = regs = RegisterFile(n_vectors=nv, local_interrupts=lsrc, storage=self.storage,
                                                      x2apic_support=self.x2apic_support,
                                                      registered_decode=self.pipelined)
        m.submodules.sender = sender = IcrSender(keep_reserved_bits=lsrc, capture_when_idle=self.pipelined)
        m.submodules.receiver = rx = Receiver(n_vectors=nv, delay=ACCEPT_DELAYS[-1] if self.pipelined else 0)
        m.submodules.interrupts = ints = InterruptState(n_vectors=nv, trigger_modes=lsrc)
        m.submodules.events = events = PendingEvents()
        m.submodules.errors = errors = ErrorStatus(error_interrupt=lsrc)
        owners = [sender.write, ints.write, errors.write]
        if lsrc:
            m.submodules.timer = timer = ApicTimer()
            m.submodules.local_sources = local = LocalSources(n_vectors=nv)
            owners.append(timer.write)

        # Registers: the CPU's port in, every taken write out to the parts that own a register.
        wiring.connect(m, wiring.flipped(cpu.reg), regs.bus)
        wiring.connect(m, regs.write, *owners)
        # The top's ports that a part has under the same name.
        _forward(m, link, sender, LINK_TX)
        _forward(m, link, rx, LINK_RX)
        _forward(m, cpu, ints, ("intr", "inta", "inta_done", "inta_vector"))
        _forward(m, cpu, events, ("init", "init_ack", "sipi", "sipi_vector", "sipi_ack", "nmi",
                                  "nmi_ack", "smi", "smi_ack"))
        # INIT taken, or IA32_APIC_BASE.EN cleared: back to the reset state, keeping ID, mode,
        # BSP and an IPI already handed to the fabric (docs/spec/lapic.md §6.1).
        disable_reset = regs.disabling
        if self.pipelined:
            # The reset that clearing EN asks for comes one cycle later: the APIC is already
            # disabled then (it matches nothing, its MMIO page reads all-ones, its pending events
            # are dropped), and the register port takes nothing in the cycle after a take (the
            # registered decode), so nothing can see the registers before they are reset.  It
            # cuts the path from the register decode to the synchronous reset of every register
            # (the 32-core ECP5 build's critical path).
            disable_reset = Signal()
            m.d.sync += disable_reset.eq(regs.disabling)
        soft_reset = disable_reset | events.init_taken
        resetting = disable_reset if self.pipelined else 0      # a reset still to come (quiescent)
        m.d.comb += [
            regs.apic_id.eq(self.apic_id),
            regs.bsp.eq(self.bsp),
            regs.tx_busy.eq(sender.tx_valid),
            regs.icr.eq(sender.icr),
            regs.irr.eq(ints.irr),
            regs.isr.eq(ints.isr),
            regs.ppr.eq(ints.ppr),
            regs.apr.eq(ints.apr),
            regs.esr.eq(errors.value),
            regs.soft_reset.eq(soft_reset),
            # send
            sender.x2apic.eq(regs.x2apic),
            sender.x2apic_entry.eq(regs.x2apic_entry),
            sender.soft_reset.eq(soft_reset),
            # receive
            rx.apic_id.eq(self.apic_id),
            rx.enabled.eq(regs.enabled),
            rx.x2apic.eq(regs.x2apic),
            rx.sw_enabled.eq(regs.svr.apic_enable),
            rx.ldr.eq(regs.ldr),
            rx.dfr.eq(regs.dfr),
            rx.priority.eq(ints.ppr[4:8]),
            rx.soft_reset.eq(soft_reset),
            rx.disabling.eq(regs.disabling),
            # IRR/ISR, INTR/INTA
            ints.tpr.eq(regs.tpr),
            ints.svr.eq(regs.svr),
            ints.enabled.eq(regs.enabled),
            ints.soft_reset.eq(soft_reset),
            # INIT/SIPI/NMI/SMI
            events.raise_sipi.eq(rx.sipi),
            events.raise_sipi_vector.eq(rx.sipi_vector),
            events.drop.eq(regs.disabling),
            # errors
            errors.send_accept.eq(sender.send_accept),
            errors.send_illegal.eq(sender.send_illegal),
            errors.illegal_address.eq(regs.illegal_address),
            errors.soft_reset.eq(soft_reset),
        ]
        if not lsrc:
            m.d.comb += self.quiescent.eq(~sender.tx_valid & ~rx.in_flight & ~resetting)
            m.d.comb += [
                ints.set_edge.eq(rx.irr_set),
                events.raise_init.eq(rx.init),
                events.raise_nmi.eq(rx.nmi),
                events.raise_smi.eq(rx.smi),
                errors.receive_illegal.eq(rx.illegal_vector),
            ]
            return m

        # --- local interrupts (SDM vol. 3 §11.5) ---------------------------------------------
        m.d.comb += [
            regs.tsc.eq(self.tsc),
            regs.tmr.eq(ints.tmr),
            regs.timer_current.eq(timer.current),
            regs.tsc_deadline.eq(timer.deadline),
            regs.lint_rirr.eq(local.lint_rirr),
            timer.mode.eq(regs.lvt_timer.timer_mode),
            timer.divide.eq(regs.timer_divide),
            timer.initial.eq(regs.timer_initial),
            timer.tsc.eq(self.tsc),
            timer.deadline_write.eq(regs.deadline_write),
            timer.soft_reset.eq(soft_reset),
            timer.advance.eq(self.advance),
            local.lvt_timer.eq(regs.lvt_timer),
            local.lvt_error.eq(regs.lvt_error),
            local.lvt_lint0.eq(regs.lvt_lint0),
            local.lvt_lint1.eq(regs.lvt_lint1),
            local.enabled.eq(regs.enabled),
            local.lint.eq(self.lint),
            local.timer_fire.eq(timer.fire),
            local.error_fire.eq(errors.fire),
            local.eoi.eq(ints.eoi),
            local.eoi_vector.eq(ints.eoi_vector),
            local.eoi_level.eq(ints.eoi_level),
            local.soft_reset.eq(soft_reset),
            ints.set_edge.eq(local.irr_edge | rx.irr_set),
            ints.set_level.eq(local.irr_level),
            events.raise_init.eq(rx.init | local.init),
            events.raise_nmi.eq(rx.nmi | local.nmi),
            events.raise_smi.eq(rx.smi | local.smi),
            errors.receive_illegal.eq(rx.illegal_vector | local.illegal_vector | regs.lvt_write_illegal),
        ]
        # Quiescent: besides an IPI waiting for the fabric, nothing raised this cycle by a local
        # source (a LINT level fires again after the EOI that clears its remote IRR) or an error
        # (the ESR's interrupt follows one edge later), no error interrupt on its way, and no
        # timer firing within the skip.
        raised = (local.irr_edge.any() | local.irr_level.any() | local.nmi | local.smi | local.init
                  | local.illegal_vector | regs.lvt_write_illegal | sender.send_accept
                  | sender.send_illegal | regs.illegal_address)
        m.d.comb += self.quiescent.eq(~sender.tx_valid & ~rx.in_flight & ~resetting & ~raised & ~errors.fire
                                      & timer.quiet)
        return m


def _forward(m, port, part, names):
    """Join the members ``names`` of the top's own ``port`` to the same-named ports of ``part``:
    what the top drives outwards comes from the part, what comes in goes to it."""
    for name in names:
        outer, inner = getattr(port, name), getattr(part, name)
        if port.signature.members[name].flow is Flow.Out:
            m.d.comb += outer.eq(inner)
        else:
            m.d.comb += inner.eq(outer)
