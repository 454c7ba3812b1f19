"""cocotb module for the benchmark's ceiling: the design clocked with no Python activity.

``APWAKE_IDLE_CYCLES`` cycles after reset; writes ``{"cycles", "wall_s"}`` to ``APWAKE_REPORT``.
With ``APWAKE_IDLE_ACCESSES`` (default 0), port 0 then makes that many back-to-back register
accesses (ESR reads through :class:`apwake.sim.vip.lapic.bfm.ApicPort`, two cycles each), and
the report adds ``accesses`` and ``access_wall_s``: what one access costs beyond two idle
cycles is the drivers' Python and the simulator's extra evaluations after their writes
(docs/PERFORMANCE.md).
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
    env = await FabricEnv.start(dut, monitor=False)
    cycles = int(os.environ.get("APWAKE_IDLE_CYCLES", "200000"))
    started = time.monotonic()
    await Timer(cycles * CLOCK_NS, "ns")
    report = {"cycles": cycles, "wall_s": time.monotonic() - started}
    accesses = int(os.environ.get("APWAKE_IDLE_ACCESSES", "0"))
    if accesses:
        port = env.ports[0]
        started = time.monotonic()
        for _ in range(accesses):
            await port.read("ESR")
        report.update(accesses=accesses, access_wall_s=time.monotonic() - started)
    with open(os.environ["APWAKE_REPORT"], "w") as f:
        json.dump(report, f)
