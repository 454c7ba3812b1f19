"""TDX-style bring-up: APs parked on the MP wakeup mailbox, woken by acpi_wakeup_cpu
(docs/spec/mpwk.md §3, §4)."""

import cocotb

from apwake.rtl.mpwk_mailbox.layouts import PAGE_SIZE, ApState, MailboxStatus
from apwake.sim.models.cpu.linux import MADT_ADDRESS, TRAMPOLINE, BootMethod
from apwake.sim.models.cpu.model import LOW_MEMORY, MpState
from apwake.sim.models.cpu.parking import PARKING_PAGE
from apwake.sim.harness.codec import unpack
from apwake.sim.vip.mpwk_mailbox.design import MpwkSystemConfig
from apwake.sim.models.madt import parse_mp_wake, processor_entries
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.boot import boot
from apwake.sim.scenarios.registry import run_scenario, start_machine

TIMEOUT = dict(timeout_time=20, timeout_unit="ms")


@cocotb.test(**TIMEOUT)
async def test_mpwk_wakeup(dut):
    """Every AP comes online through the mailbox: no INIT or SIPI on the fabric, each AP entered
    once at the wakeup vector, the mailbox raised no error."""
    report = await run_scenario(dut, "mpwk-wakeup", ScenarioOptions())
    assert report["passed"], report["failures"]
    assert sorted(report["online"]) == sorted(c["cpu"] for c in report["timeline"])
    assert report["bus_messages"] == 0, "INIT/SIPI used on a mailbox machine"
    for cpu in report["timeline"]:
        if cpu["bsp"]:
            continue
        wakes = [e for e in cpu["events"] if e[2].startswith("mailbox Wakeup")]
        assert len(wakes) == 1 and f"{TRAMPOLINE:#x}" in wakes[0][2], cpu["events"]
        assert not any(e[2].startswith("warning") for e in cpu["events"]), cpu["events"]
        assert cpu["entry"] is None and cpu["state"] == MpState.HALTED.name
    assert int(dut.mailbox_status.value) == 0, f"mailbox status {int(dut.mailbox_status.value):#x}"
    for k in range(report["cpus"] - 1):
        assert int(getattr(dut, f"mailbox_ap__{k}__state").value) == ApState.OS_RUNNING.value


@cocotb.test(**TIMEOUT)
async def test_no_madt_mailbox(dut):
    """Firmware publishes no MPWK entry: the kernel says so and stays on one CPU, as Linux does
    ("No MADT mailbox: cannot bringup secondary CPUs")."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    machine.madt = processor_entries([c.apic_id for c in machine.cpus])     # no mailbox entry
    kernel = await boot(machine, options, BootMethod.MPWK)
    assert kernel.online_apic_ids() == [machine.bsp.apic_id]
    assert any("No MADT mailbox" in f["message"] for f in machine.failures), machine.failures
    for cpu in machine.cpus[1:]:
        assert cpu.where == "firmware: mailbox poll loop" and cpu.wakeup_vector is None


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: config.version == 1)
async def test_offline_online_v1(dut):
    """Version 1: each AP goes back to firmware through ResetVector, the Test command is
    acknowledged within Linux's 1 s, and the AP is woken again (docs/spec/mpwk.md §4, §7 #2, #13)."""
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
    address in the in-memory MADT, so a kexec'ed kernel finds none (docs/spec/mpwk.md §4, §7 #19)."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    kernel = await boot(machine, options, BootMethod.MPWK)
    assert len(kernel.online_cpus()) == machine.env.n, machine.failures
    result = await kernel.cpu_down(machine.bsp, 1)
    assert result.startswith("-EOPNOTSUPP"), result
    assert 1 in kernel.online_cpus(), "a refused offline took the CPU down"
    table = machine.memory.read(MADT_ADDRESS + 4, machine.memory.read_int(MADT_ADDRESS, 4))
    assert parse_mp_wake(table).mailbox_address == 0, "MADT mailbox address not zeroed"
    assert kernel.mp_wake.mailbox_address != 0, "the running kernel lost its cached copy"
    assert machine.memory.corruptions == []


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(nr_cpus=[None, 2])
async def test_kexec(dut, nr_cpus):
    """kexec hand-off (docs/spec/mpwk.md §4, §7 #19, #20).  Version 1: kernel 1's APs return to firmware
    and kernel 2 wakes every AP, also those kernel 1 never woke.  Version 0: kernel 2 finds the
    MADT mailbox zeroed and comes up on the BSP; every AP is reported stranded with its reason."""
    version = int(MpwkSystemConfig.from_env().version)
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


#: plan B's cases: name -> (parking_page, nr_cpus, firmware_reuses_mailbox)
PARKING_CASES = {
    "kernel_page": ("kernel", None, False), "kernel_page_nr_cpus2": ("kernel", 2, False),
    "kernel_page_fw_reuse": ("kernel", None, True), "fw_page": ("firmware", None, False),
    "fw_page_nr_cpus2": ("firmware", 2, False), "fw_page_fw_reuse": ("firmware", None, True)}


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(case=list(PARKING_CASES))
@applies_to(lambda config: config.version == 0)
async def test_kexec_parking_loop(dut, case):
    """Plan B (docs/spec/mpwk.md §4): kernel 1 parks its APs in its own loop.  On its own page with the MADT
    patched it works only if kernel 1 woke every AP; on the firmware's page every AP is reachable
    until the firmware reuses the page, and then every mailbox store of both kernels is a
    corruption of firmware data."""
    parking_page, nr_cpus, reuse = PARKING_CASES[case]
    # a stranded AP costs kernel 2 one callin timeout each: 0.2 s of guest time is plenty here
    report = await run_scenario(dut, "kexec-mpwk-parking-loop", ScenarioOptions(
        nr_cpus=nr_cpus, parking_page=parking_page, firmware_reuses_mailbox=reuse,
        callin_timeout_us=200_000))
    ids = [c["cpu"] for c in report["timeline"]]
    woken = ids[:nr_cpus] if nr_cpus else ids
    kernel1, kernel2 = report["kernels"]
    parking = report["parking"]
    assert kernel1["online"] == woken
    assert parking["woken_from_loop"] == woken[1:], "kernel 2 did not wake kernel 1's APs from the loop"
    assert parking["mailbox"] == (PARKING_PAGE if parking_page == "kernel" else MpwkSystemConfig.from_env().base)
    # the firmware takes its page back only once no AP polls it
    all_woken_by_firmware = len(woken) == len(ids)
    assert (parking["firmware_reused_mailbox_page"] is not None) == (reuse and all_woken_by_firmware)
    stranded = ids[len(woken):] if parking_page == "kernel" else []
    assert kernel2["online"] == [i for i in ids if i not in stranded]
    assert [s["cpu"] for s in kernel2["stranded"]] == stranded
    for s in kernel2["stranded"]:
        assert "patched MADT sends kernel 2 to kernel 1's parking loop" in s["reason"], s
        assert any(f["cpu"] == s["cpu"] and "never acknowledged" in f["message"]
                   for f in report["failures"]), report["failures"]
    corrupting = parking_page == "firmware" and reuse
    if corrupting:
        writers = {(c["owner"], c["writer"]) for c in report["corruptions"]}
        assert writers == {("firmware", "kernel 1"), ("firmware", "kernel 2")}, writers
        base = MpwkSystemConfig.from_env().base
        assert all(base <= c["address"] < base + PAGE_SIZE for c in report["corruptions"])
    else:
        assert report["corruptions"] == []
    assert report["passed"] == (not stranded and not corrupting), report["failures"]


@cocotb.test(**TIMEOUT)
async def test_wakeup_vector_above_1mib(dut):
    """A WakeupVector above 1 MiB and outside ReservedForOs (docs/spec/mpwk.md §7 #10): the AP warns in its
    timeline and jumps anyway, as TDVF's ``jmp rax`` does; the APs the kernel woke at its
    trampoline (below 1 MiB) have no warning (also checked by ``test_mpwk_wakeup``)."""
    options = ScenarioOptions(nr_cpus=MpwkSystemConfig.from_env().n_cpus - 1)   # all but the last AP
    machine = await start_machine(dut, options)
    kernel = await boot(machine, options, BootMethod.MPWK)
    ap = machine.cpus[-1]
    high = LOW_MEMORY + 0x10_0000
    arrived = []

    async def high_entry(cpu):
        arrived.append(cpu.apic_id)

    machine.memory.load_program(high, high_entry, owner=kernel.owner, name="entry above 1 MiB")
    assert await kernel.acpi_wakeup_cpu(machine.bsp, ap.apic_id, high), machine.failures
    await ap.wait_until(lambda: arrived, timeout_ns=10_000, what="entry above 1 MiB")
    warnings = [e[2] for e in ap.history if e[2].startswith("warning: WakeupVector")]
    assert len(warnings) == 1 and f"{high:#x}" in warnings[0], ap.history
    assert arrived == [ap.apic_id]
    for cpu in machine.cpus[1:-1]:
        notes = [e[2] for e in cpu.history]
        assert f"mailbox Wakeup: 64-bit entry at {TRAMPOLINE:#x}" in notes, notes
        assert not any(n.startswith("warning") for n in notes), notes


@cocotb.test(**TIMEOUT)
async def test_descheduled_vcpu(dut):
    """The VMM never runs one parked AP (docs/spec/mpwk.md §7 #16): Linux would spin on Command for ever;
    the model gives up after the callin timeout and names that CPU, the mailbox flags
    ``no_target``, every other AP comes online."""
    stuck = MpwkSystemConfig.from_env().n_cpus - 1          # the last port's AP
    report = await run_scenario(dut, "mpwk-wakeup", ScenarioOptions(unresponsive=[stuck],
                                                                    callin_timeout_us=200_000))
    assert not report["passed"]
    ids = [c["cpu"] for c in report["timeline"]]
    assert report["online"] == ids[:stuck]
    (failure,) = report["failures"]
    assert failure["cpu"] == ids[stuck] and "never acknowledged" in failure["message"]
    assert "vCPU descheduled" in failure["where"], failure
    assert unpack(MailboxStatus, int(dut.mailbox_status.value))["no_target"] == 1
