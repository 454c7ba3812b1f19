"""The local APIC timer: one-shot, periodic and TSC-deadline (SDM vol. 3 §11.5.4, §11.5.4.1),
with exact time skipping (``advance``, docs/ARCHITECTURE.md "Time skipping")."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import Lvt, TimerMode, TIMER_DIVIDE_CODES
from .registers import BY_NAME
from .signatures import RegisterWriteSignature

__all__ = ["ApicTimer"]

_TIMER_INITIAL, _LVT_TIMER = BY_NAME["TIMER_INITIAL"].index, BY_NAME["LVT_TIMER"].index


class ApicTimer(wiring.Component):
    """The timer's counts and its firing.

    * **Count mode** (timer LVT mode one-shot, periodic, or reserved = one-shot): a free-running
      7-bit prescaler gives a ``tick`` every *divisor* clock cycles (``divide`` bits {3, 1, 0}:
      2, 4, ... 128 or 1); on a tick a non-zero ``current`` decrements.  Reaching 0 from 1
      pulses ``fire``; periodic reloads ``initial``, one-shot stops.  A taken TIMER_INITIAL
      write loads ``current`` (0 stops the timer); it wins over a decrement in the same cycle.
    * **TSC-deadline mode**: a ``deadline_write`` stores ``write.data`` in ``deadline`` (ignored
      in other modes); a non-zero deadline fires once ``tsc`` reaches it and reads 0 after.
      TIMER_INITIAL writes are ignored.
    * A taken LVT_TIMER write that switches into or out of TSC-deadline mode disarms the timer
      (``current`` and ``deadline`` to 0, as KVM's ``apic_update_lvtt``); so does
      ``soft_reset`` (INIT).
    * **Time skipping.**  A clock edge with ``advance = K`` stands for K + 1 cycles: the
      prescaler moves K + 1 counts and ``current`` loses every tick of those cycles.  ``quiet``
      says that the timer does not fire in this cycle nor in the K cycles after it, so the skip
      is exact; an edge with ``advance`` > 0 is only allowed while ``quiet`` (the harness checks;
      the TSC, an input, advances by K + 1 in the fabric).  ``advance`` is 0 in normal clocking.

    Attributes
    ----------
    mode : In(TimerMode)
        The timer LVT's mode (bits 18:17).
    divide : In(4)
        TIMER_DIVIDE bits 3:0.
    initial : In(32)
        TIMER_INITIAL, reloaded in periodic mode.
    tsc : In(64)
    write : In(RegisterWriteSignature)
        Taken register writes (TIMER_INITIAL and LVT_TIMER are decoded here).
    deadline_write : In(1)
        A WRMSR to IA32_TSC_DEADLINE (value on ``write.data``).
    soft_reset : In(1)
    fire : Out(1)
        The timer fires in this cycle.
    current : Out(32)
        The current count (TIMER_CURRENT outside TSC-deadline mode).
    deadline : Out(64)
        IA32_TSC_DEADLINE.
    advance : In(32)
        Extra cycles this clock edge stands for (time skipping); 0 otherwise.
    quiet : Out(1)
        The timer does not fire within this cycle and the ``advance`` cycles after it.
    """

    mode: In(TimerMode)
    divide: In(4)
    initial: In(32)
    tsc: In(64)
    write: In(RegisterWriteSignature())
    deadline_write: In(1)
    soft_reset: In(1)
    fire: Out(1)
    current: Out(32)
    deadline: Out(64)
    advance: In(32)
    quiet: Out(1)

    def elaborate(self, platform):
        m = Module()
        current, deadline, wdata = self.current, self.deadline, self.write.data
        deadline_mode = self.mode == TimerMode.TSC_DEADLINE
        periodic = self.mode == TimerMode.PERIODIC

        prescaler = Signal(7)       # free-running: the divider does not restart on writes
        m.d.sync += prescaler.eq(prescaler + 1 + self.advance[0:7])
        # the ticks in this cycle and the `advance` cycles after it: a tick is every cycle whose
        # prescaler has its low log2(divisor) bits all ones
        ticks = Signal(40)
        with m.Switch(Cat(self.divide[0:2], self.divide[3])):
            for code, divisor in TIMER_DIVIDE_CODES.items():
                shift = divisor.bit_length() - 1
                with m.Case(code):
                    m.d.comb += ticks.eq(((prescaler & (divisor - 1)) + self.advance + 1) >> shift)
        counting = ~deadline_mode & (current != 0)
        armed_deadline = deadline_mode & (deadline != 0)
        m.d.comb += self.quiet.eq(~(counting & (ticks >= current)) &
                                  ~(armed_deadline & (self.tsc + self.advance >= deadline)))
        with m.If(counting & (ticks != 0)):
            with m.If(current == 1):
                m.d.comb += self.fire.eq(1)
                m.d.sync += current.eq(Mux(periodic, self.initial, 0))
            with m.Else():
                m.d.sync += current.eq(current - ticks)
        with m.If(armed_deadline & (self.tsc >= deadline)):
            m.d.comb += self.fire.eq(1)
            m.d.sync += deadline.eq(0)
        with m.If(self.deadline_write & deadline_mode):
            m.d.sync += deadline.eq(wdata)

        # Register writes after the count: a write of TIMER_INITIAL in the cycle of a decrement wins.
        written = self.write.valid
        with m.If(written & (self.write.index == _TIMER_INITIAL) & ~deadline_mode):
            m.d.sync += current.eq(wdata[0:32])
        new_deadline_mode = Lvt(wdata[0:32]).timer_mode == TimerMode.TSC_DEADLINE
        with m.If(written & (self.write.index == _LVT_TIMER) & (deadline_mode != new_deadline_mode)):
            m.d.sync += [current.eq(0), deadline.eq(0)]
        with m.If(self.soft_reset):
            m.d.sync += [current.eq(0), deadline.eq(0)]
        return m
