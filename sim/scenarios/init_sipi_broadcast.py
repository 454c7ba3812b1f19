"""Demo: the BSP wakes every AP with a broadcast INIT, SIPI, SIPI (lapic.md §6.3, SDM §8.4.4).

The BSP follows the modern Linux timing (no wait after INIT, 10 us around each SIPI).  The APs
here are minimal stand-ins for the CPU models of a later issue: the first SIPI after INIT
starts an AP at vector << 12, a later SIPI is ignored and counted.
"""

import json
import os

import cocotb
from cocotb.triggers import Timer, gather

from rtl.lapic.layouts import DeliveryMode, Shorthand, Trigger
from sim.lapic.bfm import make_icr
from sim.lapic.env import FabricEnv

TRAMPOLINE = 0x9A000


async def ap(port, log):
    entry = {"port": port.index, "apic_id": port.apic_id, "role": "AP", "ignored_sipis": 0}
    log.append(entry)
    await port.wait_init(timeout_cycles=100_000)
    entry["init_ns"] = cocotb.utils.get_sim_time("ns")
    await port.acknowledge("init")
    vector = await port.wait_sipi(timeout_cycles=100_000)
    entry["sipi_ns"] = cocotb.utils.get_sim_time("ns")
    entry["start_address"] = vector << 12
    await port.acknowledge("sipi")
    await port.wait_sipi(timeout_cycles=100_000)      # the second SIPI finds it running
    entry["ignored_sipis"] += 1
    await port.acknowledge("sipi")


@cocotb.test(timeout_time=10, timeout_unit="ms")
async def init_sipi_broadcast(dut):
    env = await FabricEnv.start(dut)
    bsp = env.ports[env.config.bsp_index]
    log = [{"port": bsp.index, "apic_id": bsp.apic_id, "role": "BSP"}]
    aps = [cocotb.start_soon(ap(p, log)) for p in env.ports if p is not bsp]
    await bsp.write("ESR", 0)
    await bsp.send_ipi(make_icr(0, DeliveryMode.INIT, shorthand=Shorthand.ALL_EXCLUDING_SELF,
                                trigger=Trigger.LEVEL))
    await bsp.wait_idle()
    for _ in range(2):
        await bsp.send_ipi(make_icr(TRAMPOLINE >> 12, DeliveryMode.STARTUP,
                                    shorthand=Shorthand.ALL_EXCLUDING_SELF))
        await Timer(10, "us")
        await bsp.wait_idle()
        await Timer(10, "us")
    await bsp.write("ESR", 0)
    esr = await bsp.read("ESR")
    await gather(*aps)
    report = {"scenario": "init-sipi-broadcast", "cpus": env.n, "esr_after": esr,
              "sim_time_ns": cocotb.utils.get_sim_time("ns"),
              "cpus_detail": sorted(log, key=lambda e: e["port"]),
              "bus_messages": len(env.monitor.cycles)}
    with open(os.environ["APWAKE_REPORT"], "w") as f:
        json.dump(report, f)
    assert esr & 0xEF == 0, f"BSP ESR {esr:#x} after the SIPIs: delivery error"
    for entry in log[1:]:
        assert entry.get("start_address") == TRAMPOLINE, f"AP {entry} did not start"
