"""How the soft-SoC's cores start and stop: wait-for-SIPI, the MP wakeup mailbox, the GHCB MSR
unit, or the start-context unit (issue 11 part 4: the AP start logic out of
:class:`apwake.rtl.soc.Soc`; issue 13: the state-carrying start)."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.ghcb_msr import GhcbMsrUnit
from apwake.rtl.ghcb_msr.signatures import ApicEventsSignature, VcpuPortSignature
from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.mpwk_mailbox import MpwkMailbox
from apwake.rtl.mpwk_mailbox.layouts import FIRMWARE_HALF
from apwake.rtl.start_context import StartContextUnit
from apwake.rtl.start_context.layouts import LaunchKind
from .memory_map import AP_START, MAILBOX_BASE, SEV_LAUNCH_ADDR
from .signatures import StartTraceSignature
from .start_window import StartCallWindow

__all__ = ["ApStart"]


class ApStart(wiring.Component):
    """Which cores run, and where each last started.

    * ``"sipi"``: INIT holds an AP (``run`` low; the BSP has no wait-for-SIPI state and only
      acknowledges it); a SIPI while held records ``start_addr = vector << 12`` and releases it.
    * ``"mailbox"``: as ``"sipi"``, and the APs start held, parked on an ACPI MP wakeup mailbox
      (:class:`apwake.rtl.mpwk_mailbox.MpwkMailbox`, version 1, at :data:`MAILBOX_BASE`): a Wakeup
      releases the AP at WakeupVector, ``back_to_firmware`` (RESET_VECTOR) holds it again.
    * ``"ghcb"``: the GHCB MSR unit takes INIT and SIPI (docs/spec/ghcb.md §4); its launch pulse
      (the first SIPI) releases the core at :data:`SEV_LAUNCH_ADDR`.
    * ``"context"``: the start-context unit (:class:`apwake.rtl.start_context.StartContextUnit`)
      takes the SIPIs and the calls of the START window (:class:`.start_window.StartCallWindow`
      on ``start_bus``) and reads the ``struct vmi_ap_state`` and the GDT from RAM (``memory``).
      INIT holds an AP as with ``"sipi"``.  Its launch records (the sink is always ready):
      CONTEXT releases the core with ``start_addr`` = the state's EIP and ``start_sp`` = its
      ESP; REAL_MODE with ``start_addr = vector << 12`` (``start_sp`` 0); REFUSED and DROPPED
      change nothing (the window counts them).

    Parameters
    ----------
    apic_ids : sequence of int
        The cores' APIC IDs, in core order.
    bsp_index : int
    ap_start : str
        ``"sipi"``, ``"mailbox"``, ``"ghcb"`` or ``"context"``.

    Attributes
    ----------
    apic : In(ApicEventsSignature()) per core
        The core's APIC INIT/SIPI (and NMI/INTR for the GHCB unit), acknowledged here.
    run : Out(n)
        Core i runs (else it is held in reset); the BSP's bit starts at 1.
    start_addr : Out(32) per core
        Where the core last started (the AP boot stub jumps there).
    start_sp : Out(32) per core
        The stack the core's last start gave it, 0 for none (the AP boot stub loads it into sp
        unless 0); only ``"context"`` gives one.
    back_to_firmware : In(n)
        One cycle: core i wrote RESET_VECTOR (mailbox only; ignored otherwise).
    mailbox_bus : In(MemoryBusSignature())
        Only with ``"mailbox"``: the mailbox page and its status window.
    vcpu : In(VcpuPortSignature()) per core
        Only with ``"ghcb"``: the cores' GHCB MSR, VMGEXIT and exit_done.
    start_bus : In(MemoryBusSignature())
        Only with ``"context"``: the START call window.
    memory : Out(MemoryBusSignature())
        Only with ``"context"``: the start-context unit's reads of RAM.
    trace : Out(StartTraceSignature(n))
        Only with ``"context"``: the launch records taken and the INITs, for a testbench.

    Raises
    ------
    ValueError
        An unknown ``ap_start``, a ``bsp_index`` that is not a core.
    """

    def __init__(self, *, apic_ids, bsp_index, ap_start):
        if ap_start not in AP_START:
            raise ValueError(f"ap_start must be one of {tuple(AP_START)}, not {ap_start!r}")
        self.apic_ids = tuple(apic_ids)
        n = len(self.apic_ids)
        if not isinstance(bsp_index, int) or not 0 <= bsp_index < n:
            raise ValueError(f"bsp_index must be a core index below {n}, not {bsp_index!r}")
        self.bsp_index, self.ap_start = bsp_index, ap_start
        members = {"apic": In(ApicEventsSignature()).array(n), "run": Out(n, init=1 << bsp_index),
                   "start_addr": Out(32).array(n), "start_sp": Out(32).array(n), "back_to_firmware": In(n)}
        if ap_start == "mailbox":
            members["mailbox_bus"] = In(MemoryBusSignature())
        if ap_start == "ghcb":
            members["vcpu"] = In(VcpuPortSignature()).array(n)
        if ap_start == "context":
            members.update(start_bus=In(MemoryBusSignature()), memory=Out(MemoryBusSignature()),
                           trace=Out(StartTraceSignature(n)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n, bsp = len(self.apic_ids), self.bsp_index
        run, start_addr = self.run, self.start_addr
        if self.ap_start == "ghcb":
            m.submodules.ghcb = ghcb = GhcbMsrUnit(n_vcpus=n, bsp_index=bsp)
            # the firmware speaks the MSR protocol only: GHCB-page accesses are answered (reads
            # as 0, writes dropped) so a page request gets its malformed-input reply, never hangs
            gm = ghcb.memory
            m.d.comb += [gm.req_ready.eq(1), gm.rdata.eq(0)]
            m.d.sync += gm.resp_valid.eq(gm.req_valid)
            for i in range(n):
                wiring.connect(m, wiring.flipped(self.apic[i]), ghcb.apic[i])
                wiring.connect(m, wiring.flipped(self.vcpu[i]), ghcb.vcpu[i])
                with m.If(ghcb.vcpu[i].launch):
                    m.d.sync += [run[i].eq(1), start_addr[i].eq(SEV_LAUNCH_ADDR)]
            return m
        if self.ap_start == "context":
            self._elaborate_context(m)
            return m

        for i in range(n):
            apic = self.apic[i]
            with m.If(apic.init):
                m.d.comb += apic.init_ack.eq(1)
                if i != bsp:                         # the BSP has no wait-for-SIPI state
                    m.d.sync += run[i].eq(0)
            with m.Elif(apic.sipi):
                m.d.comb += apic.sipi_ack.eq(1)
                with m.If(~run[i]):                  # ignored unless waiting, as on hardware
                    m.d.sync += [run[i].eq(1), start_addr[i].eq(apic.sipi_vector << 12)]

        if self.ap_start == "mailbox":
            aps = [i for i in range(n) if i != bsp]
            m.submodules.mailbox = mailbox = MpwkMailbox(
                base=MAILBOX_BASE, apic_ids=[self.apic_ids[i] for i in aps], version=1,
                reset_vector=MAILBOX_BASE + FIRMWARE_HALF)
            wiring.connect(m, wiring.flipped(self.mailbox_bus), mailbox.bus)
            for k, i in enumerate(aps):
                ap = mailbox.ap[k]
                with m.If(ap.wake & ~run[i]):
                    m.d.comb += ap.wake_ack.eq(1)
                    m.d.sync += [run[i].eq(1), start_addr[i].eq(ap.wake_vector[0:32])]
                with m.If(self.back_to_firmware[i]):
                    m.d.comb += ap.return_to_firmware.eq(1)
                    m.d.sync += run[i].eq(0)
        return m

    def _elaborate_context(self, m):
        n, bsp = len(self.apic_ids), self.bsp_index
        run, start_addr, start_sp, trace = self.run, self.start_addr, self.start_sp, self.trace
        m.submodules.start_context = unit = StartContextUnit(apic_ids=self.apic_ids, bsp_index=bsp)
        m.submodules.start_window = window = StartCallWindow()
        wiring.connect(m, wiring.flipped(self.start_bus), window.bus)
        wiring.connect(m, window.call, unit.call)
        wiring.connect(m, unit.memory, wiring.flipped(self.memory))
        launch = unit.launch
        state = launch.state
        m.d.comb += [launch.ready.eq(1),
                     window.launch_taken.eq(launch.valid), window.launch_kind.eq(launch.kind),
                     trace.valid.eq(launch.valid), trace.vcpu.eq(launch.vcpu), trace.kind.eq(launch.kind),
                     trace.via_sipi.eq(launch.via_sipi), trace.eip.eq(state.eip), trace.esp.eq(state.esp)]
        for i in range(n):
            apic, events = self.apic[i], unit.apic[i]
            # INIT is taken at once (the unit: an AP waits for SIPI again, its armed context kept)
            m.d.comb += [apic.init_ack.eq(apic.init), events.init_taken.eq(apic.init),
                         trace.init_taken[i].eq(apic.init), events.sipi.eq(apic.sipi),
                         events.sipi_vector.eq(apic.sipi_vector), apic.sipi_ack.eq(events.sipi_ack)]
            with m.If(launch.valid & (launch.vcpu == i)):
                with m.If(launch.kind == LaunchKind.CONTEXT):
                    m.d.sync += [run[i].eq(1), start_addr[i].eq(state.eip), start_sp[i].eq(state.esp)]
                with m.Elif(launch.kind == LaunchKind.REAL_MODE):
                    m.d.sync += [run[i].eq(1), start_addr[i].eq(launch.vector << 12), start_sp[i].eq(0)]
            if i != bsp:                             # after a record of the same cycle, as in the unit
                with m.If(apic.init):
                    m.d.sync += run[i].eq(0)
