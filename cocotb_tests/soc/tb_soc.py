"""The whole soft-SoC under Verilator running its firmware (issue 6 §3): the BSP wakes every AP
with INIT-SIPI-SIPI through its APIC; the UART transcript and the LEDs are checked."""

import cocotb

from sim.clocking import start_clock_and_reset
from sim.soc.design import SocConfig
from sim.soc.uart import UartMonitor

CLOCK_NS = 10


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_firmware_wakes_every_ap(dut):
    config = SocConfig.from_env()
    n, ids = config.n_cpus, config.fabric.apic_ids
    monitor = UartMonitor(dut)
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    running = [int(dut.running.value) >> i & 1 for i in range(n)]
    assert running == [int(i == config.fabric.bsp_index) for i in range(n)], "APs must wait for SIPI"
    finished = await monitor.wait_for(" cores online\n", timeout_ns=5_000_000)
    transcript = monitor.text
    assert finished, f"no summary line; transcript so far:\n{transcript}"
    lines = transcript.splitlines()
    assert lines[0] == f"apwake soc: BSP up, {n} cores", transcript
    for core, apic_id in enumerate(ids):
        if core == config.fabric.bsp_index:
            continue
        assert lines.count(f"AP {apic_id} online") == 1, transcript
    assert lines[-1] == f"all {n} of {n} cores online", transcript
    assert len(lines) == n + 1, f"unexpected lines (lock broken?):\n{transcript}"
    assert int(dut.leds.value) == (1 << n) - 1
    assert int(dut.running.value) == (1 << n) - 1 and int(dut.trap.value) == 0
