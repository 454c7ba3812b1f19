"""TDX-style bring-up: APs parked on the MP wakeup mailbox, woken by acpi_wakeup_cpu
(mpwk.md §3, §4)."""

import cocotb

from rtl.mpwk_mailbox.layouts import ApState
from sim.cpu.linux import TRAMPOLINE, BootMethod
from sim.cpu.model import MpState
from sim.scenarios.bringup import ScenarioOptions, boot, run_scenario, start_platform

TIMEOUT = dict(timeout_time=20, timeout_unit="ms")


@cocotb.test(**TIMEOUT)
async def test_mpwk_wakeup(dut):
    """Every AP comes online through the mailbox: no INIT or SIPI on the fabric, each AP entered
    once at the wakeup vector, the mailbox raised no error."""
    report = await run_scenario(dut, "mpwk-wakeup", ScenarioOptions())
    assert report["passed"], report["failures"]
    assert sorted(report["online"]) == sorted(c["cpu"] for c in report["timeline"])
    assert report["bus_messages"] == 0, "INIT/SIPI used on a mailbox platform"
    for cpu in report["timeline"]:
        if cpu["bsp"]:
            continue
        wakes = [e for e in cpu["events"] if e[2].startswith("mailbox Wakeup")]
        assert len(wakes) == 1 and f"{TRAMPOLINE:#x}" in wakes[0][2], cpu["events"]
        assert cpu["entry"] is None and cpu["state"] == MpState.HALTED.name
    assert int(dut.mailbox_status.value) == 0, f"mailbox status {int(dut.mailbox_status.value):#x}"
    for k in range(report["cpus"] - 1):
        assert int(getattr(dut, f"mailbox_ap__{k}__state").value) == ApState.OS_RUNNING.value


@cocotb.test(**TIMEOUT)
async def test_no_madt_mailbox(dut):
    """Firmware publishes no MPWK entry: the kernel says so and stays on one CPU, as Linux does
    ("No MADT mailbox: cannot bringup secondary CPUs")."""
    options = ScenarioOptions()
    platform = await start_platform(dut, options)
    platform.madt = b""
    kernel = await boot(platform, options, BootMethod.MPWK)
    assert kernel.online_apic_ids() == [platform.bsp.apic_id]
    assert any("No MADT mailbox" in f["message"] for f in platform.failures), platform.failures
    for cpu in platform.cpus[1:]:
        assert cpu.where == "firmware: mailbox poll loop" and cpu.wakeup_vector is None
