"""The local APIC's pending INIT, SIPI, NMI and SMI towards its CPU (docs/spec/lapic.md §6, §8 #5;
KVM's ``pending_events``)."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PendingEvents"]


class PendingEvents(wiring.Component):
    """INIT, SIPI, NMI and SMI as pending levels with acknowledges.

    In each cycle, in this order (a later step wins):

    1. an acknowledge (``*_ack``) clears its flag;
    2. ``raise_nmi`` and ``raise_smi`` set theirs;
    3. ``raise_sipi`` sets ``sipi`` and latches ``raise_sipi_vector`` unless a SIPI is already
       pending and not being acknowledged: the first SIPI wins (SDM vol. 3 §9.4.4);
    4. ``raise_init`` sets ``init`` and clears a pending SIPI (§8 #5);
    5. ``drop`` (the APIC is globally disabled) clears all four.

    ``init_taken`` is high in the cycle the CPU acknowledges a pending INIT: the APIC's
    registers go back to their reset state then, not when the INIT is accepted (a CPU in SMM
    holds INIT pending, and its APIC keeps its state, until RSM; KVM ``kvm_apic_accept_events``).

    Attributes
    ----------
    init, sipi, nmi, smi : Out(1)
        Pending flags (the CPU port's levels).
    sipi_vector : Out(8)
    init_ack, sipi_ack, nmi_ack, smi_ack : In(1)
        One-cycle acknowledges from the CPU.
    raise_init, raise_sipi, raise_nmi, raise_smi : In(1)
        Accepted events (fabric messages and local sources).
    raise_sipi_vector : In(8)
    drop : In(1)
    init_taken : Out(1)
    """

    init: Out(1)
    init_ack: In(1)
    sipi: Out(1)
    sipi_vector: Out(8)
    sipi_ack: In(1)
    nmi: Out(1)
    nmi_ack: In(1)
    smi: Out(1)
    smi_ack: In(1)
    raise_init: In(1)
    raise_sipi: In(1)
    raise_sipi_vector: In(8)
    raise_nmi: In(1)
    raise_smi: In(1)
    drop: In(1)
    init_taken: Out(1)

    def elaborate(self, platform):
        m = Module()
        flags = (self.init, self.sipi, self.nmi, self.smi)
        for pending, ack in zip(flags, (self.init_ack, self.sipi_ack, self.nmi_ack, self.smi_ack)):
            with m.If(ack):
                m.d.sync += pending.eq(0)
        with m.If(self.raise_nmi):
            m.d.sync += self.nmi.eq(1)
        with m.If(self.raise_smi):
            m.d.sync += self.smi.eq(1)
        with m.If(self.raise_sipi & (~self.sipi | self.sipi_ack)):
            m.d.sync += [self.sipi.eq(1), self.sipi_vector.eq(self.raise_sipi_vector)]
        with m.If(self.raise_init):
            m.d.sync += [self.init.eq(1), self.sipi.eq(0)]
        with m.If(self.drop):
            m.d.sync += [flag.eq(0) for flag in flags]
        m.d.comb += self.init_taken.eq(self.init_ack & self.init)
        return m
