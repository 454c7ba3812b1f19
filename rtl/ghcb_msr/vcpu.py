"""One vCPU's state in the GHCB MSR unit: its GHCB MSR, mp_state, AP reset hold, INIT and SIPI
(docs/spec/ghcb.md §1, §4, §7)."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import HoldReply, HoldType, MsrCode, VcpuState, layout_bits
from .signatures import ApicEventsSignature, VcpuControlSignature, VcpuPortSignature

__all__ = ["VcpuControl"]


class VcpuControl(wiring.Component):
    """A vCPU as KVM keeps it for an SEV-ES guest, with the APIC events it takes itself.

    Each cycle, in this order (a later step wins):

    1. ``exit_done`` and ``launch`` are one-cycle pulses; a ``port.msr_write`` stores the MSR.
    2. **APIC events**, only while no exit of this vCPU is strobed, queued or served (INIT and
       SIPI stay pending in the APIC until then: KVM accepts them only between exits, so a hold
       is always entered before the INIT meant to end it):

       - STOPPED (terminated): INIT and SIPI are acknowledged and dropped;
       - INIT: acknowledged; an AP goes to INIT_RECEIVED (its hold type kept), the BSP to
         RUNNABLE (a hold of the BSP ends "not woken");
       - SIPI: acknowledged; in INIT_RECEIVED the vCPU becomes RUNNABLE: the first SIPI pulses
         ``launch``; a later one ends an MSR-protocol hold with the reply "woken" (0x007, data
         1) and ``exit_done``, or queues the GHCB-page reply of a page-form hold
         (``control.release``); elsewhere it is dropped;
       - in AP_RESET_HOLD, a wake event (an NMI, or an interrupt with ``irq_allowed``) resumes
         the vCPU with the preset reply "not woken".
    3. **Commands** from the exit dispatcher (``control``, only while this vCPU is served):
       ``load_msr``, ``finish`` (resume: ``exit_done``, hold type cleared), ``hold`` (enter AP
       reset hold of ``hold_kind``, or resume at once while a wake event is pending; a
       page-form hold remembers ``hold_page``), ``stop`` (STOPPED), ``take_release``.
    4. ``port.vmgexit`` queues an exit (``request`` while RUNNABLE; a queued release requests
       too).

    Parameters
    ----------
    bsp : bool
        The vCPU that runs at creation; the others start UNINITIALIZED.
    msr_init : int
        The MSR's reset value (the SEV information response).

    Attributes
    ----------
    port : In(VcpuPortSignature)
        The vCPU.
    apic : In(ApicEventsSignature)
        Its local APIC's events.
    control : In(VcpuControlSignature)
        Commands from the dispatcher and this vCPU's MSR, release flag and hold page.
    serving : In(1)
        The dispatcher is serving this vCPU.
    request : Out(1)
        An exit or a release waits for the dispatcher.
    settled : Out(1)
        Nothing here changes on its own while the inputs hold (time skipping): no exit or
        release waiting, no INIT or SIPI pending in the APIC, no wake event for a held vCPU.
    """

    port: In(VcpuPortSignature())
    apic: In(ApicEventsSignature())
    control: In(VcpuControlSignature())
    serving: In(1)
    request: Out(1)
    settled: Out(1)

    def __init__(self, *, bsp, msr_init):
        self.bsp, self.msr_init = bsp, msr_init
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        port, apic, control = self.port, self.apic, self.control
        msr = Signal(64, init=self.msr_init)
        state = Signal(VcpuState, init=VcpuState.RUNNABLE if self.bsp else VcpuState.UNINITIALIZED)
        hold_type = Signal(HoldType)
        hold_gpa = Signal(32)
        first_sipi = Signal(init=int(self.bsp))
        exit_pending = Signal()
        release_pending = Signal()
        exit_done = Signal()
        launch = Signal()

        m.d.sync += [exit_done.eq(0), launch.eq(0)]
        # the next VMRUN: the vCPU runs again and its hold type is cleared (§4)
        resume = [exit_done.eq(1), hold_type.eq(HoldType.NONE)]
        # a wake event: an NMI, or an interrupt the guest would take (KVM: injectable IRQ)
        wake = apic.nmi | (apic.intr & port.irq_allowed)

        engaged = self.serving | exit_pending | release_pending | port.vmgexit
        with m.If(port.msr_write):
            m.d.sync += msr.eq(port.msr_wdata)
        m.d.comb += [port.msr_rdata.eq(msr), port.state.eq(state),
                     port.exit_done.eq(exit_done), port.launch.eq(launch)]
        with m.If(state == VcpuState.STOPPED):
            # a terminated vCPU never runs again: INIT and SIPI are taken and dropped
            m.d.comb += [apic.init_ack.eq(apic.init), apic.sipi_ack.eq(apic.sipi)]
        with m.Elif(~engaged):
            with m.If(apic.init):
                m.d.comb += apic.init_ack.eq(1)
                if self.bsp:
                    # the BSP is reset to RUNNABLE (§4); a hold of it ends "not woken"
                    with m.If(state == VcpuState.AP_RESET_HOLD):
                        m.d.sync += resume
                    m.d.sync += state.eq(VcpuState.RUNNABLE)
                else:
                    m.d.sync += state.eq(VcpuState.INIT_RECEIVED)  # hold type kept
            with m.Elif(apic.sipi):
                m.d.comb += apic.sipi_ack.eq(1)
                with m.If(state == VcpuState.INIT_RECEIVED):        # else dropped
                    m.d.sync += state.eq(VcpuState.RUNNABLE)
                    with m.If(~first_sipi):
                        m.d.sync += [first_sipi.eq(1), launch.eq(1)]
                    with m.Elif(hold_type == HoldType.MSR_PROTO):
                        m.d.sync += [msr.eq(layout_bits(HoldReply, info=MsrCode.AP_RESET_HOLD_RESP,
                                                        woken=1)), *resume]
                    with m.Elif(hold_type == HoldType.NAE_EVENT):
                        m.d.sync += release_pending.eq(1)           # page write first
            with m.Elif((state == VcpuState.AP_RESET_HOLD) & wake):
                # woken by an event, not by INIT-SIPI: the preset reply says "not woken"
                m.d.sync += [state.eq(VcpuState.RUNNABLE), *resume]

        # --- the dispatcher's commands, after the events: they win -----------------------------
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
        m.d.comb += [control.msr.eq(msr), control.release.eq(release_pending),
                     control.held_page.eq(hold_gpa)]

        # after the commands: a VMGEXIT strobed in the cycle an earlier exit is cleared still counts
        with m.If(port.vmgexit):
            m.d.sync += exit_pending.eq(1)
        # exits are served only for a vCPU that runs (KVM does not run one in INIT_RECEIVED)
        m.d.comb += self.request.eq((exit_pending & (state == VcpuState.RUNNABLE)) | release_pending)
        m.d.comb += self.settled.eq(~(self.request | apic.init | apic.sipi |
                                      ((state == VcpuState.AP_RESET_HOLD) & wake)))
        return m
