"""cocotb module for the benchmark's ceiling: the design clocked with no Python activity.

``APWAKE_IDLE_CYCLES`` cycles after reset; writes ``{"cycles", "wall_s"}`` to ``APWAKE_REPORT``.
"""

import json
import os
import time

import cocotb
from cocotb.triggers import Timer

from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.vip.lapic.env import FabricEnv


@cocotb.test()
async def idle(dut):
    await FabricEnv.start(dut, monitor=False)
    cycles = int(os.environ.get("APWAKE_IDLE_CYCLES", "200000"))
    started = time.monotonic()
    await Timer(cycles * CLOCK_NS, "ns")
    wall = time.monotonic() - started
    with open(os.environ["APWAKE_REPORT"], "w") as f:
        json.dump({"cycles": cycles, "wall_s": wall}, f)
