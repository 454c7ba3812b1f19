"""cocotb module that runs one scenario and writes its report (used by ``apwake run``).

Environment: ``APWAKE_SCENARIO`` (name), ``APWAKE_SCENARIO_OPTIONS`` (JSON of
:class:`sim.scenarios.bringup.ScenarioOptions`), ``APWAKE_REPORT`` (output path),
``APWAKE_WAVES_FILE`` (recorded in the report).
"""

import json
import os

import cocotb

from .bringup import ScenarioOptions, run_scenario


@cocotb.test(timeout_time=60, timeout_unit="sec")
async def scenario(dut):
    options = ScenarioOptions(**json.loads(os.environ.get("APWAKE_SCENARIO_OPTIONS", "{}")))
    report = await run_scenario(dut, os.environ["APWAKE_SCENARIO"], options,
                                waves=os.environ.get("APWAKE_WAVES_FILE") or None)
    with open(os.environ["APWAKE_REPORT"], "w") as f:
        json.dump(report, f)
