"""Clock and reset for every testbench: one definition of how a design is brought out of reset."""

from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

__all__ = ["start_clock_and_reset", "CLOCK_NS"]

#: 100 MHz: the simulated clock of every testbench.
CLOCK_NS = 10


async def start_clock_and_reset(dut, clock_ns, *, reset_cycles=2):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``reset_cycles`` edges; returns the running
    :class:`cocotb.clock.Clock` right after the first edge out of reset (where a
    :class:`apwake.sim.harness.timeskip.TimeSkipper` made then takes the clock's phase from)."""
    clock = Clock(dut.clk, clock_ns, unit="ns")
    clock.start()
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return clock
