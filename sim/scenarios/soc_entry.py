"""cocotb module behind ``apwake run soc-demo``: run the firmware on the SoC, write the UART
transcript and the LEDs to ``APWAKE_REPORT``."""

import json
import os

import cocotb
from cocotb.utils import get_sim_time

from apwake.sim.harness.clocking import start_clock_and_reset
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.vip.soc.design import SocConfig
from apwake.sim.vip.soc.uart import UartMonitor


def final_line(config):
    """The firmware's last line when everything worked."""
    n = config.n_cpus
    summary = f"all {n} of {n} cores online"
    if config.ap_start == "mailbox":
        return f"kernel 2: {summary}"
    if config.ap_start == "ghcb":       # the second summary, after every reset hold
        return f"woken from reset hold\n{summary}"
    if config.ap_start == "context":    # after the launch counts
        return f" dropped\n{summary}"
    return summary


@cocotb.test(timeout_time=5000, timeout_unit="ms")   # a backstop: config.budget_ns is the watchdog
async def soc_demo(dut):
    config = SocConfig.from_env()
    monitor = UartMonitor(dut)
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    finished = await monitor.wait_for(final_line(config) + "\n",
                                      timeout_ns=config.budget_ns)
    n = config.n_cpus
    report = {"cpus": n, "transcript": monitor.text, "finished": finished,
              "leds": int(dut.leds.value), "running": int(dut.running.value),
              "trap": int(dut.trap.value), "bus_error": int(dut.bus_error.value),
              "cycles": int(get_sim_time("ns") // CLOCK_NS)}
    failures = ("did not", "Failed", "refused, status", "not refused")    # the last two: a context start's
    report["passed"] = (finished and not any(failure in monitor.text for failure in failures)
                        and report["leds"] == config.leds_all_online and report["trap"] == 0
                        and report["bus_error"] == 0)
    with open(os.environ["APWAKE_REPORT"], "w") as f:
        json.dump(report, f)
