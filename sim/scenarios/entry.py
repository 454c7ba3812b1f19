"""cocotb module that runs one scenario and writes its report (used by ``apwake run``).

Its input is one :class:`apwake.sim.scenarios.options.ScenarioRequest` (JSON in
``APWAKE_SCENARIO_REQUEST``): the scenario's name, its options, the report path and the
waveform file.  The design's own configuration comes the way every design's does (its
``EnvConfig`` variable).
"""

import json
from pathlib import Path

import cocotb

from .registry import run_scenario
from .options import ScenarioRequest


@cocotb.test(timeout_time=60, timeout_unit="sec")
async def scenario(dut):
    request = ScenarioRequest.from_env()
    report = await run_scenario(dut, request.scenario, request.options, waves=request.waves)
    Path(request.report).write_text(json.dumps(report))
