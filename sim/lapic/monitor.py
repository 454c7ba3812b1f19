"""Watches the fabric's trace port and records every bus cycle.

The monitor sleeps on ``trace__valid`` while the bus is idle and samples once per clock only
while messages flow.  Each record carries the time of the clock edge at which receivers act on
the message, the same convention :meth:`sim.lapic.bfm.ApicPort.inta` uses, so a scoreboard
can order accepts and acknowledges exactly.
"""

from dataclasses import dataclass

import cocotb
from cocotb.triggers import Event, First, ReadOnly, RisingEdge, Timer

from rtl.lapic.layouts import FabricMessage

from ..codec import unpack

__all__ = ["BusCycle", "FabricMonitor"]


@dataclass(frozen=True)
class BusCycle:
    edge_ns: float       #: clock edge at which the receivers act
    source: int          #: sender port index
    msg: dict            #: FabricMessage fields
    accept: frozenset    #: port indices that accepted


class FabricMonitor:
    """Records :class:`BusCycle` entries in :attr:`cycles`; call :meth:`start` once."""

    def __init__(self, dut, *, clock_ns):
        self._clk = dut.clk
        self._valid = dut.trace__valid
        self._msg = dut.trace__msg
        self._source = dut.trace__source
        self._accept = dut.trace__accept
        self._clock_ns = clock_ns
        self._task = None
        self._recorded = Event()
        self.cycles = []

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def wait_for(self, count, *, timeout_cycles=10_000, what=None):
        """Wait until ``count`` bus cycles have been recorded in total."""
        if len(self.cycles) >= count:
            return
        deadline = Timer(timeout_cycles * self._clock_ns, "ns")
        while len(self.cycles) < count:
            self._recorded.clear()
            if await First(self._recorded.wait(), deadline) is deadline:
                raise AssertionError(
                    f"fabric monitor: {len(self.cycles)} of {count} messages on the bus after "
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
            self.cycles.append(BusCycle(
                edge_ns=cocotb.utils.get_sim_time("ns") + self._clock_ns,
                source=int(self._source.value),
                msg=unpack(FabricMessage, int(self._msg.value)),
                accept=frozenset(i for i in range(len(self._accept)) if accept >> i & 1),
            ))
            self._recorded.set()
            await RisingEdge(self._clk)
