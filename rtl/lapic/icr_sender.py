"""The local APIC's IPI sender: the ICR, its checks and the one-deep transmit slot to the fabric
(docs/spec/lapic.md §2, §4, §8 #8, #11, #20)."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import (DeliveryMode, FabricMessage, Icr, Level, Shorthand, Trigger,
                      ICR_X2APIC_RESERVED)
from .registers import BY_NAME
from .signatures import FabricLinkSignature, LINK_TX, RegisterWriteSignature

__all__ = ["IcrSender"]

_ICR, _ICR_HI, _SELF_IPI = (BY_NAME[name].index for name in ("ICR", "ICR_HI", "SELF_IPI"))


class IcrSender(wiring.Component):
    """ICR writes and the transmit slot of one local APIC.

    * **ICR storage.**  xAPIC: ICR_HI keeps bits 31:24 (the destination), a write of ICR low
      keeps every written bit except 12, which reads the delivery status (KVM's read-back); in
      x2APIC mode a write of the ICR keeps all 64 bits.  ``x2apic_entry`` and ``soft_reset``
      clear it.
    * **Send.**  A taken write of the ICR (or of SELF IPI in x2APIC mode: Fixed, edge, shorthand
      self, the vector from bits 7:0) makes a :class:`~apwake.rtl.lapic.layouts.FabricMessage`:
      the xAPIC destination is ICR_HI[31:24] as stored before the write, the x2APIC one the
      written bits 63:32; every message is edge/assert except INIT de-assert (§8 #20).
    * **Refused** (reserved modes 0b011/0b111; a non-Fixed mode with shorthand self, or with
      all-including-self unless INIT de-assert): not sent, ``send_accept`` pulses.
    * **Illegal vector** (Fixed or lowest priority, vector 0-15, not refused): ``send_illegal``
      pulses and the message is still sent.
    * **Transmit slot.**  ``tx_valid`` holds the message until the fabric's ``tx_done``; it is
      also the xAPIC delivery status.  Done with ``tx_accepted`` low pulses ``send_accept``.
      The register file holds back a second ICR write while the slot is full, so none is lost.

    Parameters
    ----------
    keep_reserved_bits : bool
        Keep the ICR's reserved bits as written (True, KVM's read-back) or only its defined bits
        (the smallest FPGA builds: 15 flip-flops fewer).
    capture_when_idle : bool
        ``tx_msg`` takes the message a write would send in every cycle the slot is empty, and
        holds while ``tx_valid`` (the link's contract: only then is ``tx_msg`` read), instead of
        only on the write: the same link behaviour without the path from the register decode's
        write enable to the enable of every ``tx_msg`` flip-flop (a large FPGA build's
        critical path, synth/REPORT.md).  Set by ``LocalApic(pipelined=True)``.

    Attributes
    ----------
    write : In(RegisterWriteSignature)
        Taken register writes (ICR, ICR_HI, SELF_IPI are decoded here).
    x2apic : In(1)
        x2APIC mode.
    x2apic_entry : In(1)
        The APIC is switching from xAPIC to x2APIC mode: the ICR is cleared.
    soft_reset : In(1)
        The ICR is cleared (the transmit slot is not: a message handed over is delivered).
    icr : Out(Icr)
        The stored ICR.
    tx_valid : Out(1)
    tx_msg : Out(FabricMessage)
    tx_done, tx_accepted : In(1)
        The transmit half of :class:`~apwake.rtl.lapic.signatures.FabricLinkSignature` (its
        members, as declared there).
    send_accept : Out(1)
        Pulse: ESR *send accept error* (refused, or no APIC accepted).
    send_illegal : Out(1)
        Pulse: ESR *send illegal vector*.
    """

    def __init__(self, *, keep_reserved_bits=True, capture_when_idle=False):
        self.keep_reserved_bits = keep_reserved_bits
        self.capture_when_idle = capture_when_idle
        link = FabricLinkSignature().members
        super().__init__({
            "write": In(RegisterWriteSignature()),
            "x2apic": In(1),
            "x2apic_entry": In(1),
            "soft_reset": In(1),
            "icr": Out(Icr),
            **{name: link[name] for name in LINK_TX},
            "send_accept": Out(1),
            "send_illegal": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        x2apic, wdata, icr = self.x2apic, self.write.data, self.icr

        written = self.write.valid
        icr_write = written & (self.write.index == _ICR)
        self_ipi_write = x2apic & written & (self.write.index == _SELF_IPI)
        with m.If(written & (self.write.index == _ICR_HI)):
            m.d.sync += icr.destination.eq(wdata[0:32] & BY_NAME["ICR_HI"].write_mask)
        with m.If(icr_write):
            # Every written bit is kept (x2APIC reserved bits were #GP); bit 12 reads the
            # delivery status.
            keep = ~(1 << 12) if self.keep_reserved_bits else ~(ICR_X2APIC_RESERVED | (1 << 12))
            with m.If(x2apic):
                m.d.sync += icr.eq(wdata & keep)
            with m.Else():
                m.d.sync += icr.as_value()[0:32].eq(wdata[0:32] & keep)
        with m.If(self.x2apic_entry | self.soft_reset):
            m.d.sync += icr.eq(0)

        new_icr = Icr(Signal(64))
        m.d.comb += new_icr.as_value().eq(wdata)
        msg = Signal(FabricMessage)
        with m.If(self_ipi_write):
            m.d.comb += [
                msg.vector.eq(wdata[0:8]),
                msg.delivery_mode.eq(DeliveryMode.FIXED),
                msg.shorthand.eq(Shorthand.SELF),
                msg.x2apic.eq(1),
            ]
        with m.Else():
            m.d.comb += [
                msg.vector.eq(new_icr.vector),
                msg.delivery_mode.eq(new_icr.delivery_mode),
                msg.dest_mode.eq(new_icr.dest_mode),
                msg.shorthand.eq(new_icr.shorthand),
                msg.x2apic.eq(x2apic),
                msg.destination.eq(Mux(x2apic, new_icr.destination, icr.destination[24:32])),
            ]
        mode = msg.delivery_mode
        is_init_deassert = ((mode == DeliveryMode.INIT) & (new_icr.trigger == Trigger.LEVEL) &
                            (new_icr.level == Level.DEASSERT) & ~self_ipi_write)
        m.d.comb += [
            msg.level.eq(Mux(is_init_deassert, Level.DEASSERT, Level.ASSERT)),
            msg.trigger.eq(Mux(is_init_deassert, Trigger.LEVEL, Trigger.EDGE)),
        ]
        # INIT de-assert may use "all including self" (docs/spec/lapic.md §2.1 recommends it).
        refused = ((mode == DeliveryMode.RESERVED_3) | (mode == DeliveryMode.EXTINT) |
                   (((msg.shorthand == Shorthand.SELF) |
                     ((msg.shorthand == Shorthand.ALL_INCLUDING_SELF) & ~is_init_deassert)) &
                    (mode != DeliveryMode.FIXED)))
        fixed_like = (mode == DeliveryMode.FIXED) | (mode == DeliveryMode.LOWEST_PRIORITY)
        refused_now, unaccepted = Signal(), Signal()
        with m.If(icr_write | self_ipi_write):
            m.d.comb += self.send_illegal.eq(fixed_like & (msg.vector < 16) & ~refused)
            with m.If(refused):
                m.d.comb += refused_now.eq(1)
            with m.Else():
                m.d.sync += self.tx_valid.eq(1)
                if not self.capture_when_idle:
                    m.d.sync += self.tx_msg.eq(msg)
        if self.capture_when_idle:
            with m.If(~self.tx_valid):
                m.d.sync += self.tx_msg.eq(msg)
        with m.If(self.tx_done):
            m.d.sync += self.tx_valid.eq(0)
            m.d.comb += unaccepted.eq(~self.tx_accepted)
        m.d.comb += self.send_accept.eq(refused_now | unaccepted)
        return m
