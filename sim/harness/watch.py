"""Watched outputs: the edges and changes a testbench waits on, from one simulator callback.

A cocotb edge trigger is a VPI value-change callback, and Verilator's VPI tests every registered
value-change callback after every evaluation (``VerilatedVpiImp::callValueCbs`` compares each
variable with its previous value) and removes one by a linear search of them all
(``cbReasonRemove``).  A 255-CPU bring-up keeps about 1,300 of them registered, five per CPU
model (INIT, SIPI, NMI, SMI, INTR), and a ``perf`` profile put 15% of its time in that loop
(docs/PERFORMANCE.md, 2026-12-01 night); at 1024 CPUs there are four times as many.

So a design names the outputs its models wait on (:meth:`Design.watched_outputs
<apwake.sim.harness.build.Design.watched_outputs>`), the conversion adds one output,
:data:`WATCH_PORT`, holding them all (concatenated in that order, the first at bit 0; the names
and widths are written to :data:`WATCH_JSON` beside ``ports.json``), and
:class:`WatchedOutputs` waits on that vector with one callback and hands each rising edge (of a
1-bit output) or change (of any) to whoever waits on it, through a cocotb
:class:`~cocotb.triggers.Event` that it sets in the same time step and phase as the change (on
Verilator, which calls every value-change callback of an evaluation in one pass; the
benchmark's Icarus runs wait on each signal).  The vector is combinational (the outputs,
concatenated), so it changes exactly when one of them does.

Outside the harness (a top without :data:`WATCH_PORT`), or with :data:`WATCH_ENV` set to ``0``
(to compare, on the same binary), :meth:`WatchedOutputs.of` gives None and drivers wait with
:class:`~cocotb.triggers.RisingEdge` or :class:`~cocotb.triggers.ValueChange` of each signal.
"""

import json
import os
from pathlib import Path

from amaranth import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow

from apwake.rtl.lib.instance import port_name

from .pins import TOP_ENV

__all__ = ["WATCH_PORT", "WATCH_JSON", "WATCH_ENV", "check_watched", "watched_top",
           "WatchedOutputs", "rising_edge", "value_change", "notify_rising_edges"]

#: the output that holds every watched output, and the file naming its bits
WATCH_PORT = "watch"
WATCH_JSON = "watch.json"

#: ``0`` in the simulator's environment: wait with a callback per signal even where the top has
#: :data:`WATCH_PORT` (``tests/test_watch.py`` compares the two)
WATCH_ENV = "APWAKE_WATCH"


def check_watched(design_name, top, watched):
    """The values of ``top``'s outputs named ``watched`` (port names, ``cpu__0__init``), in that
    order, as plain values (an enum or a layout's view as its bits).

    Raises
    ------
    ValueError
        A name that is not an output of ``top``, a repeated name, or a port already named
        :data:`WATCH_PORT`; the message names the design and the port.
    """
    outputs, names = {}, set()
    for path, member, value in top.signature.flatten(top):
        name = port_name(path)
        names.add(name)
        if member.flow is Flow.Out:
            outputs[name] = value
    if WATCH_PORT in names:
        raise ValueError(f"{design_name}: its top has a port named {WATCH_PORT!r}, the name the "
                         f"harness gives the watched outputs")
    values, seen = [], set()
    for name in watched:
        if name in seen:
            raise ValueError(f"{design_name}: watched output {name!r} is named twice")
        seen.add(name)
        if name not in outputs:
            raise ValueError(f"{design_name}: watched output {name!r} is not an output of its top"
                             + (" (it is an input)" if name in names else ""))
        values.append(Value.cast(outputs[name]))
    return values


def watched_top(elaboratable, values, *, component=None):
    """``(elaboratable, watch)``: ``elaboratable`` (a top, or the harness's pinned wrapper of one)
    with one more output, ``watch``, the concatenation of ``values`` (outputs inside it).  Part
    of the conversion: a change here bumps :data:`~.build.CONVERT_RECIPE`.

    With ``component`` (the top itself), the result has the top's signature and ``watch`` as
    one more ``Out`` member, so that Amaranth names and directs every port from the signature,
    as it converts a component; without, the caller names the ports (``convert(ports=...)``).

    The extra assignment joins ``elaboratable``'s own module, so the design keeps its hierarchy
    (waveform and signal paths do not move); an ``elaborate`` that returns something other than
    a :class:`~amaranth.hdl.Module` is instead held as submodule ``top``."""
    watch = Signal(sum(len(v) for v in values), name=WATCH_PORT)

    class _Watched(Elaboratable):
        def elaborate(self, platform):
            m = elaboratable.elaborate(platform)
            elaboratable._MustUse__silence = True      # elaborated here, not by Fragment.get
            if not isinstance(m, Module):
                inner, m = m, Module()
                m.submodules.top = inner
            m.d.comb += watch.eq(Cat(values))
            return m

    watched = _Watched()
    if component is not None:
        watched.signature = wiring.Signature({**component.signature.members,
                                              WATCH_PORT: wiring.Out(len(watch))})
        for name in component.signature.members:
            setattr(watched, name, getattr(component, name))
        setattr(watched, WATCH_PORT, watch)
    return watched, watch


_instances = {}         # dut -> its WatchedOutputs (one callback per simulation, not per user)


class WatchedOutputs:
    """Rising edges and changes of a running top's watched outputs (module docstring).

    Use :meth:`of` to get the one instance of a ``dut``; :meth:`rising_edge` then stands for
    ``RisingEdge(handle)`` and :meth:`value_change` for ``ValueChange(handle)``, ``handle``
    being the output's own cocotb handle.  Each returns a trigger for one edge or change: await
    it once (awaited again after it fired, it returns at once) and ask again for the next.

    Parameters
    ----------
    handle : cocotb handle of :data:`WATCH_PORT`
    fields : list of (str, int)
        Each watched output's name and width, the first at bit 0.

    Raises
    ------
    ValueError
        ``handle`` is not as wide as ``fields`` together (a ``watch.json`` from another build).
    """

    def __init__(self, handle, fields):
        self._handle = handle
        self._fields = {}       # name -> (index, offset, width)
        self._owner = []        # bit -> index of its output
        for index, (name, width) in enumerate(fields):
            self._fields[name] = (index, len(self._owner), width)
            self._owner += [index] * width
        if handle is not None and len(handle) != len(self._owner):
            raise ValueError(f"{WATCH_PORT} is {len(handle)} bits wide but its {WATCH_JSON} names "
                             f"{len(self._owner)} bits: the design and its Verilog folder differ")
        self._rises = {}        # index -> Event set at its output's next rising edge
        self._changes = {}      # index -> Event set at its output's next change
        self._notified = {}     # index -> Events set at every rising edge (:meth:`notify`)
        self._task = None
        self._last = 0          # the vector as the waiters have been told about it

    @classmethod
    def of(cls, dut):
        """The watched outputs of ``dut`` (the running design, :data:`~.pins.TOP_ENV`), the same
        object at every call; None when its top has none or :data:`WATCH_ENV` is ``0``.  Runs
        the harness does not start (the benchmark's Icarus comparison) have no
        :data:`~.pins.TOP_ENV` and wait on each signal."""
        folder = os.environ.get(TOP_ENV)
        if not folder or os.environ.get(WATCH_ENV) == "0" or not (Path(folder) / WATCH_JSON).exists():
            return None
        if dut not in _instances:
            fields = json.loads((Path(folder) / WATCH_JSON).read_text())
            _instances[dut] = cls(getattr(dut, WATCH_PORT), fields)
        return _instances[dut]

    def __contains__(self, name):
        return name in self._fields

    def __len__(self):
        """How many outputs are watched."""
        return len(self._fields)

    def rising_edge(self, name, handle):
        """A trigger for the next rising edge of the 1-bit output ``name`` (``handle``: its own
        cocotb handle), as :class:`~cocotb.triggers.RisingEdge` of it: fired in the time step
        and phase of the edge, never for an edge before this call.

        Raises
        ------
        KeyError
            ``name`` is not a watched output.
        ValueError
            ``name`` is wider than 1 bit.
        """
        index, offset = self._one_bit(name)
        return self._wait(self._rises, index, offset, 1, handle)

    def value_change(self, name, handle):
        """A trigger for the next change of output ``name`` (``handle``: its own cocotb
        handle), as :class:`~cocotb.triggers.ValueChange` of it.

        Raises
        ------
        KeyError
            ``name`` is not a watched output.
        """
        index, offset, width = self._fields[name]
        return self._wait(self._changes, index, offset, width, handle)

    def notify(self, name, handle, event):
        """Set ``event`` (a cocotb :class:`~cocotb.triggers.Event`) at every rising edge of the
        1-bit output ``name`` from now until the cocotb test ends, in the time step and phase of
        the edge: for a model that waits on many outputs with one ``event.wait()`` and then
        looks at their levels, instead of one trigger each under
        :class:`~cocotb.triggers.First` (which runs a task per trigger).

        Raises
        ------
        KeyError
            ``name`` is not a watched output.
        ValueError
            ``name`` is wider than 1 bit.
        """
        index, offset = self._one_bit(name)
        self._catch_up(offset, 1, handle)
        self._notified.setdefault(index, []).append(event)

    def _one_bit(self, name):
        """``(index, offset)`` of the 1-bit output ``name``: the outputs that have rising edges
        (KeyError for a name not watched, ValueError for a wider output)."""
        index, offset, width = self._fields[name]
        if width != 1:
            raise ValueError(f"watched output {name!r} is {width} bits wide: wait for its "
                             f"value_change, a rising edge is of 1-bit outputs")
        return index, offset

    def _catch_up(self, offset, width, handle):
        """Start the dispatching task in a new cocotb test, or hand a change that came before
        this call to those who waited before it."""
        if self._task is None or self._task.done():
            self._start()
        elif _value(handle) != self._last >> offset & ((1 << width) - 1):
            # The output changed in an evaluation whose value-change callbacks have not all run
            # (this task was woken by an earlier one): the change came before this wait, as
            # Verilator's per-signal callback would know (it records the value when registered).
            # Hand it to the waiters from before, then wait for the next.
            self._deliver(_value(self._handle))

    def _wait(self, waiting, index, offset, width, handle):
        from cocotb.triggers import Event
        self._catch_up(offset, width, handle)
        event = waiting.get(index)
        if event is None:
            event = waiting[index] = Event()
        return event.wait()

    def _start(self):
        import cocotb
        # A task from an earlier cocotb test of the same simulator run has been cancelled with
        # that test; its waiters are gone too.
        self._rises.clear()
        self._changes.clear()
        self._notified.clear()
        self._last = _value(self._handle)
        self._task = cocotb.start_soon(self._dispatch())

    async def _dispatch(self):
        from cocotb.triggers import ValueChange
        while True:
            await ValueChange(self._handle)
            self._deliver(_value(self._handle))

    def _deliver(self, now):
        """Set the Event of every output that changed (rose) since the waiters were last told."""
        owner, rises, changes, notified = self._owner, self._rises, self._changes, self._notified
        changed, self._last = now ^ self._last, now
        rose = changed & now
        while changed:
            low = changed & -changed
            index = owner[low.bit_length() - 1]
            for waiting in (changes, rises) if rose & low else (changes,):
                event = waiting.pop(index, None)
                if event is not None:
                    event.set()
            if rose & low:
                for event in notified.get(index, ()):
                    event.set()
            changed ^= low


def rising_edge(watched, name, handle):
    """A trigger for the next rising edge of output ``name`` (its cocotb ``handle``): from
    ``watched`` (a :class:`WatchedOutputs` or None) when it holds ``name``, else
    :class:`~cocotb.triggers.RisingEdge` of ``handle``.  What the drivers call; await it once."""
    if watched is not None and name in watched:
        return watched.rising_edge(name, handle)
    from cocotb.triggers import RisingEdge
    return RisingEdge(handle)


def notify_rising_edges(watched, outputs, event):
    """Set ``event`` at every rising edge of any of ``outputs`` (``[(name, handle)]``) until the
    cocotb test ends (:meth:`WatchedOutputs.notify`).  An output ``watched`` (a
    :class:`WatchedOutputs` or None) does not hold gets a task that waits on its
    :class:`~cocotb.triggers.RisingEdge` and sets ``event``: the same edges, one simulator
    callback per output."""
    import cocotb
    from cocotb.triggers import RisingEdge

    async def forward(handle):
        while True:
            await RisingEdge(handle)
            event.set()

    for name, handle in outputs:
        if watched is not None and name in watched:
            watched.notify(name, handle, event)
        else:
            cocotb.start_soon(forward(handle))


def value_change(watched, name, handle):
    """The next change of output ``name``, as :func:`rising_edge` finds it."""
    if watched is not None and name in watched:
        return watched.value_change(name, handle)
    from cocotb.triggers import ValueChange
    return ValueChange(handle)


def _value(handle):
    """The vector's bits as an integer, from the value's text (``LogicArray.is_resolvable``
    visits every bit as an object).  Only Verilator runs use watched outputs (:meth:`WatchedOutputs.of`),
    and Verilator has no unknown bits."""
    return int(str(handle.value), 2)
