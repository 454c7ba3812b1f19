"""Running one component's unit test in Amaranth's simulator (no Verilator)."""

from amaranth.sim import Simulator

#: simulated time after which :func:`simulate` fails a bench that has not ended (100,000 cycles
#: of its 10 ns clock): a bench waiting for a handshake that never comes fails instead of hanging
WATCHDOG_S = 1e-3


def simulate(dut, *benches, clocked=True, background=(), watchdog_s=WATCHDOG_S):
    """Run ``benches`` (``async def bench(ctx)`` testbenches) on ``dut`` in Amaranth's simulator
    until they end, with a clock on the sync domain unless ``clocked`` is False (a
    combinational design), and the ``background`` testbenches alongside them.

    Raises
    ------
    AssertionError
        A bench has not ended after ``watchdog_s`` seconds of simulated time.
    """
    sim = Simulator(dut)
    if clocked:
        sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    for other in background:
        sim.add_testbench(other, background=True)

    async def watchdog(ctx):        # background: the simulation ends without it when the benches do
        await ctx.delay(watchdog_s)
        raise AssertionError(f"benches {[getattr(b, '__name__', repr(b)) for b in benches]} still running after "
                             f"{watchdog_s * 1e6:g} us simulated")

    sim.add_testbench(watchdog, background=True)
    sim.run()
