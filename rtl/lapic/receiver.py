"""The local APIC's receiver: destination matching and acceptance of fabric messages
(docs/spec/lapic.md §3, §5, §8 #8, #16, #17, #23)."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import (DeliveryMode, DestMode, Level, Shorthand, x2apic_logical_id,
                      XAPIC_BROADCAST, X2APIC_BROADCAST)
from .signatures import FabricLinkSignature, LINK_RX

__all__ = ["Receiver", "ACCEPT_DELAYS"]

#: the receiver's choices of ``delay``: 0 for the fabric that decides in the bus cycle, 3 for the
#: pipelined fabric (:class:`~apwake.rtl.lapic.fabric.ApicFabric` ``pipelined``: its stages 2 to
#: 4, :class:`~apwake.rtl.lapic.cluster.ApicCluster`)
ACCEPT_DELAYS = (0, 3)


class Receiver(wiring.Component):
    """Decides in the bus cycle whether this APIC takes a fabric message, and what it raises.

    * **Match** (``rx_match``, combinational): the APIC is globally enabled, and the message is
      INIT de-assert (it reaches everyone, §8 #8) or addressed to it, and the APIC is
      software-enabled unless the mode is other than Fixed/lowest priority.  Addressed: by
      shorthand (self = ``rx_self``), or by destination: physical ID or broadcast; logical:
      xAPIC flat (DFR 0xF) or cluster (DFR 0x0) model against LDR[31:24] (an LDR of 0 matches
      nothing, broadcast included), x2APIC cluster/one-hot against the derived logical ID.
      Broadcast is 0xFF or 0xFFFF_FFFF by the *sender's* format (``rx_msg.x2apic``); IDs are
      matched under this APIC's mode, so an x2APIC destination above 0xFF never aliases onto an
      xAPIC ID.
    * **Accept** (``rx_valid`` and the match, and for lowest priority ``lp_grant``, which the
      fabric gives one candidate): Fixed and
      lowest priority set the vector's bit on ``irr_set``, or raise ``illegal_vector`` for vector
      0-15 or at or above ``n_vectors``; NMI, SMI, SIPI (with ``sipi_vector``) and INIT (not
      de-assert) pulse their outputs for the pending flags.
    * ``rx_priority`` is the PPR class given on ``priority``, for lowest-priority arbitration.
    * **Delay** (``delay`` 3, the pipelined fabric): the match is decided in the bus cycle as
      above, against the registers of that cycle, and the acceptance happens ``delay`` cycles
      later, when the fabric gives ``lp_grant``; ``rx_valid`` and ``rx_msg`` are the bus cycle's,
      so the receiver keeps what the acceptance needs (mode, level, vector, whether it matched).
      A message still in flight when the registers are reset is what it would have been had it
      arrived before the reset: ``disabling`` drops it (whatever its mode), ``soft_reset``
      drops a Fixed or lowest-priority one (whose IRR bit or illegal-vector error the reset
      clears; an INIT, SIPI, NMI or SMI survives the reset as a pending event does).  A reset
      in the acceptance cycle itself meets the acceptance as on the one-cycle fabric.
      ``in_flight`` says that a matched message is on its way.  What the delay adds that the
      one-cycle fabric never shows: a message matched against registers the CPU then changes
      (an LDR, SVR) still arrives, up to three cycles after the change.

    Parameters
    ----------
    n_vectors : int
        Implemented vectors: the width of ``irr_set``.
    delay : int
        Cycles from the match to the acceptance: one of :data:`ACCEPT_DELAYS`.

    Attributes
    ----------
    rx_valid, rx_self, lp_grant : In(1)
    rx_msg : In(FabricMessage)
    rx_match : Out(1)
    rx_priority : Out(4)
        The receive half of :class:`~apwake.rtl.lapic.signatures.FabricLinkSignature`
        (its members, as declared there).
    apic_id : In(32)
        Hardware APIC ID (its low 8 bits are the xAPIC ID).
    enabled, x2apic, sw_enabled : In(1)
        IA32_APIC_BASE.EN; x2APIC mode; SVR.apic_enable.
    ldr, dfr : In(32)
        The xAPIC LDR and DFR registers.
    priority : In(4)
        PPR[7:4].
    irr_set : Out(n_vectors)
        One-hot: the IRR bit an accepted Fixed/lowest-priority message sets.
    illegal_vector : Out(1)
        ESR *receive illegal vector*.
    nmi, smi, init, sipi : Out(1)
        An accepted NMI, SMI, INIT (assert) or SIPI.
    sipi_vector : Out(8)
        The message's vector (the SIPI start page).
    soft_reset, disabling : In(1)
        The APIC's registers go back to their reset state; IA32_APIC_BASE.EN is being cleared
        (only used with a ``delay``).
    in_flight : Out(1)
        A message this APIC matched (for lowest priority: is a candidate for) waits for its
        acceptance; always 0 without a ``delay``.

    Raises
    ------
    ValueError
        ``delay`` is not one of :data:`ACCEPT_DELAYS`.
    """

    def __init__(self, *, n_vectors, delay=0):
        if delay not in ACCEPT_DELAYS:
            raise ValueError(f"delay must be one of {ACCEPT_DELAYS}, not {delay!r}")
        self.n_vectors = n_vectors
        self.delay = delay
        link = FabricLinkSignature().members
        super().__init__({
            **{name: link[name] for name in LINK_RX},
            "apic_id": In(32),
            "enabled": In(1),
            "x2apic": In(1),
            "sw_enabled": In(1),
            "ldr": In(32),
            "dfr": In(32),
            "priority": In(4),
            "irr_set": Out(n_vectors),
            "illegal_vector": Out(1),
            "nmi": Out(1),
            "smi": Out(1),
            "init": Out(1),
            "sipi": Out(1),
            "sipi_vector": Out(8),
            "soft_reset": In(1),
            "disabling": In(1),
            "in_flight": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nv = self.n_vectors
        rx, x2apic = self.rx_msg, self.x2apic
        x2apic_ldr = Signal(32)
        m.d.comb += x2apic_ldr.eq(x2apic_logical_id(self.apic_id))

        my_id = Mux(x2apic, self.apic_id, self.apic_id[0:8])
        dest = rx.destination
        broadcast = Mux(rx.x2apic, dest == X2APIC_BROADCAST, dest == XAPIC_BROADCAST)
        physical_match = (dest == my_id) | broadcast
        ldr8 = self.ldr[24:32]
        dfr_model = self.dfr[28:32]
        mda = dest[0:8]
        xapic_logical = (dest[8:32] == 0) & Mux(
            dfr_model == 0xF, (ldr8 & mda) != 0,
            (dfr_model == 0x0) & (mda[4:8] == ldr8[4:8]) & ((mda[0:4] & ldr8[0:4]) != 0))
        x2apic_logical = ((dest[16:32] == x2apic_ldr[16:32]) &
                          ((dest[0:16] & x2apic_ldr[0:16]) != 0))
        # An xAPIC APIC with LDR = 0 (the state after INIT) matches no logical destination,
        # broadcast included (docs/spec/lapic.md §3); the x2APIC LDR is never 0.
        logical_match = Mux(x2apic, broadcast | x2apic_logical,
                            (ldr8 != 0) & (broadcast | xapic_logical))
        dest_match = Mux(rx.dest_mode == DestMode.LOGICAL, logical_match, physical_match)
        addressed = Signal()
        with m.Switch(rx.shorthand):
            with m.Case(Shorthand.NONE):
                m.d.comb += addressed.eq(dest_match)
            with m.Case(Shorthand.SELF):
                m.d.comb += addressed.eq(self.rx_self)
            with m.Case(Shorthand.ALL_INCLUDING_SELF):
                m.d.comb += addressed.eq(1)
            with m.Case(Shorthand.ALL_EXCLUDING_SELF):
                m.d.comb += addressed.eq(~self.rx_self)
        rx_init_deassert = (rx.delivery_mode == DeliveryMode.INIT) & (rx.level == Level.DEASSERT)
        rx_fixed_like = ((rx.delivery_mode == DeliveryMode.FIXED) |
                         (rx.delivery_mode == DeliveryMode.LOWEST_PRIORITY))
        match = Signal()
        m.d.comb += match.eq(self.enabled & (rx_init_deassert | addressed) &
                             (self.sw_enabled | ~rx_fixed_like))
        m.d.comb += [self.rx_match.eq(match), self.rx_priority.eq(self.priority)]

        # what the acceptance acts on: the bus cycle's message, or the one matched ``delay``
        # cycles ago
        taken = Signal()                      # matched (a lowest-priority message: a candidate)
        mode, level, vector = (Signal.like(field, name=name) for field, name in (
            (rx.delivery_mode, "mode"), (rx.level, "level"), (rx.vector, "vector")))
        m.d.comb += [taken.eq(self.rx_valid & match), mode.eq(rx.delivery_mode),
                     level.eq(rx.level), vector.eq(rx.vector)]
        in_flight = []
        for stage in range(self.delay):
            # a reset in this cycle clears what the message would set (module docstring)
            fixed_like = (mode == DeliveryMode.FIXED) | (mode == DeliveryMode.LOWEST_PRIORITY)
            keep = ~self.disabling & ~(self.soft_reset & fixed_like)
            next_taken = Signal(name=f"taken_{stage + 1}")
            next_fields = [Signal.like(mode, name=f"mode_{stage + 1}"),
                           Signal.like(level, name=f"level_{stage + 1}"),
                           Signal.like(vector, name=f"vector_{stage + 1}")]
            m.d.sync += [next_taken.eq(taken & keep),
                         Cat(*next_fields).eq(Cat(mode, level, vector))]
            taken, (mode, level, vector) = next_taken, next_fields
            in_flight.append(taken)
        m.d.comb += self.in_flight.eq(Cat(in_flight).any() if in_flight else 0)

        accept = Signal()
        lowest = mode == DeliveryMode.LOWEST_PRIORITY
        m.d.comb += accept.eq(taken & Mux(lowest, self.lp_grant, 1))
        init_deassert = (mode == DeliveryMode.INIT) & (level == Level.DEASSERT)

        m.d.comb += self.sipi_vector.eq(vector)
        with m.If(accept):
            with m.Switch(mode):
                with m.Case(DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY):
                    with m.If((vector < 16) | (vector >= nv)):
                        m.d.comb += self.illegal_vector.eq(1)
                    with m.Else():
                        m.d.comb += self.irr_set.eq(Const(1, nv) << vector)
                with m.Case(DeliveryMode.NMI):
                    m.d.comb += self.nmi.eq(1)
                with m.Case(DeliveryMode.SMI):
                    m.d.comb += self.smi.eq(1)
                with m.Case(DeliveryMode.STARTUP):
                    m.d.comb += self.sipi.eq(1)
                with m.Case(DeliveryMode.INIT):
                    m.d.comb += self.init.eq(~init_deassert)
        return m
