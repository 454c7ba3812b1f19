"""An SEV-ES guest for simulation: the local APIC fabric plus the hypervisor's GHCB MSR unit.

As in KVM for SEV-ES guests, the hypervisor takes INIT and SIPI (it tracks AP boot and reset
hold, docs/spec/ghcb.md §4): each APIC's ``init_ack``/``sipi_ack`` come from the unit, and a CPU acts on
them only through ``vcpu[i].launch`` and ``vcpu[i].exit_done`` (its port still shows the APIC's
``init``/``sipi`` lines, read-only; its own acknowledges go nowhere).  Everything else of the CPU port
(register bus, interrupts, NMI, SMI) is the fabric's.  Ports: ``cpu``, ``trace`` (as
:class:`apwake.rtl.lapic.ApicFabric`), ``vcpu`` (one :class:`apwake.rtl.ghcb_msr.VcpuPortSignature` per CPU),
``ghcb_memory`` (the unit's guest-memory initiator) and ``ghcb_term``; ``advance`` and
``quiescent`` (time skipping) as the fabric's, quiescent only while the GHCB unit is idle too.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.ghcb_msr import GhcbMsrUnit, VcpuPortSignature, connect_apic_events
from apwake.rtl.ghcb_msr.layouts import TermReason
from apwake.rtl.lapic.signatures import CpuPortSignature, TraceSignature

__all__ = ["SevSystem"]


class SevSystem(wiring.Component):
    """Parameters: ``fabric`` (an :class:`ApicFabric`, not yet elaborated) and keyword arguments
    of :class:`GhcbMsrUnit` without ``n_vcpus``/``bsp_index`` (taken from the fabric)."""

    def __init__(self, fabric, **unit):
        self.fabric = fabric
        self.unit = GhcbMsrUnit(n_vcpus=fabric.n_cpus, bsp_index=fabric.bsp_index, **unit)
        super().__init__({
            "cpu": In(CpuPortSignature()).array(fabric.n_cpus),
            "trace": Out(TraceSignature(n_ports=fabric.n_cpus)),
            "vcpu": In(VcpuPortSignature()).array(fabric.n_cpus),
            "ghcb_memory": Out(MemoryBusSignature()),
            "ghcb_term": Out(TermReason),
            "advance": In(32),
            "quiescent": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = fabric = self.fabric
        m.submodules.ghcb = unit = self.unit
        wiring.connect(m, wiring.flipped(self.trace), fabric.trace)
        wiring.connect(m, wiring.flipped(self.ghcb_memory), unit.memory)
        m.d.comb += self.ghcb_term.eq(unit.term)
        m.d.comb += [fabric.advance.eq(self.advance),
                     self.quiescent.eq(fabric.quiescent & unit.idle)]
        for i in range(fabric.n_cpus):
            cpu, apic = self.cpu[i], fabric.cpu[i]
            wiring.connect(m, wiring.flipped(cpu.reg), apic.reg)
            wiring.connect(m, wiring.flipped(self.vcpu[i]), unit.vcpu[i])
            m.d.comb += [
                # the CPU's side: everything but taking INIT/SIPI
                cpu.init.eq(apic.init), cpu.sipi.eq(apic.sipi), cpu.sipi_vector.eq(apic.sipi_vector),
                cpu.nmi.eq(apic.nmi), apic.nmi_ack.eq(cpu.nmi_ack),
                cpu.smi.eq(apic.smi), apic.smi_ack.eq(cpu.smi_ack),
                cpu.intr.eq(apic.intr), apic.inta.eq(cpu.inta),
                cpu.inta_done.eq(apic.inta_done), cpu.inta_vector.eq(apic.inta_vector),
            ]
            connect_apic_events(m, apic, unit.apic[i])     # the hypervisor's side
        return m
