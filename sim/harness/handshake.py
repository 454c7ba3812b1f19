"""How every bus-functional model drives the design: one clock synchronisation, the
request/response handshake, pulses, pause generators, and the seeded jitter and stall modes.

**Phase.**  A value written in the time step of a rising clock edge but before the edge (a
``Timer`` ending exactly on the edge, cocotb's ordering inside a step is not defined) is sampled
by that edge *and* by the next one: one register write becomes two.  A value cannot be written
at all in ``ReadOnly``.  So no driver writes where its caller happens to be: :func:`sync_to_clock`
(the one place that knows the clock) waits for the next falling edge, from where the next rising
edge is the first to sample what is written, whatever phase the caller was in.  A caller that
was right after a rising edge (the common case: one access after another) may write at once, as
the next rising edge is then already the first to sample it (the last simulator trigger that
fired tells); :meth:`Driver.bus_access` on Verilator waits for the falling edge even then and
writes without delay (:meth:`Driver._access_at_falling_edges`); the edge that takes the request
is the same every way.  The cost is at most one edge trigger per driver call before the write.

**Pause generators** (as cocotbext-axi): an iterable of booleans, one per clock cycle, True =
stall.  A requester stalls before it raises a request; a responder holds ``req_ready`` low and
delays its response (:class:`apwake.sim.vip.memory_bus.GuestMemoryResponder`).
``set_pause_generator(gen)`` on any :class:`Driver` installs one; ``None`` removes it.

**Jitter** (``APWAKE_JITTER=SEED``, ``pytest --jitter SEED``): every driver call first waits a
random number of idle cycles and a random part of a cycle, so each access starts from a random
phase.  **Stalls** (``APWAKE_STALL=SEED``, ``pytest --stall SEED``): every driver gets a random
pause generator.  Both are deterministic per seed and per driver (each driver draws from its own
generator seeded with the seed and its name), so a failing test is reproduced by its seed.
"""

import collections
import functools
import logging
import os
import random

import cocotb
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge, Timer, current_gpi_trigger

from .clocking import CLOCK_NS
from .signal_io import pin

__all__ = ["Driver", "PortLock", "SimTimeout", "sync_to_clock", "sample_at_edge", "random_pauses", "watchdog_cycles",
           "JITTER_ENV", "STALL_ENV", "STALL_MAX_BURST",
           "seeds", "seed_note", "MAX_JITTER_CYCLES", "MAX_PAUSE_CYCLES"]

#: environment variables carrying the seeds into the simulator
JITTER_ENV = "APWAKE_JITTER"
STALL_ENV = "APWAKE_STALL"
#: a jittered call starts up to this many whole cycles late (plus a part of a cycle)
MAX_JITTER_CYCLES = 3
#: the watchdog on a pause generator: more stalled cycles in a row is a generator that never
#: lets anything through
MAX_PAUSE_CYCLES = 10_000

_log = logging.getLogger("cocotb.apwake")     # under cocotb's logger: shown in the sim log
_announced = set()


class SimTimeout(AssertionError):
    """A wait ran past its watchdog."""


def _seed(variable):
    text = os.environ.get(variable, "")
    if text in ("", "none", "off"):
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{variable}={text!r}: the seed must be an integer") from None


def seeds():
    """``{variable: seed}`` of the jitter and stall seeds set in the environment."""
    return {v: os.environ[v] for v in (JITTER_ENV, STALL_ENV) if _seed(v) is not None}


def seed_note(chosen=None):
    """What a failure message says to be reproduced: ``" [seeded run: APWAKE_JITTER=1 (pytest
    --jitter 1)]"``; empty when no seed is set.  ``chosen``: ``{variable: seed}``, default the
    environment's."""
    chosen = seeds() if chosen is None else chosen
    if not chosen:
        return ""
    variables = " ".join(f"{k}={v}" for k, v in chosen.items())
    options = " ".join(f"--{'jitter' if k == JITTER_ENV else 'stall'} {v}" for k, v in chosen.items())
    return f" [seeded run: {variables} (pytest {options})]"


def _rng(variable, name):
    """A generator for driver ``name`` when ``variable`` holds a seed, else None."""
    seed = _seed(variable)
    if seed is None:
        return None
    if variable not in _announced:      # once per simulator: the log says how to reproduce
        _announced.add(variable)
        _log.info("%s=%d: drivers run with seeded %s", variable, seed,
                  "random phases" if variable == JITTER_ENV else "random stalls")
    # a string seed is hashed deterministically (unlike hash(), which varies per process)
    return random.Random(f"{seed}:{name}")


#: the longest stall burst of the seeded stall mode (:func:`random_pauses`' default)
STALL_MAX_BURST = 4


def watchdog_cycles(cycles):
    """A watchdog of ``cycles`` (None: none) for a wait on the design, stretched by the longest
    stall burst when the seeded stall mode is on (``APWAKE_STALL``): every cycle of the design's
    work may then wait up to :data:`STALL_MAX_BURST` stalled cycles at a responder, so the same
    budget means the same in both modes.  One place, used by the drivers' waits."""
    if cycles is None or _seed(STALL_ENV) is None:
        return cycles
    return cycles * (1 + STALL_MAX_BURST)


def random_pauses(rng, *, stall=0.3, max_burst=STALL_MAX_BURST):
    """An endless pause generator: with probability ``stall`` a cycle starts a stall of 1 to
    ``max_burst`` cycles.

    Raises
    ------
    ValueError
        ``stall`` is not in [0, 1) or ``max_burst`` is below 1 (checked at once, not at the first
        cycle).
    """
    if not 0 <= stall < 1:
        raise ValueError(f"stall must be a probability in [0, 1), not {stall!r}")
    if not isinstance(max_burst, int) or max_burst < 1:
        raise ValueError(f"max_burst must be a whole number of cycles >= 1, not {max_burst!r}")

    def pauses():
        while True:
            if rng.random() < stall:
                yield from [True] * rng.randint(1, max_burst)
            yield False
    return pauses()


async def sync_to_clock(clk, *, jitter=None, stalled=None, clock_ns=CLOCK_NS, falling_edge=False):
    """Return in a writable phase from which the next rising edge of ``clk`` is the first to
    sample what the caller writes, from any phase (after either edge, mid-cycle, ``ReadOnly``,
    ``ReadWrite``): right after a rising edge as the caller was, else at the next falling edge;
    with ``falling_edge``, always at a falling edge (where a write without delay is taken by
    that edge's own evaluation: :meth:`Driver._access_at_falling_edges`).

    ``jitter`` (a :class:`random.Random`) first waits 0 to :data:`MAX_JITTER_CYCLES` cycles plus
    a random whole number of nanoseconds, which lands on a rising edge, a falling edge or
    mid-cycle.  ``stalled`` (a callable: this cycle's pause decision) waits one cycle per
    leading True.
    """
    delay = 0
    if jitter is not None:
        delay += jitter.randrange(MAX_JITTER_CYCLES + 1) * clock_ns + jitter.randrange(int(clock_ns))
    if stalled is not None:
        while stalled():
            delay += clock_ns
    if delay:
        await Timer(delay, "ns")       # one timer, however long: no per-cycle Python work
    elif not falling_edge and _right_after_rising_edge(clk):
        # The next falling edge would change nothing: from the callback phase of a rising
        # edge the next rising edge is already the first to sample a write.  The common case
        # (one access right after another) so saves a wake-up per access.
        return
    await FallingEdge(clk)


def _right_after_rising_edge(clk):
    """Whether the last simulator trigger that fired (so the phase of the running task) is a
    rising edge of ``clk``: the edge's value-change callback, where writes are sampled by the
    next rising edge (cocotb_tests/lapic/tb_phase.py).  A task woken in the same step by
    something that is not a simulator trigger (an Event set by a task woken by that edge) is in
    the same phase; any other simulator trigger (``ReadOnly``, a ``Timer`` ending on the edge,
    a value change) answers no.

    Only on Verilator.  There cocotb's main loop (cocotb/share/lib/verilator/verilator.cpp)
    calls the clock's value-change callbacks when the clock has changed but before the design
    is evaluated with it, and applies the writes made there after that evaluation: so the
    values read in that callback are the ones the edge samples (:func:`sample_at_edge`), and
    the values written are first sampled by the next edge.  On Icarus a rising-edge callback
    may run while the edge still propagates, and its inertial writes are not inertial (cocotb
    pull request 3847), so a write made there could be taken by that very edge; drivers there
    always wait for the falling edge."""
    if not _on_verilator():
        return False
    last = current_gpi_trigger()
    return type(last) is RisingEdge and last.signal is clk


def _on_verilator():
    # asked twice in each register access: the name's test is cached (cocotb sets SIM_NAME once)
    return _is_verilator(cocotb.SIM_NAME)


@functools.cache
def _is_verilator(sim_name):
    return (sim_name or "").lower().startswith("verilator")


class PortLock:
    """One access at a time on a port, first come first served, as ``async with``: cocotb's
    :class:`~cocotb.triggers.Lock` without its cost when the lock is free (it goes through the
    scheduler even then: one task resumption per access, about 3 us of an APIC register access's
    26 us on this machine kind; docs/PERFORMANCE.md).  A waiter cancelled while it waits (a CPU
    reset mid-access) leaves the queue, or passes the lock on if it was already handed to it."""

    def __init__(self):
        self._held = False
        self._waiters = collections.deque()     # one Event per waiter, in arrival order

    def locked(self):
        return self._held

    @property
    def waiting(self):
        """How many tasks wait for the lock."""
        return len(self._waiters)

    async def __aenter__(self):
        if not self._held:
            self._held = True
            return self
        turn = Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._release()
            else:
                self._waiters.remove(turn)
            raise
        return self

    async def __aexit__(self, *exc_info):
        self._release()

    def _release(self):
        if self._waiters:
            self._waiters.popleft().set()       # handed over: it stays held
        else:
            self._held = False


async def sample_at_edge(clk, *reads):
    """``[read() for read in reads]`` as the next rising edge of ``clk`` samples them (the
    values the last cycle settled to); returns right after that edge.  On Verilator that is
    read in the edge's own callback (:func:`_right_after_rising_edge`): one wake-up a cycle;
    elsewhere in ``ReadOnly`` before it, then the edge.  cocotb_tests/harness/tb_edge_sampling.py
    checks on Verilator that the two forms read the same."""
    if _on_verilator():
        await RisingEdge(clk)
        return [read() for read in reads]
    await ReadOnly()
    values = [read() for read in reads]
    await RisingEdge(clk)
    return values


class Driver:
    """Base of the bus-functional models that drive design inputs.

    Every method that writes a design input first calls :meth:`sync` (so it is exactly one
    transfer whatever phase its caller is in), then uses :meth:`bus_access` or :meth:`pulse`.

    Parameters
    ----------
    clk : cocotb handle
        The clock that samples the driven inputs.
    name : str
        For messages, and to seed this driver's jitter and stall generators.
    clock_ns : float
        The clock period.
    """

    def __init__(self, clk, name, *, clock_ns=CLOCK_NS):
        self.clk = clk
        self.name = name
        self.clock_ns = clock_ns
        self._jitter = _rng(JITTER_ENV, name)
        stalls = _rng(STALL_ENV, name)
        self._pause = None if stalls is None else random_pauses(stalls)
        self._stall_run = 0
        #: the last request was withdrawn before it was taken (see :meth:`hold_until`)
        self._withdrawn = False

    def set_pause_generator(self, generator=None):
        """Stall on each cycle ``generator`` yields True for (None: never stall)."""
        self._pause = None if generator is None else iter(generator)

    def set_exact_timing(self):
        """No jitter and no stalls for this driver (whatever ``--jitter``/``--stall`` say): for a
        test whose point is several drivers acting in one cycle."""
        self._jitter = None
        self.set_pause_generator(None)

    def _stalled(self):
        """The pause decision for this cycle: requesters draw before each request, responders once
        per cycle while busy; SimTimeout after :data:`MAX_PAUSE_CYCLES` stalls in a row."""
        stalled = self._pause is not None and bool(next(self._pause, False))
        self._stall_run = self._stall_run + 1 if stalled else 0
        if self._stall_run > MAX_PAUSE_CYCLES:
            raise SimTimeout(f"{self.name}: its pause generator stalled for more than "
                             f"{MAX_PAUSE_CYCLES} cycles in a row")
        return stalled

    async def sync(self, *, falling_edge=False):
        """See :func:`sync_to_clock`."""
        await sync_to_clock(self.clk, jitter=self._jitter, stalled=self._stalled,
                            clock_ns=self.clock_ns, falling_edge=falling_edge)

    async def pulse(self, handle, data=None):
        """Drive ``data`` (``{handle: value}``) and ``handle`` high for exactly one clock edge."""
        await self.sync()
        for target, value in (data or {}).items():
            target.value = value
        handle.value = 1
        try:
            await RisingEdge(self.clk)
        finally:
            handle.value = 0          # also when cancelled: exactly one edge sees it

    async def hold_until(self, valid, ready, data=None, *, what, timeout_cycles=1000):
        """Drive ``data`` (``{handle: value}``) and hold ``valid`` high until a clock edge
        samples ``ready`` high; returns ``(edge_ns, cycles)``: the edge that took it, and how
        many edges that was.  Right after that edge ``valid`` is low again, also when the
        caller is cancelled (a CPU reset mid-access).  After a request withdrawn untaken, a
        clock edge sees ``valid`` low before the next request is offered: a new request in its
        place would look like the old one changing its fields, which a requester must not do
        (RegisterBusSignature: a pipelined APIC decodes a request a cycle before it takes it).

        Raises
        ------
        SimTimeout
            ``ready`` stayed low for ``timeout_cycles`` edges (``valid`` is dropped first).
        """
        if self._withdrawn:
            await RisingEdge(self.clk)
            self._withdrawn = False     # (after the edge: a caller cancelled while waiting for it leaves it set)
        await self.sync()
        for handle, value in (data or {}).items():
            pin(handle).set(value)
        valid = pin(valid)
        ready = pin(ready).get
        valid.set(1)
        taken = False
        try:
            for cycle in range(timeout_cycles):
                taken, = await sample_at_edge(self.clk, ready)
                if taken:
                    return cocotb.utils.get_sim_time("ns"), cycle + 1
            raise SimTimeout(f"{what} not taken within {timeout_cycles} cycles "
                             f"(its ready or acknowledge stayed low)")
        finally:
            valid.set(0)
            self._withdrawn = not taken

    async def bus_access(self, req_valid, req_ready, resp_valid, request, response, *, what,
                         timeout_cycles=1000):
        """Drive ``request`` (``{handle: value}``), complete the handshake and return
        ``(edge_ns, cycles, {name: int})`` read from ``response`` (``{name: handle}``) one cycle
        after the request was taken (``resp_valid`` high in exactly that cycle); ``edge_ns`` is
        the clock edge that took it, ``cycles`` how many edges that was.  Returns right after
        the clock edge that ends the response cycle.  No edge after the one that took the
        request sees ``req_valid`` high; when cancelled, none after the cancellation's time
        step does (as :meth:`hold_until`).

        On Verilator the request is written at a falling edge and the take is seen at the
        falling edge after the edge that took it, from ``resp_valid``
        (:meth:`_access_at_falling_edges`); elsewhere from ``req_ready`` at the edge
        (:meth:`hold_until`).  The edges that sample the request, the drop of ``req_valid``
        and the response are the same; only where the port answers exactly one cycle after the
        take and its response outputs are registered (the APIC's register port, the mailbox's
        memory bus).

        Raises
        ------
        SimTimeout
            No edge took the request within ``timeout_cycles`` edges.
        AssertionError
            (Not on Verilator) no ``resp_valid`` in the cycle after the take.
        """
        if _on_verilator():
            return await self._access_at_falling_edges(req_valid, resp_valid, request, response, what=what,
                                                       timeout_cycles=timeout_cycles)
        edge_ns, cycles = await self.hold_until(req_valid, req_ready, request, what=what,
                                                timeout_cycles=timeout_cycles)
        # the response cycle's values, as the edge that ends it samples them
        answered, *values = await sample_at_edge(self.clk, pin(resp_valid).get,
                                                 *(pin(handle).get for handle in response.values()))
        if not answered:
            raise AssertionError(f"no resp_valid the cycle after {what}")
        return edge_ns, cycles, dict(zip(response, values))

    async def _access_at_falling_edges(self, req_valid, resp_valid, request, response, *, what,
                                       timeout_cycles):
        """:meth:`bus_access` on Verilator, with no evaluation of the design of its own.

        Verilator evaluates the design again in every time step in which a testbench deposits
        a value (an inertial write, :meth:`.signal_io.Pin.set`), as a deposit made in a clock
        edge's callback is applied after that step's evaluation (cocotb's main loop,
        ``cocotb/share/lib/verilator/verilator.cpp``, calls ``doInertialPuts`` after
        ``eval_step``): 7 us at 64 CPUs, 1.8 us at 8 on this machine kind, and
        :meth:`hold_until` makes two such writes an access (the request, then ``valid`` low).
        A write without delay in a falling edge's callback (:meth:`.signal_io.Pin.set_now`) is
        taken by that edge's own evaluation instead, and nothing samples on a falling edge.  So
        the request is written at a falling edge (the next one, from a rising edge's callback:
        the first rising edge to sample it is the same), and the take is seen at the falling
        edge after the edge that took it: ``resp_valid`` is high there exactly when that edge
        took the request, the response is already what the edge ending its cycle samples, and
        ``valid`` falls there, before the next rising edge.  Three wake-ups an access instead
        of two, and no evaluation instead of two: 3.6% off the 64-CPU bring-up's wall time, 2.2%
        at 255 CPUs, the same at 8 (docs/PERFORMANCE.md, 2026-12-03).  What this path does not
        check, as :meth:`hold_until` does, is that ``ready`` and ``resp_valid`` agree: a take
        without a response would look like no take (a duplicate, then the timeout), and a port
        that answered later than the cycle after the take would take every request twice.  The
        two ports' rule is proved instead (docs/FORMAL.md: ``fab_response_<i>`` for the APICs'
        register ports, ``mb_bus_response`` for the mailbox's bus, over the header words its
        harness writes and reads).  The
        response is read at that falling edge, half a cycle before the edge that ends its cycle:
        the same values only because the ports' response outputs are registers (a response
        output combinational from inputs that another driver writes in the second half of the
        cycle would be read early)."""
        if self._withdrawn:
            await RisingEdge(self.clk)
            self._withdrawn = False     # (after the edge: a caller cancelled while waiting for it leaves it set)
        await self.sync(falling_edge=True)
        for handle, value in request.items():
            pin(handle).set_now(value)
        valid = pin(req_valid)
        valid.set_now(1)
        answered = pin(resp_valid).get
        reads = [pin(handle).get for handle in response.values()]
        taken = False
        try:
            for cycle in range(timeout_cycles):
                # the falling edge after the (cycle + 1)-th edge that samples the request: the
                # check comes before the next wait, so exactly timeout_cycles edges see it (a
                # wait after the last check would let one more edge take it, then time out)
                await FallingEdge(self.clk)
                if answered():
                    valid.set_now(0)
                    taken = True
                    values = [read() for read in reads]
                    edge_ns = cocotb.utils.get_sim_time("ns") - self.clock_ns / 2
                    break
            else:
                raise SimTimeout(f"{what} not taken within {timeout_cycles} cycles "
                                 f"(its ready or acknowledge stayed low)")
        finally:
            if not taken:
                # a deposit, not set_now: a cancellation may come in any phase (in a rising
                # edge's callback a write without delay would be taken by that very edge)
                valid.set(0)
            self._withdrawn = not taken
        await RisingEdge(self.clk)      # the edge that ends the response cycle
        return edge_ns, cycle + 1, dict(zip(response, values))
