"""The local APIC's error status register, write-then-read (docs/spec/lapic.md §4; SDM vol. 3
§11.5.3)."""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import Esr
from .registers import BY_NAME
from .signatures import RegisterWriteSignature

__all__ = ["ErrorStatus"]

_ESR = BY_NAME["ESR"].index


class ErrorStatus(wiring.Component):
    """Collects errors as they happen and shows them when software writes the ESR.

    * Each error input, high in a cycle, sets its ESR bit among the *pending* errors: bit 2
      ``send_accept``, 5 ``send_illegal``, 6 ``receive_illegal``, 7 ``illegal_address``.
    * A taken ESR write copies the pending errors to ``value`` (what reads return) and starts
      collecting anew with the errors of that very cycle.
    * With ``error_interrupt``, ``fire`` pulses one cycle after the pending errors go from empty
      to non-empty, or after an ESR write that sees a new error (the newer Intel parts; older
      ones fire on every new bit).  Registered, so an error LVT with an illegal vector (itself
      an error) makes no loop.
    * ``soft_reset`` clears both.

    Parameters
    ----------
    error_interrupt : bool
        Build ``fire`` for the error LVT.

    Attributes
    ----------
    send_accept, send_illegal, receive_illegal, illegal_address : In(1)
    write : In(RegisterWriteSignature)
        Taken register writes (ESR is decoded here).
    soft_reset : In(1)
    value : Out(8)
        The ESR as software reads it.
    fire : Out(1), only with ``error_interrupt``
    """

    def __init__(self, *, error_interrupt):
        self.error_interrupt = error_interrupt
        members = {
            "send_accept": In(1),
            "send_illegal": In(1),
            "receive_illegal": In(1),
            "illegal_address": In(1),
            "write": In(RegisterWriteSignature()),
            "soft_reset": In(1),
            "value": Out(8),
        }
        if error_interrupt:
            members["fire"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        pending = Signal(8, name="esr_pending")
        # Composed from the one-bit inputs: a comb signal with constant bits becomes a
        # constant-only `always @*` in Amaranth's Verilog, which Verilator and Icarus never run.
        new = _compose(Esr, 8, send_accept=self.send_accept, send_illegal_vector=self.send_illegal,
                       receive_illegal_vector=self.receive_illegal,
                       illegal_register_address=self.illegal_address)
        esr_write = self.write.valid & (self.write.index == _ESR)
        esr_next = Signal(8)
        m.d.comb += esr_next.eq(Mux(esr_write, new, pending | new))
        m.d.sync += pending.eq(esr_next)
        with m.If(esr_write):
            m.d.sync += self.value.eq(pending)
        if self.error_interrupt:
            m.d.sync += self.fire.eq((esr_next != 0) & ((pending == 0) | esr_write))
        with m.If(self.soft_reset):
            m.d.sync += [pending.eq(0), self.value.eq(0)]
        return m


def _compose(layout, width, **fields):
    """A ``width``-bit value with each named one-bit field of ``layout`` set from a signal."""
    layout = data.Layout.cast(layout)
    value = Const(0, width)
    for name, bit in fields.items():
        value = value | (bit << layout[name].offset)
    return value[0:width]
