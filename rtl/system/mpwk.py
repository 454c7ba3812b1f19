"""An x86 system for simulation: the local APIC fabric plus the MP wakeup mailbox.

The mailbox serves every CPU but the BSP (TDX parks all APs in firmware, docs/spec/mpwk.md §3).  Ports:
``cpu``/``trace`` as :class:`apwake.rtl.lapic.ApicFabric`, ``mailbox_bus`` (the OS's view of the page)
and ``mailbox_ap`` (one per AP, in port order without the BSP) as
:class:`apwake.rtl.mpwk_mailbox.MpwkMailbox`; ``advance`` and ``quiescent`` (time skipping) as the
fabric's, quiescent only while the mailbox is idle too.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.lapic.signatures import CpuPortSignature, TraceSignature
from apwake.rtl.mpwk_mailbox import ApPortSignature, MpwkMailbox
from apwake.rtl.mpwk_mailbox.layouts import MailboxStatus

__all__ = ["MpwkSystem"]


class MpwkSystem(wiring.Component):
    """Parameters: ``fabric`` (an :class:`ApicFabric`, not yet elaborated) and ``mailbox``
    keyword arguments for :class:`MpwkMailbox` without ``apic_ids`` (taken from the fabric)."""

    def __init__(self, fabric, **mailbox):
        self.fabric = fabric
        ap_ids = [a for i, a in enumerate(fabric.apic_ids) if i != fabric.bsp_index]
        self.mailbox = MpwkMailbox(apic_ids=ap_ids, **mailbox)
        super().__init__({
            "cpu": In(CpuPortSignature()).array(fabric.n_cpus),
            "trace": Out(TraceSignature(n_ports=fabric.n_cpus)),
            "mailbox_bus": In(MemoryBusSignature()),
            "mailbox_ap": In(ApPortSignature()).array(len(ap_ids)),
            "mailbox_status": Out(MailboxStatus),
            "advance": In(32),
            "quiescent": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = fabric = self.fabric
        m.submodules.mailbox = mailbox = self.mailbox
        for i in range(fabric.n_cpus):
            wiring.connect(m, wiring.flipped(self.cpu[i]), fabric.cpu[i])
        wiring.connect(m, wiring.flipped(self.trace), fabric.trace)
        wiring.connect(m, wiring.flipped(self.mailbox_bus), mailbox.bus)
        for k in range(len(mailbox.apic_ids)):
            wiring.connect(m, wiring.flipped(self.mailbox_ap[k]), mailbox.ap[k])
        m.d.comb += self.mailbox_status.eq(mailbox.status)
        m.d.comb += [fabric.advance.eq(self.advance),
                     self.quiescent.eq(fabric.quiescent & mailbox.idle)]
        return m
