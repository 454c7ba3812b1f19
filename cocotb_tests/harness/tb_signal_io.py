"""A :class:`apwake.sim.harness.signal_io.Pin` reads and writes what ``handle.value`` does, on
the ports of a one-CPU fabric (1-bit, narrow and 64-bit inputs), and refuses what cocotb's
setter refuses.  tests/test_signal_io.py runs it with the simulator's inertial writes trusted
(a Pin writes through GPI) and not (through ``handle.value``)."""

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


@cocotb.test()
async def test_no_write_in_read_only(dut):
    valid = port(dut, "cpu__0__reg__req_valid")
    await ReadOnly()
    try:
        pin(valid).set(1)
    except RuntimeError as error:
        assert "ReadOnly" in str(error), error
    else:
        raise AssertionError("a Pin wrote in the ReadOnly phase")


@cocotb.test()
async def test_only_logic_signals(dut):
    try:
        pin(dut)
    except TypeError as error:
        assert "not a logic signal or vector" in str(error), error
    else:
        raise AssertionError("a Pin of the top's scope")
