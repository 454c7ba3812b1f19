"""sim/harness/deadline.py ``Deadline``: a wait that something keeps waking still ends at its
deadline (one cocotb Timer awaited in each pass restarted it at every wake-up), and a trigger
that fires first wins.  tests/test_harness.py runs it (on a one-CPU fabric, whose clock it does
not need)."""

import cocotb
from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_time

from apwake.sim.harness.deadline import Deadline
from apwake.sim.vip.memory import Memory

#: every test ends within a few microseconds simulated; one that does not fails here
TIMEOUT = dict(timeout_time=20, timeout_unit="us")


async def _keep_writing(memory, address, value, *, every_ns, times):
    """Write ``value`` (which the waiter does not want) to ``address`` every ``every_ns``."""
    for _ in range(times):
        await Timer(every_ns, "ns")
        memory.write_int(address, value, 1, writer="test")


@cocotb.test(**TIMEOUT)
async def test_a_memory_wait_woken_every_100_ns_ends_at_its_deadline(dut):
    memory = Memory()
    memory.write_int(0x100, 1, 1, writer="test")
    cocotb.start_soon(_keep_writing(memory, 0x100, 2, every_ns=100, times=50))
    start = get_sim_time("ns")
    ok = await memory.wait_until(0x100, 1, lambda v: v == 0, timeout_ns=1000)
    assert not ok
    assert get_sim_time("ns") - start == 1000, "the wait's deadline moved with its wake-ups"


@cocotb.test(**TIMEOUT)
async def test_a_memory_wait_sees_the_value_it_waits_for(dut):
    memory = Memory()
    cocotb.start_soon(_keep_writing(memory, 0x100, 3, every_ns=100, times=3))
    memory.write_int(0x100, 1, 1, writer="test")
    start = get_sim_time("ns")
    assert await memory.wait_until(0x100, 1, lambda v: v == 3, timeout_ns=1000)
    assert get_sim_time("ns") - start == 100


@cocotb.test(**TIMEOUT)
async def test_each_pass_gets_the_time_left(dut):
    deadline, woken, passes = Deadline(500), Event(), []

    async def wake(every_ns):
        while True:
            await Timer(every_ns, "ns")
            woken.set()

    cocotb.start_soon(wake(150))
    start = get_sim_time("ns")
    while True:
        woken.clear()
        if not await deadline.wait(woken.wait()):
            break
        passes.append(get_sim_time("ns") - start)
    assert passes == [150, 300, 450] and get_sim_time("ns") - start == 500
    assert not await deadline.wait(woken.wait()), "a passed deadline waits no more"
    assert get_sim_time("ns") - start == 500


@cocotb.test(**TIMEOUT)
async def test_a_deadline_needs_a_positive_timeout(dut):
    for bad in (0, -5):
        try:
            Deadline(bad)
        except ValueError as error:
            assert "positive timeout_ns" in str(error) and repr(bad) in str(error)
        else:
            raise AssertionError(f"Deadline({bad}) was accepted")
