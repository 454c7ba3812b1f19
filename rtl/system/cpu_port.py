"""Joining a CPU's port to its APIC when the hypervisor, not the CPU, takes some of the APIC's
start-up events (the SEV-ES and paravirtual systems)."""

from amaranth.lib import wiring

__all__ = ["connect_cpu_port"]


def connect_cpu_port(m, cpu, apic, *, hypervisor_takes, hold_init=0):
    """Connect ``cpu`` (the system's flipped :class:`apwake.rtl.lapic.signatures.CpuPortSignature`
    port) to ``apic`` (the fabric's port) in module ``m``: the register bus, NMI, SMI and INTR
    with their acknowledges, and the INIT and SIPI levels, which the CPU always sees.  The
    acknowledges named in ``hypervisor_takes`` (a subset of ``("init", "sipi")``) are left for
    the caller to drive from the hypervisor's unit; the CPU's own acknowledge of them goes
    nowhere.  ``hold_init`` (a 1-bit value) keeps the APIC's INIT from the CPU while high: it
    stays pending in the APIC.  ValueError for another name."""
    taken = set(hypervisor_takes)
    if not taken <= {"init", "sipi"}:
        raise ValueError(f"hypervisor_takes must name 'init' and/or 'sipi', not {sorted(taken)}")
    wiring.connect(m, wiring.flipped(cpu.reg), apic.reg)
    m.d.comb += [
        cpu.init.eq(apic.init & ~hold_init), cpu.sipi.eq(apic.sipi), cpu.sipi_vector.eq(apic.sipi_vector),
        cpu.nmi.eq(apic.nmi), apic.nmi_ack.eq(cpu.nmi_ack),
        cpu.smi.eq(apic.smi), apic.smi_ack.eq(cpu.smi_ack),
        cpu.intr.eq(apic.intr), apic.inta.eq(cpu.inta),
        cpu.inta_done.eq(apic.inta_done), cpu.inta_vector.eq(apic.inta_vector),
    ]
    for event in ("init", "sipi"):
        if event not in taken:
            m.d.comb += getattr(apic, f"{event}_ack").eq(getattr(cpu, f"{event}_ack"))
