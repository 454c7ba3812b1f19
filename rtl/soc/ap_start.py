"""How the soft-SoC's cores start and stop: wait-for-SIPI, the MP wakeup mailbox, or the GHCB MSR
unit (issue 11 part 4: the AP start logic out of :class:`apwake.rtl.soc.Soc`)."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.ghcb_msr import GhcbMsrUnit
from apwake.rtl.ghcb_msr.signatures import ApicEventsSignature, VcpuPortSignature
from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.mpwk_mailbox import MpwkMailbox
from apwake.rtl.mpwk_mailbox.layouts import FIRMWARE_HALF
from .memory_map import AP_START, MAILBOX_BASE, SEV_LAUNCH_ADDR

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

    Parameters
    ----------
    apic_ids : sequence of int
        The cores' APIC IDs, in core order.
    bsp_index : int
    ap_start : str
        ``"sipi"``, ``"mailbox"`` or ``"ghcb"``.

    Attributes
    ----------
    apic : In(ApicEventsSignature()) per core
        The core's APIC INIT/SIPI (and NMI/INTR for the GHCB unit), acknowledged here.
    run : Out(n)
        Core i runs (else it is held in reset); the BSP's bit starts at 1.
    start_addr : Out(32) per core
        Where the core last started (the AP boot stub jumps there).
    back_to_firmware : In(n)
        One cycle: core i wrote RESET_VECTOR (mailbox only; ignored otherwise).
    mailbox_bus : In(MemoryBusSignature())
        Only with ``"mailbox"``: the mailbox page and its status window.
    vcpu : In(VcpuPortSignature()) per core
        Only with ``"ghcb"``: the cores' GHCB MSR, VMGEXIT and exit_done.

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
                   "start_addr": Out(32).array(n), "back_to_firmware": In(n)}
        if ap_start == "mailbox":
            members["mailbox_bus"] = In(MemoryBusSignature())
        if ap_start == "ghcb":
            members["vcpu"] = In(VcpuPortSignature()).array(n)
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
