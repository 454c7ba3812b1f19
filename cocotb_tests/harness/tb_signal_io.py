"""A :class:`apwake.sim.harness.signal_io.Pin` reads and writes what ``handle.value`` does, on
the ports of a one-CPU fabric: 1-bit, narrow and 64-bit inputs, and the wide watched-outputs
vector."""

import random

import cocotb
from cocotb.triggers import ReadOnly, Timer

from apwake.sim.harness.pins import port
from apwake.sim.harness.signal_io import pin

INPUTS = ["cpu__0__reg__req_valid", "cpu__0__reg__space", "cpu__0__reg__addr", "cpu__0__reg__wdata"]


async def _settle():
    await Timer(1, "ns")
    await ReadOnly()


@cocotb.test()
async def test_pin_writes_what_cocotb_reads(dut):
    rng = random.Random(1)
    handles = [port(dut, name) for name in INPUTS]
    assert max(len(h) for h in handles) > 32 and min(len(h) for h in handles) == 1, \
        "the test needs a 1-bit and a wider-than-32-bit input"
    for _ in range(8):
        values = [rng.randrange(1 << len(h)) for h in handles]
        for handle, value in zip(handles, values):
            pin(handle).set(value)
        await _settle()
        assert [int(h.value) for h in handles] == values
        assert [pin(h).get() for h in handles] == values
        await Timer(1, "ns")
        # and the other way round: cocotb writes, the pin reads
        values = [(1 << len(h)) - 1 - v for h, v in zip(handles, values)]
        for handle, value in zip(handles, values):
            handle.value = value
        await _settle()
        assert [pin(h).get() for h in handles] == values
        await Timer(1, "ns")


@cocotb.test()
async def test_pin_reads_a_wide_output(dut):
    assert len(dut.watch) > 4
    await _settle()
    assert pin(dut.watch).get() == int(str(dut.watch.value), 2)


@cocotb.test()
async def test_a_value_that_does_not_fit_is_named(dut):
    wdata = port(dut, "cpu__0__reg__wdata")
    valid = port(dut, "cpu__0__reg__req_valid")
    for handle, value in ((wdata, 1 << len(wdata)), (valid, 2), (valid, -1)):
        try:
            pin(handle).set(value)
        except ValueError as error:
            assert "req_" in str(error) or "wdata" in str(error), error
            assert repr(value) in str(error) and f"{len(handle)} bits" in str(error), error
        else:
            raise AssertionError(f"{value} was written to a {len(handle)}-bit port")
    assert pin(valid) is pin(valid), "one Pin per handle"
