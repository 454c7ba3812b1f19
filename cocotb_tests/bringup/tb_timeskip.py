"""Time skipping in a test that is not the first of its module (tests/test_timeskip.py runs this
module with skipping on and off and compares the second test's reports).

cocotb starts each test after the first one step after the previous one ended, so its clock
starts off the grid of whole periods from time 0: the skipper must take its phase from the
clock it is given, not from time 0."""

import json
from pathlib import Path

import cocotb
from cocotb.triggers import Timer

from apwake.sim.scenarios.options import ScenarioOptions, ScenarioRequest
from apwake.sim.scenarios.registry import run_scenario


@cocotb.test()
async def test_first(dut):
    """A short scenario, ending 3 ns past an edge (the next test's clock starts there)."""
    request = ScenarioRequest.from_env()
    await run_scenario(dut, "init-sipi", ScenarioOptions(time_skip=request.options.time_skip))
    await Timer(3, "ns")


@cocotb.test()
async def test_second(dut):
    """The requested scenario; its report goes where the request says."""
    request = ScenarioRequest.from_env()
    report = await run_scenario(dut, request.scenario, request.options)
    Path(request.report).write_text(json.dumps(report))
