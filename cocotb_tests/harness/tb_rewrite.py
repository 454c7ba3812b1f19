"""Which modules pytest's assertion rewriting touches in the simulator (sim/harness/run.py): the
testbench's own, so its failing ``assert`` says what it compared, and no other, so that a run
does not parse and rewrite all of apwake and Amaranth again."""

import sys

import amaranth.hdl
import cocotb

import apwake.sim.models.cpu.linux


def _rewritten(module):
    return type(module.__loader__).__name__ == "AssertionRewritingHook"


@cocotb.test()
async def test_only_the_testbench_is_rewritten(dut):
    assert _rewritten(sys.modules[__name__])
    assert not _rewritten(apwake.sim.models.cpu.linux)
    assert not _rewritten(amaranth.hdl)      # an installed package, first imported after the hook


@cocotb.test()
async def test_a_failing_assert_shows_its_operands(dut):
    cycles = 2
    assert cycles == 3
