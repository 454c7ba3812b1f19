"""The local APIC's local interrupt sources through the local vector table: timer, LINT0/LINT1
pins and the error interrupt (SDM vol. 3 §11.5.1, §11.5.3)."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.priority import or_tree
from .layouts import DeliveryMode, Lvt, LVT_MODE_BITS, Trigger
from .registers import BY_NAME

__all__ = ["LocalSources"]


class LocalSources(wiring.Component):
    """Delivers the timer, error and LINT0/LINT1 interrupts as their LVTs say.

    * A source is taken when it fires, its LVT is not masked and the APIC is enabled.  The
      timer and error LVTs are always Fixed; a LINT LVT uses its delivery mode: Fixed sets the
      vector's bit on ``irr_edge`` or ``irr_level`` (or raises ``illegal_vector`` for vectors
      0-15 and at or above ``n_vectors``), NMI, SMI and INIT raise ``nmi``/``smi``/``init``;
      ExtINT (no 8259 supplies a vector) and the reserved modes do nothing.
    * **LINT pins**: active = pin XOR polarity.  Edge-triggered: a rising active edge fires.
      Level-triggered Fixed: the pin fires while active and its remote IRR (``lint_rirr``,
      LVT bit 14) is clear; the acceptance sets remote IRR and is level-triggered (TMR set).
      NMI, SMI and INIT are edge-triggered whatever the trigger bit says (SDM §11.5.1).
    * An ``eoi`` of a level-triggered vector (``eoi_level``) equal to a LINT LVT's vector
      clears that LINT's remote IRR; ``soft_reset`` clears both.

    Parameters
    ----------
    n_vectors : int
        Implemented vectors: the width of ``irr_edge``/``irr_level``.

    Attributes
    ----------
    lvt_timer, lvt_error, lvt_lint0, lvt_lint1 : In(Lvt)
    enabled : In(1)
        IA32_APIC_BASE.EN.
    lint : In(2)
        LINT0 (bit 0) and LINT1 (bit 1) pins.
    timer_fire, error_fire : In(1)
        The timer and the error condition fire in this cycle.
    eoi : In(1)
    eoi_vector : In(8)
    eoi_level : In(1)
        An EOI ended ``eoi_vector``, level-triggered or not.
    soft_reset : In(1)
    irr_edge, irr_level : Out(n_vectors)
        IRR bits set by edge- and level-triggered local interrupts.
    illegal_vector : Out(1)
        ESR *receive illegal vector*.
    nmi, smi, init : Out(1)
        A LINT delivered as NMI, SMI or INIT.
    lint_rirr : Out(2)
        LINT0/LINT1 remote IRR.
    """

    def __init__(self, *, n_vectors):
        self.n_vectors = n_vectors
        super().__init__({
            **{name: In(Lvt) for name in ("lvt_timer", "lvt_error", "lvt_lint0", "lvt_lint1")},
            "enabled": In(1),
            "lint": In(2),
            "timer_fire": In(1),
            "error_fire": In(1),
            "eoi": In(1),
            "eoi_vector": In(8),
            "eoi_level": In(1),
            "soft_reset": In(1),
            "irr_edge": Out(n_vectors),
            "irr_level": Out(n_vectors),
            "illegal_vector": Out(1),
            "nmi": Out(1),
            "smi": Out(1),
            "init": Out(1),
            "lint_rirr": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        nv = self.n_vectors
        raised = []     # (IRR one-hot, level-triggered, illegal vector) per source
        events = {DeliveryMode.NMI: [], DeliveryMode.SMI: [], DeliveryMode.INIT: []}

        def local(name, fires, level=Const(0)):
            """Deliver LVT ``name`` when ``fires``; returns the IRR one-hot it sets.  Its
            delivery mode is its own only if the register table lets software write it."""
            lvt = getattr(self, name.lower())
            has_mode = bool(BY_NAME[name].write_mask & LVT_MODE_BITS)
            taken = fires & ~lvt.mask & self.enabled
            one_hot = Signal(nv, name=f"{name.lower()}_irr")
            illegal = Signal(name=f"{name.lower()}_illegal")
            fixed = lvt.delivery_mode == DeliveryMode.FIXED if has_mode else Const(1)
            with m.If(taken & fixed):
                with m.If((lvt.vector < 16) | (lvt.vector >= nv)):
                    m.d.comb += illegal.eq(1)
                with m.Else():
                    m.d.comb += one_hot.eq(Const(1, nv) << lvt.vector)
            if has_mode:
                for mode, takers in events.items():
                    takers.append(taken & (lvt.delivery_mode == mode))
                # ExtINT (no 8259 to give the vector) and reserved modes: nothing.
            raised.append((one_hot, level, illegal))
            return one_hot

        local("LVT_TIMER", self.timer_fire)
        local("LVT_ERROR", self.error_fire)
        lint_lvts = [self.lvt_lint0, self.lvt_lint1]
        rirr = self.lint_rirr
        active = Signal(2)
        active_prev = Signal(2)
        m.d.comb += active.eq(self.lint ^ Cat(*(lvt.polarity for lvt in lint_lvts)))
        m.d.sync += active_prev.eq(active)
        for i, lvt in enumerate(lint_lvts):
            # Only Fixed can be level-triggered; NMI, SMI and INIT are edge (SDM §11.5.1).
            level = (lvt.trigger == Trigger.LEVEL) & (lvt.delivery_mode == DeliveryMode.FIXED)
            fires = Mux(level, active[i] & ~rirr[i], active[i] & ~active_prev[i])
            one_hot = local(f"LVT_LINT{i}", fires, level)
            with m.If(level & (one_hot != 0)):
                m.d.sync += rirr[i].eq(1)
            # EOI of the vector a level-triggered LINT raised clears its remote IRR.
            with m.If(self.eoi & self.eoi_level & (lvt.vector == self.eoi_vector)):
                m.d.sync += rirr[i].eq(0)
        m.d.comb += [
            self.illegal_vector.eq(or_tree(illegal for _, _, illegal in raised)),
            self.irr_edge.eq(or_tree(Mux(lv, 0, h) for h, lv, _ in raised)),
            self.irr_level.eq(or_tree(Mux(lv, h, 0) for h, lv, _ in raised)),
            self.nmi.eq(or_tree(events[DeliveryMode.NMI])),
            self.smi.eq(or_tree(events[DeliveryMode.SMI])),
            self.init.eq(or_tree(events[DeliveryMode.INIT])),
        ]
        with m.If(self.soft_reset):
            m.d.sync += rirr.eq(0)
        return m
