"""An SEV-ES or SEV-SNP guest for simulation: the local APIC fabric plus the hypervisor's GHCB MSR
unit (``snp=True``: an SNP VM, with AP Creation).

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
from .cpu_port import connect_cpu_port

__all__ = ["SevSystem"]


class SevSystem(wiring.Component):
    """Parameters: ``fabric`` (an :class:`ApicFabric`, not yet elaborated) and keyword arguments
    of :class:`GhcbMsrUnit` without ``n_vcpus``/``bsp_index``/``apic_ids`` (taken from the
    fabric: AP Creation finds its target by the fabric's APIC IDs)."""

    def __init__(self, fabric, **unit):
        self.fabric = fabric
        self.unit = GhcbMsrUnit(n_vcpus=fabric.n_cpus, bsp_index=fabric.bsp_index,
                                apic_ids=tuple(fabric.apic_ids), **unit)
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
            apic = fabric.cpu[i]
            # the CPU's side: everything but taking INIT/SIPI
            connect_cpu_port(m, self.cpu[i], apic, hypervisor_takes=("init", "sipi"))
            wiring.connect(m, wiring.flipped(self.vcpu[i]), unit.vcpu[i])
            connect_apic_events(m, apic, unit.apic[i])     # the hypervisor's side
        return m
