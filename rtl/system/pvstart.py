"""A paravirtualised guest for simulation: the local APIC fabric plus the hypervisor's start-context
unit (state-carrying AP start-up: VMware VMI's ``SetInitialAPState``, a direct start).

As a hypervisor that can load register state, the unit takes every SIPI (it decides whether the
vCPU starts in real mode, in a carried context, or not at all), while each CPU takes INIT itself:
the unit only learns that an INIT was taken (``init_taken`` = the APIC's ``init`` and the CPU's
``init_ack`` in the same cycle).  While the unit holds a launch record for a CPU (its sink
stalls), that CPU's INIT waits in the APIC (``StartContextUnit.holding``): the SIPI the unit
picked and a later INIT reach the CPU in that order.  A CPU's port still shows its APIC's ``sipi``/``sipi_vector``
lines, read-only; its own ``sipi_ack`` goes nowhere.  The CPUs start from the ``launch``
records instead.

Ports: ``cpu``, ``trace`` (as :class:`apwake.rtl.lapic.ApicFabric`), ``start_call`` (the guest's
hypercall port), ``launch`` (the unit's launch records), ``start_memory`` (the unit's
guest-memory initiator), ``advance`` and ``quiescent`` (time skipping) as the fabric's,
quiescent only while the unit is idle too.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.lapic.signatures import CpuPortSignature, TraceSignature
from apwake.rtl.start_context import StartContextUnit
from apwake.rtl.start_context.signatures import LaunchSignature, StartCallSignature
from .cpu_port import connect_cpu_port

__all__ = ["PvStartSystem"]


class PvStartSystem(wiring.Component):
    """Parameters: ``fabric`` (an :class:`ApicFabric`, not yet elaborated); the unit takes the
    fabric's APIC IDs and BSP."""

    def __init__(self, fabric):
        self.fabric = fabric
        self.unit = StartContextUnit(apic_ids=tuple(fabric.apic_ids), bsp_index=fabric.bsp_index)
        super().__init__({
            "cpu": In(CpuPortSignature()).array(fabric.n_cpus),
            "trace": Out(TraceSignature(n_ports=fabric.n_cpus)),
            "start_call": In(StartCallSignature()),
            "launch": Out(LaunchSignature()),
            "start_memory": Out(MemoryBusSignature()),
            "advance": In(32),
            "quiescent": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = fabric = self.fabric
        m.submodules.start = unit = self.unit
        wiring.connect(m, wiring.flipped(self.trace), fabric.trace)
        wiring.connect(m, wiring.flipped(self.start_call), unit.call)
        wiring.connect(m, wiring.flipped(self.launch), unit.launch)
        wiring.connect(m, wiring.flipped(self.start_memory), unit.memory)
        m.d.comb += [fabric.advance.eq(self.advance),
                     self.quiescent.eq(fabric.quiescent & unit.idle)]
        for i in range(fabric.n_cpus):
            cpu, apic, events = self.cpu[i], fabric.cpu[i], unit.apic[i]
            # the CPU's side: everything but taking a SIPI
            # an INIT waits while the unit holds a launch record for this CPU: the SIPI it
            # decided on came first
            connect_cpu_port(m, cpu, apic, hypervisor_takes=("sipi",), hold_init=unit.holding[i])
            m.d.comb += [
                # the hypervisor's side
                events.init_taken.eq(apic.init & cpu.init_ack),
                events.sipi.eq(apic.sipi), events.sipi_vector.eq(apic.sipi_vector),
                apic.sipi_ack.eq(events.sipi_ack),
            ]
        return m
