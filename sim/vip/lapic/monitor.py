"""Watches the fabric's trace port and records every bus cycle.

The monitor sleeps on ``trace__valid`` while the bus is idle and samples once per clock only
while messages flow.  Each record carries the time of the clock edge at which receivers act on
the message, the same convention :meth:`apwake.sim.vip.lapic.bfm.ApicPort.inta` uses, so a scoreboard
can order accepts and acknowledges exactly.

Given the ports (``senders``), the monitor also attributes every message to the write that sent
it (:class:`SendLedger`): a message no write of its sender accounts for (one ICR write taken
twice, a message the APIC made up) fails the running test at once, whatever the test checks.
"""

from dataclasses import dataclass

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge

from apwake.rtl.lapic.layouts import FabricMessage

from apwake.sim.harness.background import Background
from apwake.sim.harness.codec import unpack
from apwake.sim.harness.deadline import Deadline

__all__ = ["BusCycle", "FabricMonitor", "SendLedger"]


@dataclass(frozen=True)
class BusCycle:
    edge_ns: float       #: clock edge at which the receivers act
    source: int          #: sender port index
    msg: dict            #: FabricMessage fields
    accept: frozenset    #: port indices that accepted


class SendLedger:
    """The IPI-sending writes of one port, in order, each to be matched by one bus message.

    A write is keyed by (vector, delivery mode, shorthand), which the APIC copies from the ICR
    into the message.  A message consumes the oldest unconsumed write with its key; older writes
    left unmatched were refused by the APIC (a reserved mode, #GP, an APIC reset) and can never
    send afterwards, since the transmit slot keeps order, so they are dropped.  A message that
    finds no such write was not caused by any write: a duplicated transfer.
    """

    def __init__(self, name):
        self.name = name
        self._writes = []          # [(vector, mode, shorthand)] not yet on the bus

    @staticmethod
    def _key(vector, mode, shorthand):
        # fields come as ints or as the layout's enums (apwake.sim.harness.codec.unpack)
        return tuple(int(getattr(f, "value", f)) for f in (vector, mode, shorthand))

    def add(self, vector, mode, shorthand):
        self._writes.append(self._key(vector, mode, shorthand))

    def attribute(self, cycle):
        """Consume the write that sent ``cycle``'s message; AssertionError if none did."""
        msg = cycle.msg
        key = self._key(msg["vector"], msg["delivery_mode"], msg["shorthand"])
        try:
            k = self._writes.index(key)
        except ValueError:
            raise AssertionError(
                f"fabric monitor: message from {self.name} at {cycle.edge_ns} ns (vector "
                f"{key[0]:#x}, delivery mode {key[1]}, shorthand {key[2]}) matches no ICR write "
                f"of that port still to be sent ({len(self._writes)} pending: {self._writes[:4]}): "
                f"one write carried twice, or a message nobody wrote") from None
        del self._writes[:k + 1]


class FabricMonitor(Background):
    """Records :class:`BusCycle` entries in :attr:`cycles`; call :meth:`start` once.

    ``senders``: the :class:`apwake.sim.vip.lapic.bfm.ApicPort` of each port index, whose ``sends``
    ledgers every message is attributed against (None: record only)."""

    def __init__(self, dut, *, clock_ns, senders=None):
        self._clk = dut.clk
        self._valid = dut.trace__valid
        self._msg = dut.trace__msg
        self._source = dut.trace__source
        self._accept = dut.trace__accept
        self._clock_ns = clock_ns
        self._recorded = Event()
        self._ledgers = None if senders is None else [port.sends for port in senders]
        self.cycles = []

    async def wait_for(self, count, *, since=0, where=None, timeout_cycles=10_000, what=None):
        """Wait until ``count`` bus cycles have been recorded from index ``since`` of
        :attr:`cycles` on (all of them by default), counting only those for which ``where`` (a
        predicate on a :class:`BusCycle`) holds when it is given.  AssertionError after
        ``timeout_cycles`` clock cycles without them."""
        counted = [since, 0]        # how far the cycles were looked at, and how many matched

        def seen():
            # each recorded cycle is looked at once, however often the wait wakes
            new = self.cycles[counted[0]:]
            counted[0] += len(new)
            counted[1] += len(new) if where is None else sum(1 for c in new if where(c))
            return counted[1]
        if seen() >= count:
            return
        deadline = Deadline(timeout_cycles * self._clock_ns)
        while seen() < count:
            self._recorded.clear()
            if not await deadline.wait(self._recorded.wait()):
                raise AssertionError(
                    f"fabric monitor: {seen()} of {count} messages on the bus after "
                    f"{timeout_cycles} cycles" + (f" ({what})" if what else ""))
        # Recorded in the read-only phase before the receivers' clock edge; values read right
        # after an edge are the pre-edge ones, so step two edges: the caller then sees the
        # message's effects and may drive signals.
        await RisingEdge(self._clk)
        await RisingEdge(self._clk)

    def since(self, start):
        """The bus cycles recorded from index ``start`` on."""
        return self.cycles[start:]

    async def _run(self):
        while True:
            await ReadOnly()
            if not self._valid.value:
                await RisingEdge(self._valid)
                continue
            accept = int(self._accept.value)
            cycle = BusCycle(
                edge_ns=cocotb.utils.get_sim_time("ns") + self._clock_ns,
                source=int(self._source.value),
                msg=unpack(FabricMessage, int(self._msg.value)),
                accept=frozenset(i for i in range(len(self._accept)) if accept >> i & 1),
            )
            self.cycles.append(cycle)
            if self._ledgers is not None:
                self._ledgers[cycle.source].attribute(cycle)   # raising fails the test
            self._recorded.set()
            await RisingEdge(self._clk)
