"""The local APIC's interrupt state: IRR, ISR and TMR, the priorities, INTA and EOI
(docs/spec/lapic.md §5; SDM vol. 3 §11.8)."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.priority import find_set
from .layouts import Svr
from .registers import BY_NAME
from .signatures import RegisterWriteSignature

__all__ = ["InterruptState"]

_EOI = BY_NAME["EOI"].index


class InterruptState(wiring.Component):
    """IRR/ISR/TMR of one local APIC and the CPU's INTR/INTA handshake.

    * **PPR** = TPR when TPR[7:4] >= ISRV[7:4], else ISRV[7:4] << 4 (ISRV: the highest
      in-service vector).  **APR** = TPR when TPR[7:4] >= IRRV[7:4] and > ISRV[7:4], else
      max(TPR[7:4] & ISRV[7:4], IRRV[7:4]) << 4 (SDM; informational only).
    * ``intr``: the APIC is enabled (globally and by SVR) and the highest IRR class is above
      PPR[7:4].  An ``inta`` pulse moves the highest IRR vector to ISR; one cycle later
      ``inta_done`` pulses with that vector on ``inta_vector``, or with SVR's spurious vector
      when nothing was deliverable.
    * **EOI** (a taken EOI write) clears the highest ISR bit and, when there was one, pulses
      ``eoi`` with that vector (``eoi_vector``) and its TMR bit (``eoi_level``).
    * IRR bits are set by ``set_edge`` and ``set_level`` at the end of the cycle; a vector
      accepted in the cycle its predecessor is acknowledged stays pending.  TMR takes 1 for
      ``set_level`` bits and 0 for ``set_edge`` bits (the trigger mode of the last acceptance).
    * ``soft_reset`` clears IRR, ISR and TMR.

    Parameters
    ----------
    n_vectors : int
        Implemented vectors: the width of IRR/ISR/TMR.
    trigger_modes : bool
        Keep a TMR (with the ``set_level``, ``tmr`` and ``eoi_level`` ports); without it every
        acceptance is edge-triggered.

    Attributes
    ----------
    tpr : In(8)
    svr : In(Svr)
    enabled : In(1)
        IA32_APIC_BASE.EN.
    write : In(RegisterWriteSignature)
        Taken register writes (EOI is decoded here).
    set_edge : In(n_vectors)
    set_level : In(n_vectors), only with ``trigger_modes``
    soft_reset : In(1)
    intr : Out(1)
    inta : In(1)
    inta_done : Out(1)
    inta_vector : Out(8)
    irr, isr : Out(n_vectors)
    tmr : Out(n_vectors), only with ``trigger_modes``
    ppr, apr : Out(8)
    eoi : Out(1)
    eoi_vector : Out(8)
    eoi_level : Out(1), only with ``trigger_modes``
    """

    def __init__(self, *, n_vectors, trigger_modes):
        self.n_vectors = n_vectors
        self.trigger_modes = trigger_modes
        members = {
            "tpr": In(8),
            "svr": In(Svr),
            "enabled": In(1),
            "write": In(RegisterWriteSignature()),
            "set_edge": In(n_vectors),
            "soft_reset": In(1),
            "intr": Out(1),
            "inta": In(1),
            "inta_done": Out(1),
            "inta_vector": Out(8),
            "irr": Out(n_vectors),
            "isr": Out(n_vectors),
            "ppr": Out(8),
            "apr": Out(8),
            "eoi": Out(1),
            "eoi_vector": Out(8),
        }
        if trigger_modes:
            members.update({"set_level": In(n_vectors), "tmr": Out(n_vectors),
                            "eoi_level": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        nv = self.n_vectors
        irr, isr, tpr = self.irr, self.isr, self.tpr

        irr_any, irrv = find_set(m, irr, highest=True, name="irrv")
        isr_any, isrv = find_set(m, isr, highest=True, name="isrv")
        irrv8, isrv8 = Signal(8), Signal(8)
        m.d.comb += [irrv8.eq(irrv), isrv8.eq(isrv)]
        ppr = self.ppr
        m.d.comb += ppr.eq(Mux(tpr[4:8] >= isrv8[4:8], tpr, Cat(Const(0, 4), isrv8[4:8])))
        with m.If((tpr[4:8] >= irrv8[4:8]) & (tpr[4:8] > isrv8[4:8])):
            m.d.comb += self.apr.eq(tpr)
        with m.Else():
            # SDM: APR[7:4] = max(TPR[7:4] & ISRV[7:4], IRRV[7:4]), APR[3:0] = 0
            masked = tpr[4:8] & isrv8[4:8]
            m.d.comb += self.apr.eq(Cat(Const(0, 4), Mux(irrv8[4:8] > masked, irrv8[4:8], masked)))
        deliverable = Signal()
        m.d.comb += deliverable.eq(self.enabled & self.svr.apic_enable & irr_any &
                                   (irrv8[4:8] > ppr[4:8]))

        irr_set, irr_clr = Signal(nv), Signal(nv)
        isr_set, isr_clr = Signal(nv), Signal(nv)
        with m.If(self.write.valid & (self.write.index == _EOI)):
            m.d.comb += isr_clr.eq(Mux(isr_any, Const(1, nv) << isrv, 0))
            m.d.comb += self.eoi.eq(isr_any)
        m.d.comb += self.eoi_vector.eq(isrv8)
        if self.trigger_modes:
            m.d.comb += [self.eoi_level.eq(self.tmr.bit_select(isrv, 1)),
                         irr_set.eq(self.set_edge | self.set_level)]
            m.d.sync += self.tmr.eq((self.tmr & ~self.set_edge) | self.set_level)
        else:
            m.d.comb += irr_set.eq(self.set_edge)

        # INTA: move the highest deliverable vector to ISR, or hand out the spurious vector.
        m.d.sync += self.inta_done.eq(self.inta)
        with m.If(self.inta):
            with m.If(deliverable):
                m.d.comb += [irr_clr.eq(Const(1, nv) << irrv), isr_set.eq(Const(1, nv) << irrv)]
                m.d.sync += self.inta_vector.eq(irrv8)
            with m.Else():
                m.d.sync += self.inta_vector.eq(self.svr.spurious_vector)
        m.d.comb += self.intr.eq(deliverable)

        # A vector accepted in the cycle its predecessor is acknowledged stays pending.
        m.d.sync += [
            irr.eq((irr & ~irr_clr) | irr_set),
            isr.eq((isr & ~isr_clr) | isr_set),
        ]
        with m.If(self.soft_reset):
            m.d.sync += [irr.eq(0), isr.eq(0)]
            if self.trigger_modes:
                m.d.sync += self.tmr.eq(0)
        return m
