"""TDX-style bring-up: APs parked on the MP wakeup mailbox, woken by acpi_wakeup_cpu
(mpwk.md §3, §4)."""

import cocotb

from rtl.mpwk_mailbox.layouts import ApState
from sim.cpu.linux import MADT_ADDRESS, TRAMPOLINE, BootMethod
from sim.cpu.model import MpState
from sim.mpwk.design import PlatformConfig
from sim.mpwk.madt import parse_mp_wake
from sim.pytest_plugin import applies_to
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


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: config.version == 1)
async def test_offline_online_v1(dut):
    """Version 1: each AP goes back to firmware through ResetVector, the Test command is
    acknowledged within Linux's 1 s, and the AP is woken again (mpwk.md §4, §7 #2, #13)."""
    report = await run_scenario(dut, "mpwk-offline-online", ScenarioOptions())
    assert report["passed"], report["failures"]
    rounds = report["offline_online"]
    assert len(rounds) == report["cpus"] - 1
    assert all(r == {"cpu": r["cpu"], "offline": "ok", "online_again": "ok"} for r in rounds), rounds
    assert sorted(report["online"]) == sorted(c["cpu"] for c in report["timeline"])
    for cpu in report["timeline"][1:]:
        notes = [e[2] for e in cpu["events"]]
        assert notes.count("jumped to ResetVector: back in the firmware mailbox loop") == 1
        assert sum(n.startswith("mailbox Wakeup") for n in notes) == 2
    assert int(dut.mailbox_status.value) == 0


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: config.version == 0)
async def test_version0_refuses_offline_and_hides_the_mailbox(dut):
    """Version 0 policy: offlining fails with -EOPNOTSUPP and the kernel zeroes the mailbox
    address in the in-memory MADT, so a kexec'ed kernel finds none (mpwk.md §4, §7 #19)."""
    options = ScenarioOptions()
    platform = await start_platform(dut, options)
    kernel = await boot(platform, options, BootMethod.MPWK)
    assert len(kernel.online_cpus()) == platform.env.n, platform.failures
    result = await kernel.cpu_down(platform.bsp, 1)
    assert result.startswith("-EOPNOTSUPP"), result
    assert 1 in kernel.online_cpus(), "a refused offline took the CPU down"
    table = platform.memory.read(MADT_ADDRESS + 4, platform.memory.read_int(MADT_ADDRESS, 4))
    assert parse_mp_wake(table).mailbox_address == 0, "MADT mailbox address not zeroed"
    assert kernel.mp_wake.mailbox_address != 0, "the running kernel lost its cached copy"
    assert platform.memory.corruptions == []


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(nr_cpus=[None, 2])
async def test_kexec(dut, nr_cpus):
    """kexec hand-off (mpwk.md §4, §7 #19, #20).  Version 1: kernel 1's APs return to firmware
    and kernel 2 wakes every AP, also those kernel 1 never woke.  Version 0: kernel 2 finds the
    MADT mailbox zeroed and comes up on the BSP; every AP is reported stranded with its reason."""
    version = int(PlatformConfig.from_env().version)
    report = await run_scenario(dut, f"kexec-mpwk-v{version}", ScenarioOptions(nr_cpus=nr_cpus))
    assert report["passed"], report["failures"]
    kernel1, kernel2 = report["kernels"]
    ids = [c["cpu"] for c in report["timeline"]]
    woken = ids[:nr_cpus] if nr_cpus else ids
    assert kernel1["online"] == woken
    assert [s["cpu"] for s in kernel1["stranded"]] == ids[len(woken):]
    assert all(s["reason"].startswith("nr_cpus=") for s in kernel1["stranded"])
    if version == 1:
        assert kernel2["online"] == ids and kernel2["stranded"] == []
    else:
        assert kernel2["online"] == ids[:1]
        reasons = {s["cpu"]: s["reason"] for s in kernel2["stranded"]}
        assert sorted(reasons) == ids[1:]
        for apic_id in ids[1:]:
            expected = "halted by kernel 1" if apic_id in woken else "zeroed the MADT mailbox address"
            assert expected in reasons[apic_id], reasons[apic_id]
    assert report["corruptions"] == []
