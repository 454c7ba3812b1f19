"""A 1-vCPU TDX guest: the firmware still publishes the mailbox, nobody polls it."""

import cocotb

from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_kexec_v0_single_cpu(dut):
    """Kexec on a version-0 mailbox works with one CPU (the "basic enabling" of kexec in TDX
    guests, LKML Feb 2023, docs/spec/mpwk.md §5): both kernels come up on the BSP, nothing is stranded, and
    kernel 1 zeroed the MADT mailbox address all the same."""
    report = await run_scenario(dut, "kexec-mpwk-v0", ScenarioOptions())
    assert report["passed"], report["failures"]
    (bsp,) = [c["cpu"] for c in report["timeline"]]
    kernel1, kernel2 = report["kernels"]
    assert kernel1 == {"name": "kernel 1", "online": [bsp], "stranded": []}
    assert kernel2 == {"name": "kernel 2", "online": [bsp], "stranded": []}
    notes = [e[2] for e in report["timeline"][0]["events"]]
    assert notes.count("MADT mailbox v0: offlining disabled, MADT mailbox address zeroed") == 1
    assert "kexec: jump to kernel 2" in notes and report["corruptions"] == []
