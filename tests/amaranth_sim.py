"""Running one component's unit test in Amaranth's simulator (no Verilator)."""

from amaranth.sim import Simulator


def simulate(dut, bench, *, clocked=True):
    """Run ``bench`` (an ``async def bench(ctx)`` testbench) on ``dut`` in Amaranth's simulator,
    with a clock on the sync domain unless ``clocked`` is False (a combinational design)."""
    sim = Simulator(dut)
    if clocked:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
