"""An 8N1 UART transmitter: ``start`` with ``data`` when not ``busy``; ``divisor`` clocks a bit."""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartTx"]


class UartTx(wiring.Component):
    def __init__(self, divisor):
        if not isinstance(divisor, int) or not 1 <= divisor < 1 << 16:
            raise ValueError(f"UART divisor must be 1 to 65535 clocks per bit, not {divisor!r}")
        self.divisor = divisor
        super().__init__({"data": In(8), "start": In(1), "busy": Out(1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=0x3FF)          # stop, data, start: sent LSB first
        bits = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.busy.eq(bits != 0), self.tx.eq(shift[0])]
        with m.If((bits == 0) & self.start):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.data, Const(1, 1))), bits.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
