"""Bus-functional models around the start-context unit: the guest's call port, the launch-record
sink and (block tests) each vCPU's INIT/SIPI lines.  Guest memory is
:class:`apwake.sim.vip.memory_bus.GuestMemoryResponder`.

All are :class:`apwake.sim.harness.handshake.Driver`: one transfer per call from any phase, and a
pause generator (:class:`LaunchSink`: ``ready`` held low, so the unit's launch waits).
"""

import cocotb
from amaranth.lib import data
from cocotb.triggers import ClockCycles, Event, First, ReadOnly, RisingEdge, Timer

from apwake.rtl.start_context.layouts import (DescriptorTable, LaunchKind, Segment, StartOp,
                                              StartState, StartStatus, StateField)
from apwake.sim.harness.background import Background
from apwake.sim.harness.codec import unpack
from apwake.sim.harness.deadline import Deadline
from apwake.sim.harness.handshake import Driver, SimTimeout, watchdog_cycles
from apwake.sim.harness.pins import port

__all__ = ["StartCallPort", "LaunchSink", "SipiEvents", "unpack_state"]

_NESTED = (Segment, DescriptorTable)


def unpack_state(value):
    """A :class:`StartState` integer as nested dicts (segments and descriptor tables as dicts),
    with :func:`apwake.sim.harness.codec.unpack` at each level."""
    fields = unpack(StartState, value)
    for name, field in data.Layout.cast(StartState):
        if isinstance(field.shape, type) and issubclass(field.shape, _NESTED):
            fields[name] = unpack(field.shape, fields[name])
    return fields


class StartCallPort(Driver):
    """The guest's calls (``call__*``): one at a time.

    Attributes
    ----------
    calls : list of dict
        Every completed call: op, address, apic_id, status, field, and ``taken_ns``/``done_ns``.
    """

    def __init__(self, dut, prefix="call__"):
        super().__init__(dut.clk, "start-context calls")
        sig = lambda name: port(dut, prefix + name)
        self._valid, self._ready, self._op = sig("valid"), sig("ready"), sig("op")
        self._address, self._apic_id = sig("address"), sig("apic_id")
        self.done, self._status, self._field = sig("done"), sig("status"), sig("field")
        for handle in (self._valid, self._op, self._address, self._apic_id):
            handle.value = 0
        self.calls = []

    async def call(self, op, address=0, apic_id=0, *, timeout_cycles=1000):
        """Make one call and wait for its ``done``: ``(StartStatus, StateField)``.  Returns right
        after the clock edge that ends the ``done`` cycle.

        ``op`` is a :class:`StartOp` or an int 0-3 (3 is not an op: the unit refuses it).
        ``timeout_cycles`` bounds the wait to be taken and the wait for ``done`` each.

        Raises
        ------
        SimTimeout
            The call was not taken, or not done, within ``timeout_cycles``.
        """
        raw_op = op.value if isinstance(op, StartOp) else int(op)
        what = f"{self.name}: {op!r} for APIC ID {apic_id:#x} at {address:#x}"
        timeout_cycles = watchdog_cycles(timeout_cycles)
        done = RisingEdge(self.done)
        taken_ns, _ = await self.hold_until(
            self._valid, self._ready, {self._op: raw_op, self._address: address, self._apic_id: apic_id},
            what=what, timeout_cycles=timeout_cycles)
        if await First(done, Timer(timeout_cycles * self.clock_ns, "ns")) is not done:
            raise SimTimeout(f"{what}: no done within {timeout_cycles} cycles of being taken")
        await ReadOnly()
        status, field = StartStatus(int(self._status.value)), StateField(int(self._field.value))
        done_ns = cocotb.utils.get_sim_time("ns")
        self.calls.append({"op": op, "address": address, "apic_id": apic_id, "status": status,
                           "field": field, "taken_ns": taken_ns, "done_ns": done_ns})
        await RisingEdge(self.clk)
        return status, field


class LaunchSink(Driver, Background):
    """Takes the unit's launch records (``launch__*``) and keeps every one.  Event-driven: sleeps
    while ``valid`` is low.

    ``ready`` is decided ahead (high unless the pause generator says stall) and held while no
    record waits; a record that finds it low waits out the stall, then is taken.  The payload of
    a waiting record must not change until it is taken (checked).

    Attributes
    ----------
    records : list of dict
        ``vcpu``, ``kind`` (:class:`LaunchKind`), ``vector``, ``via_sipi``, ``state`` (nested
        dicts, :func:`unpack_state`) and ``taken_ns``, in the order taken: each exactly once.
    stalled : int
        Cycles a record waited for ``ready``.
    """

    def __init__(self, dut, prefix="launch__"):
        super().__init__(dut.clk, "launch sink")
        sig = lambda name: port(dut, prefix + name)
        self._valid, self._ready = sig("valid"), sig("ready")
        self._payload = {name: sig(name) for name in ("vcpu", "kind", "vector", "via_sipi", "state")}
        self._ready.value = 0
        self.records = []
        self.stalled = 0
        #: called with each record as it is taken (in the cycle after, outside the read-only
        #: phase), or None: how a machine acts on launches without waiting on the list
        self.on_record = None
        self._arrived = Event()

    def set_pause_generator(self, generator=None):
        """As :meth:`Driver.set_pause_generator`; also redraws ``ready`` now (call it from a
        writable phase), so a stall starts with the next record."""
        super().set_pause_generator(generator)
        self._ready.value = int(not self._stalled())

    def _read(self):
        raw = {name: int(handle.value) for name, handle in self._payload.items()}
        return {"vcpu": raw["vcpu"], "kind": LaunchKind(raw["kind"]), "vector": raw["vector"],
                "via_sipi": raw["via_sipi"], "state": unpack_state(raw["state"])}

    async def _wait_stalls(self):
        cycles = 0
        while self._stalled():
            cycles += 1
        if cycles:
            self.stalled += cycles
            await ClockCycles(self.clk, cycles)

    async def _run(self):
        self._ready.value = int(not self._stalled())
        waiting = None          # the payload of a record that found ready low
        while True:
            await ReadOnly()
            if not self._valid.value:
                if waiting is not None:
                    raise AssertionError(f"{self.name}: a launch record was withdrawn before it was "
                                         f"taken: {waiting}")
                await RisingEdge(self._valid)
                continue
            record = self._read()
            if waiting is not None and record != waiting:
                raise AssertionError(f"{self.name}: a waiting launch record changed from {waiting} "
                                     f"to {record}")
            taken = bool(self._ready.value)
            await RisingEdge(self.clk)
            if not taken:
                waiting = record
                self.stalled += 1
                await self._wait_stalls()
                self._ready.value = 1
                continue
            waiting = None
            record["taken_ns"] = cocotb.utils.get_sim_time("ns")
            self.records.append(record)
            self._arrived.set()
            if self.on_record is not None:
                self.on_record(record)
            self._ready.value = int(not self._stalled())

    async def wait_for(self, count, *, timeout_cycles=1000):
        """Wait until ``count`` records have been taken in all.

        Raises
        ------
        SimTimeout
            Fewer after ``timeout_cycles``.
        """
        timeout_cycles = watchdog_cycles(timeout_cycles)
        deadline = Deadline(timeout_cycles * self.clock_ns)
        while len(self.records) < count:
            self._arrived.clear()
            if not await deadline.wait(self._arrived.wait()):
                raise SimTimeout(f"{self.name}: {len(self.records)} launch records after "
                                 f"{timeout_cycles} cycles, expected {count}")


class SipiEvents(Driver):
    """One vCPU's APIC lines into the unit (``apic__{i}__*``): a SIPI as a pending level held
    until the unit acknowledges it, ``init_taken`` as a one-cycle pulse."""

    def __init__(self, dut, index, prefix="apic__"):
        super().__init__(dut.clk, f"APIC lines of vCPU {index}")
        sig = lambda name: port(dut, f"{prefix}{index}__{name}")
        self.index = index
        self._init_taken, self._sipi = sig("init_taken"), sig("sipi")
        self._vector, self._ack = sig("sipi_vector"), sig("sipi_ack")
        for handle in (self._init_taken, self._sipi, self._vector):
            handle.value = 0

    async def sipi(self, vector=0x9A, *, timeout_cycles=200):
        """Raise a SIPI with ``vector`` and hold it until acknowledged (the unit's record for it
        taken); returns one edge later, when the record is in the sink's list."""
        await self.hold_until(self._sipi, self._ack, {self._vector: vector},
                              what=f"{self.name}: SIPI {vector:#x}",
                              timeout_cycles=watchdog_cycles(timeout_cycles))
        await RisingEdge(self.clk)

    async def init(self):
        """The CPU takes an INIT: ``init_taken`` for one cycle (its effect is seen after it)."""
        await self.pulse(self._init_taken)
