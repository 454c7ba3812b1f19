"""Fixtures shared by the Python-level tests."""

import pytest
from amaranth.sim import Simulator


def _simulate(dut, bench):
    """Run ``bench`` (an ``async def bench(ctx)`` testbench) on ``dut`` in Amaranth's simulator,
    with a clock on the sync domain."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.fixture
def simulate():
    """:func:`_simulate`: one component's unit test in Amaranth's simulator (no Verilator)."""
    return _simulate
