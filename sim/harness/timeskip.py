"""Time skipping: a quiescent design is not clocked cycle by cycle while everybody waits on a timer.

A design that supports it has an ``advance`` input (32 bits) and a ``quiescent`` output
(``rtl/lapic/fabric.py``, ``rtl/system/``): ``quiescent`` says that, with the inputs held, nothing
but its counters (the TSC, the APIC timers' prescalers and counts) changes for ``advance`` + 1
cycles, and a clock edge with ``advance = K`` stands for K + 1 cycles, the counters counting
all of them.  :class:`TimeSkipper` uses it from the testbench side:

* It looks every ``poll_cycles`` cycles, in the read-only phase 7 ns after a rising edge (the
  clock is low), and skips only when **the design is quiescent**, **nobody waits on a clock
  edge** (a driver in the middle of a transfer does; a model waiting for an interrupt, a memory
  write or a timer does not) and **the next timer** anybody waits on (a model's delay, a
  watchdog, a responder's pause) is far enough ahead.  Timers are known from cocotb's own
  objects: :func:`install` records every :class:`cocotb.triggers.Timer` while it is primed.
* A skip stops the clock, finds the largest ``K`` for which the design stays quiescent (the
  APIC timers bound it: an armed timer must not fire inside a skip), raises the clock once with
  ``advance = K`` at the time the (K+1)-th edge would have come, and restarts the clock in phase.
  The skip ends at least ``margin`` cycles before the next timer, so whatever wakes up finds the
  design exactly as cycle-by-cycle clocking would have left it, at the same simulated time:
  reports, cycle counts and timelines do not change (``tests/test_timeskip.py`` compares them).
  Waveforms show the counters jumping.

Relies on cocotb 2.1's trigger internals (``Timer._prime``/``_unprime``/``_react`` and the edge
triggers' ``_callbacks``), which :func:`install` checks for by name.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, Timer
from cocotb.utils import get_sim_steps, get_sim_time

from .background import Background

__all__ = ["TimeSkipper", "install", "pending_deadline", "ADVANCE_MAX"]

#: the widest skip one edge can carry (the designs' ``advance`` is 32 bits)
ADVANCE_MAX = (1 << 32) - 1

_primed = {}        # Timer -> absolute deadline in simulator steps, while primed


def install():
    """Record every primed :class:`cocotb.triggers.Timer` (idempotent).

    Raises
    ------
    RuntimeError
        The cocotb in use does not have the trigger internals this relies on.
    """
    if getattr(Timer, "_apwake_tracked", False):
        return
    for name in ("_prime", "_unprime", "_react", "_sim_steps"):
        if name != "_sim_steps" and not callable(getattr(Timer, name, None)):
            raise RuntimeError(f"time skipping needs cocotb's Timer.{name} (cocotb 2.1); "
                               f"this cocotb {cocotb.__version__} lacks it")
    prime, unprime, react = Timer._prime, Timer._unprime, Timer._react

    def _prime(self):
        _primed[self] = get_sim_time("step") + self._sim_steps
        prime(self)

    def _unprime(self):
        _primed.pop(self, None)
        unprime(self)

    def _react(self):
        _primed.pop(self, None)
        react(self)

    Timer._prime, Timer._unprime, Timer._react = _prime, _unprime, _react
    Timer._apwake_tracked = True


# Installed on import, before any test starts, so that a timer primed before the first skipper
# exists (a cocotb test's own timeout) is known too.
install()


def pending_deadline(exclude=()):
    """The earliest absolute deadline (simulator steps) of a primed Timer not in ``exclude``, or
    None when none is primed."""
    deadlines = [t for timer, t in _primed.items() if timer not in exclude]
    return min(deadlines) if deadlines else None


def _edge_waiters(signal):
    """Whether any task waits on an edge or a change of ``signal``."""
    return any(getattr(trigger, "_callbacks", None)
               for trigger in (signal.rising_edge, signal.falling_edge, signal.value_change))


class TimeSkipper(Background):
    """Skips the clock of a quiescent design while every task waits on something other than a
    clock edge (module docstring).

    Parameters
    ----------
    clk : cocotb handle
        The design's clock, driven by ``clock`` (a started :class:`cocotb.clock.Clock`, 50%
        duty).
    clock : cocotb.clock.Clock
        Construct the skipper right after a rising edge of it: that sets the phase.
    advance, quiescent : cocotb handles
        The design's ``advance`` input and ``quiescent`` output.
    clock_ns : int
        The clock period in ns.
    poll_cycles : int
        How often it looks, in cycles (a cost only: skipping is exact whatever the value).
    min_skip : int
        The fewest cycles worth a skip.
    margin : int
        Whole cycles of normal clocking kept before the next timer.

    Attributes
    ----------
    skips : int
        Skips taken.
    cycles_skipped : int
        Clock cycles not clocked one by one (each skip of K + 1 cycles counts K).

    Raises
    ------
    ValueError
        A parameter out of range, naming it and its value.
    """

    def __init__(self, clk, clock, advance, quiescent, *, clock_ns, poll_cycles=256, min_skip=64,
                 margin=2):
        if not isinstance(clock, Clock):
            raise ValueError(f"clock must be a cocotb Clock, not {clock!r}")
        for name, value, low in (("clock_ns", clock_ns, 2), ("poll_cycles", poll_cycles, 1),
                                 ("min_skip", min_skip, 1), ("margin", margin, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, not {value!r}")
        if getattr(clock, "_impl", "gpi") != "gpi":
            # the Python clock's own Timer would always be the next deadline: nothing skipped
            raise ValueError("time skipping needs cocotb's GPI clock (COCOTB_TRUST_INERTIAL_WRITES=1, "
                             "as the Verilator runner sets)")
        self.clk, self.clock, self.advance, self.quiescent = clk, clock, advance, quiescent
        self.period = get_sim_steps(clock_ns, "ns")
        # made right after a rising edge: the clock's phase (a test after the first in a module
        # starts at whatever time the previous one ended)
        self.origin = get_sim_time("step") % self.period
        self.phase = get_sim_steps(clock_ns * 7 // 10, "ns")    # clock low, after the edge
        self.poll_cycles, self.min_skip, self.margin = poll_cycles, min_skip, margin
        self.skips = 0
        self.cycles_skipped = 0

    def _next_poll(self, now):
        """The first poll point (a rising edge plus ``phase``) ``poll_cycles`` periods or more
        after ``now``."""
        target = now + self.poll_cycles * self.period
        point = self._last_edge(target) + self.phase
        return point if point >= target else point + self.period

    def _last_edge(self, time):
        """The latest rising edge of the clock's grid at or before ``time``."""
        return time - (time - self.origin) % self.period

    async def _run(self):
        while True:
            timer = Timer(self._next_poll(get_sim_time("step")) - get_sim_time("step"), "step")
            await timer
            await ReadOnly()
            await self._try_skip(timer)

    def _room(self, last_edge, exclude=()):
        """The largest skip (``advance``) the timers leave after ``last_edge``, or None when
        somebody waits on a clock edge or nothing is ever due (left to the test's own timeout,
        clocked)."""
        if _edge_waiters(self.clk):
            return None
        deadline = pending_deadline(exclude=exclude)
        if deadline is None:
            return None
        cycles = (deadline - last_edge) // self.period - self.margin     # edges we may take
        return min(cycles - 1, ADVANCE_MAX)

    async def _try_skip(self, timer):
        if not self.quiescent.value:
            return
        last_edge = self._last_edge(get_sim_time("step"))
        k = self._room(last_edge, exclude=(timer,))
        if k is None or k < self.min_skip:
            return
        # Leave the read-only phase and look again: a task that ran after this one in the same
        # phase may have started waiting on an edge or primed a nearer timer.
        await Timer(1, "step")
        k = self._room(last_edge)
        if k is None or k < self.min_skip:
            return
        self.clock.stop()
        next_edge = last_edge + self.period
        try:
            self.clk.value = 0
            k = await self._largest_quiescent(k)
            if k >= self.min_skip:
                edge = last_edge + (k + 1) * self.period
                await Timer(edge - get_sim_time("step"), "step")
                self.clk.value = 1                      # the edge that stands for k + 1 cycles
                self.skips += 1
                self.cycles_skipped += k
                await Timer(self.period // 2, "step")
                self.clk.value = 0
                next_edge = edge + self.period
            self.advance.value = 0
            # the clock goes on in phase: its next rising edge where clocking cycle by cycle
            # has one
            await Timer(next_edge - get_sim_time("step"), "step")
        finally:
            self.advance.value = 0      # also when cancelled half-way: never a stale advance
            self.clock.start(start_high=True)

    async def _largest_quiescent(self, k):
        """The largest ``advance`` up to ``k`` (at least ``min_skip``) with the design quiescent,
        or 0; leaves ``advance`` set to it."""
        low, high = self.min_skip, k
        best = 0
        probe = high
        while low <= high:
            self.advance.value = probe
            await ReadOnly()
            ok = bool(self.quiescent.value)
            await Timer(1, "step")
            if ok:
                best, low = probe, probe + 1
            else:
                high = probe - 1
            probe = (low + high) // 2
        self.advance.value = best
        return best
