"""One vCPU's state in the GHCB MSR unit: its GHCB MSR, mp_state, AP reset hold, INIT and SIPI,
and for an SEV-SNP VM its AP Creation state (docs/spec/ghcb.md §1, §4, §6, §7)."""

from amaranth import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import HoldReply, HoldType, MsrCode, VcpuState, layout_bits
from .signatures import ApicEventsSignature, VcpuControlSignature, VcpuPortSignature

__all__ = ["VcpuControl"]


class VcpuControl(wiring.Component):
    """A vCPU as KVM keeps it for an SEV-ES or SEV-SNP guest, with the APIC events it takes itself.

    Each cycle, in this order (a later step wins):

    1. ``exit_done``, ``launch`` and ``vmsa_launch`` are one-cycle pulses; a
       ``port.msr_write`` stores the MSR.
    2. **APIC events**, only while no exit of this vCPU is strobed, queued or served and no
       VMSA job waits (INIT and SIPI stay pending in the APIC until then: KVM accepts them only
       between exits, so a hold is always entered before the INIT meant to end it):

       - STOPPED (terminated): INIT and SIPI are acknowledged and dropped;
       - SNP, an AP Creation kick pending (``update``, KVM_REQ_UPDATE_PROTECTED_GUEST_STATE,
         handled before the APIC's events as in ``vcpu_enter_guest``): the AP Creation reset
         (``sev_snp_init_protected_guest_state``): HALTED, hold type cleared, and a VMSA job
         for the dispatcher;
       - INIT: acknowledged; with an SNP AP Creation waiting for it (``waiting``,
         ``snp_ap_waiting_for_reset``) the AP Creation reset as above, for INIT (the reset
         clears an AP reset hold's type; KVM keeps it and answers the old hold at the SIPI
         before running the new VMSA, which no guest relies on); otherwise an AP
         goes to INIT_RECEIVED (its hold type kept), the BSP to RUNNABLE (a hold of the BSP
         ends "not woken");
       - SIPI: acknowledged; in INIT_RECEIVED (else dropped) the vCPU runs again
         (``received_first_sipi`` is set): with no VMSA (after DESTROY) or with a created VMSA
         not yet started, a VMSA job (the start, or the VM's end: KVM refuses VMRUN without
         a VMSA); with its launch VMSA not yet started, ``launch``; at the first SIPI otherwise
         nothing (KVM's first SIPI changes nothing); at a later one an MSR-protocol hold ends
         with the reply "woken" (0x007, data 1) and ``exit_done``, a GHCB-page hold queues its
         page reply (``control.release``), no hold: nothing;
       - in AP_RESET_HOLD, a wake event (an NMI, or an interrupt with ``irq_allowed``) resumes
         the vCPU with the preset reply "not woken".
    3. **Commands**: ``ap_create`` (an accepted AP Creation for this vCPU, from the page engine
       while another vCPU may be served: ``waiting``, and ``update`` with ``ap_kick``); from the
       exit dispatcher (``control``, only while this vCPU is served): ``load_msr``, ``finish``
       (resume: ``exit_done``, hold type cleared), ``hold`` (enter AP reset hold of
       ``hold_kind``, or resume at once while a wake event is pending; a page-form hold
       remembers ``hold_page``), ``stop`` (STOPPED), ``take_release``; ``vmsa_apply`` (the
       reset's VMSA job is done: with ``vmsa_installed`` the vCPU has a new VMSA, not started:
       an AP reset by INIT waits in INIT_RECEIVED for its SIPI, otherwise a start job follows;
       without, it has none: HALTED, or INIT_RECEIVED after INIT, or for the BSP reset by INIT
       the VM's end), ``vmsa_start`` (RUNNABLE, ``vmsa_launch``).
    4. ``port.vmgexit`` queues an exit (``request`` while RUNNABLE; a queued release or VMSA
       job requests too).

    The per-vCPU state is a few bits; the VMSA addresses are in the unit's
    :class:`~apwake.rtl.ghcb_msr.ap_creation.VmsaTable`, whose start job drives ``vmsa_gpa``.

    Parameters
    ----------
    bsp : bool
        The vCPU that runs at creation; the others start UNINITIALIZED.
    msr_init : int
        The MSR's reset value (the SEV information response).
    snp : bool
        An SEV-SNP VM: AP Creation.

    Attributes
    ----------
    port : In(VcpuPortSignature)
        The vCPU.
    apic : In(ApicEventsSignature)
        Its local APIC's events.
    control : In(VcpuControlSignature)
        Commands from the dispatcher and this vCPU's MSR, release flag, hold page and VMSA job.
    serving : In(1)
        The dispatcher is serving this vCPU.
    ap_create, ap_kick : In(1)
        An accepted AP Creation request for this vCPU, and whether it kicks it at once.
    vmsa_gpa : In(32)
        The unit's VMSA table output, passed to ``port.vmsa_gpa``.
    request : Out(1)
        An exit, a release or a VMSA job waits for the dispatcher.
    settled : Out(1)
        Nothing here changes on its own while the inputs hold (time skipping): no exit,
        release or VMSA job waiting, no AP Creation kick pending, no INIT or SIPI pending in the
        APIC, no wake event for a held vCPU.  An AP Creation waiting for INIT is not work.
    """

    port: In(VcpuPortSignature())
    apic: In(ApicEventsSignature())
    control: In(VcpuControlSignature())
    serving: In(1)
    ap_create: In(1)
    ap_kick: In(1)
    vmsa_gpa: In(32)
    request: Out(1)
    settled: Out(1)

    def __init__(self, *, bsp, msr_init, snp=False):
        self.bsp, self.msr_init, self.snp = bsp, msr_init, snp
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        port, apic, control = self.port, self.apic, self.control
        msr = Signal(64, init=self.msr_init)
        state = Signal(VcpuState, init=VcpuState.RUNNABLE if self.bsp else VcpuState.UNINITIALIZED)
        hold_type = Signal(HoldType)
        hold_gpa = Signal(32)
        first_sipi = Signal(init=int(self.bsp))      # KVM's received_first_sipi
        exit_pending = Signal()
        release_pending = Signal()
        exit_done = Signal()
        launch = Signal()
        # SNP AP Creation (§6); constants on an SEV-ES VM
        if self.snp:
            waiting = Signal()          # snp_ap_waiting_for_reset
            update = Signal()           # KVM_REQ_UPDATE_PROTECTED_GUEST_STATE pending
            apply_pending = Signal()    # the reset's VMSA job waits for the dispatcher
            at_init = Signal()          # ... and the reset was an INIT's
            launch_pending = Signal()   # the start's VMSA job waits for the dispatcher
            fresh = Signal(init=int(not self.bsp))   # the vCPU's VMSA has not run yet
            created = Signal()          # that VMSA is a guest's (AP Creation), not the launch VMSA
            no_vmsa = Signal()          # AP Destroy left it none
            vmsa_launch = Signal()
        else:
            waiting = update = apply_pending = at_init = launch_pending = Const(0)
            created = no_vmsa = vmsa_launch = Const(0)
            fresh = ~first_sipi         # SEV-ES: only the first SIPI starts the launch VMSA

        m.d.sync += [exit_done.eq(0), launch.eq(0)]
        if self.snp:
            m.d.sync += vmsa_launch.eq(0)
        # the next VMRUN: the vCPU runs again and its hold type is cleared (§4)
        resume = [exit_done.eq(1), hold_type.eq(HoldType.NONE)]
        # a wake event: an NMI, or an interrupt the guest would take (KVM: injectable IRQ)
        wake = apic.nmi | (apic.intr & port.irq_allowed)

        def ap_creation_reset(for_init):
            """sev_snp_init_protected_guest_state: "Mark the vCPU as offline and not runnable",
            drop the VMSA; the dispatcher's VMSA job installs the pending one, if any."""
            m.d.sync += [state.eq(VcpuState.HALTED), apply_pending.eq(1), at_init.eq(for_init),
                         hold_type.eq(HoldType.NONE)]

        engaged = (self.serving | exit_pending | release_pending | port.vmgexit
                   | apply_pending | launch_pending)
        with m.If(port.msr_write):
            m.d.sync += msr.eq(port.msr_wdata)
        m.d.comb += [port.msr_rdata.eq(msr), port.state.eq(state),
                     port.exit_done.eq(exit_done), port.launch.eq(launch)]
        if self.snp:                     # an SEV-ES vCPU leaves them undriven: 0
            m.d.comb += [port.vmsa_launch.eq(vmsa_launch), port.vmsa_gpa.eq(self.vmsa_gpa)]
        def plain_init():
            if self.bsp:
                # the BSP is reset to RUNNABLE (§4); a hold of it ends "not woken"
                with m.If(state == VcpuState.AP_RESET_HOLD):
                    m.d.sync += resume
                m.d.sync += state.eq(VcpuState.RUNNABLE)
            else:
                m.d.sync += state.eq(VcpuState.INIT_RECEIVED)      # hold type kept

        with m.If(state == VcpuState.STOPPED):
            # a terminated vCPU never runs again: INIT and SIPI are taken and dropped
            m.d.comb += [apic.init_ack.eq(apic.init), apic.sipi_ack.eq(apic.sipi)]
        with m.Elif(~engaged):
            if self.snp:
                with m.If(update):
                    ap_creation_reset(for_init=0)
                init_case = m.Elif(apic.init)
            else:
                init_case = m.If(apic.init)
            with init_case:
                m.d.comb += apic.init_ack.eq(1)
                if self.snp:
                    with m.If(waiting):
                        ap_creation_reset(for_init=1)
                    with m.Else():
                        plain_init()
                else:
                    plain_init()
            with m.Elif(apic.sipi):
                m.d.comb += apic.sipi_ack.eq(1)
                with m.If(state == VcpuState.INIT_RECEIVED):        # else dropped
                    m.d.sync += first_sipi.eq(1)
                    if self.snp:
                        with m.If(no_vmsa | (fresh & created)):
                            m.d.sync += launch_pending.eq(1)         # the dispatcher decides
                        with m.Elif(fresh):
                            m.d.sync += [state.eq(VcpuState.RUNNABLE), launch.eq(1), fresh.eq(0)]
                    else:
                        with m.If(fresh):
                            m.d.sync += [state.eq(VcpuState.RUNNABLE), launch.eq(1)]
                    with m.Elif(~first_sipi):
                        m.d.sync += state.eq(VcpuState.RUNNABLE)     # first SIPI: nothing
                    with m.Elif(hold_type == HoldType.MSR_PROTO):
                        m.d.sync += [state.eq(VcpuState.RUNNABLE),
                                     msr.eq(layout_bits(HoldReply, info=MsrCode.AP_RESET_HOLD_RESP,
                                                        woken=1)), *resume]
                    with m.Elif(hold_type == HoldType.NAE_EVENT):
                        m.d.sync += [state.eq(VcpuState.RUNNABLE),
                                     release_pending.eq(1)]          # page write first
                    with m.Else():
                        m.d.sync += state.eq(VcpuState.RUNNABLE)
            with m.Elif((state == VcpuState.AP_RESET_HOLD) & wake):
                # woken by an event, not by INIT-SIPI: the preset reply says "not woken"
                m.d.sync += [state.eq(VcpuState.RUNNABLE), *resume]

        # --- commands, after the events: they win ---------------------------------------------
        if self.snp:
            with m.If(self.ap_create & (state != VcpuState.STOPPED)):    # a stopped vCPU never runs
                m.d.sync += waiting.eq(1)
                with m.If(self.ap_kick):
                    m.d.sync += update.eq(1)
            with m.If(control.vmsa_apply):
                # the reset is done: a stale VMGEXIT strobed meanwhile belongs to the old VMSA
                m.d.sync += [waiting.eq(0), update.eq(0), apply_pending.eq(0),
                             exit_pending.eq(0)]
                with m.If(control.vmsa_installed):
                    m.d.sync += [created.eq(1), fresh.eq(1), no_vmsa.eq(0)]
                    if self.bsp:
                        m.d.sync += launch_pending.eq(1)                # INIT leaves it RUNNABLE
                    else:
                        with m.If(at_init):
                            m.d.sync += state.eq(VcpuState.INIT_RECEIVED)   # starts at its SIPI
                        with m.Else():
                            m.d.sync += launch_pending.eq(1)
                with m.Else():
                    m.d.sync += [created.eq(0), fresh.eq(0), no_vmsa.eq(1)]
                    with m.If(at_init):
                        if self.bsp:
                            m.d.sync += launch_pending.eq(1)    # RUNNABLE without a VMSA
                        else:
                            m.d.sync += state.eq(VcpuState.INIT_RECEIVED)
            with m.If(control.vmsa_start):
                m.d.sync += [state.eq(VcpuState.RUNNABLE), vmsa_launch.eq(1), fresh.eq(0),
                             launch_pending.eq(0), exit_pending.eq(0),
                             hold_type.eq(HoldType.NONE)]
        with m.If(control.take_release):
            m.d.sync += release_pending.eq(0)
        with m.If(control.load_msr):
            m.d.sync += msr.eq(control.msr_value)
        with m.If(control.finish):
            m.d.sync += [exit_pending.eq(0), *resume]
        with m.If(control.hold):
            m.d.sync += exit_pending.eq(0)
            with m.If(control.hold_kind == HoldType.NAE_EVENT):
                m.d.sync += hold_gpa.eq(control.hold_page)
            with m.If(wake):
                m.d.sync += resume                   # events pending: no sleep, reply "not woken"
            with m.Else():
                m.d.sync += [state.eq(VcpuState.AP_RESET_HOLD), hold_type.eq(control.hold_kind)]
        with m.If(control.stop):
            m.d.sync += [state.eq(VcpuState.STOPPED), exit_pending.eq(0)]
            if self.snp:
                m.d.sync += [apply_pending.eq(0), launch_pending.eq(0), update.eq(0), waiting.eq(0)]
        m.d.comb += [control.msr.eq(msr), control.release.eq(release_pending),
                     control.held_page.eq(hold_gpa)]
        if self.snp:
            m.d.comb += [control.ap_job.eq(apply_pending | launch_pending),
                         control.ap_launch.eq(launch_pending), control.no_vmsa.eq(no_vmsa)]

        # after the commands: a VMGEXIT strobed in the cycle an earlier exit is cleared still counts
        with m.If(port.vmgexit):
            m.d.sync += exit_pending.eq(1)
        # exits are served only for a vCPU that runs (KVM does not run one in INIT_RECEIVED)
        m.d.comb += self.request.eq((exit_pending & (state == VcpuState.RUNNABLE)) | release_pending
                                    | apply_pending | launch_pending)
        m.d.comb += self.settled.eq(~(self.request | apic.init | apic.sipi | update |
                                      ((state == VcpuState.AP_RESET_HOLD) & wake)))
        return m
