"""State-carrying AP start-up (VMware VMI's startup IPI hook, a direct start) on the APIC fabric
with the start-context unit: the rows of docs/SCENARIOS.md "State-carrying start-up"."""

import cocotb

from apwake.sim.models.cpu.linux import KERNEL_DATA, KERNEL_ENTRY, START_SECONDARY, THREAD_SIZE
from apwake.sim.models.cpu.state import ArchState
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario
from apwake.sim.vip.start_context.design import PvStartSystemConfig
from apwake.sim.vip.start_context.model import (decode, encode_vmi_ap_state, linux_ap_state,
                                                linux_gdt)

TIMEOUT = dict(timeout_time=30, timeout_unit="ms")
# the VMI kernel's layout as docs/ARCHITECTURE.md gives it (sim/models/cpu/linux.py,
# paravirt.py), restated here so that a change there is seen
PERCPU, PERCPU_SIZE, STACKS, GDTS, IDT, PGD = 0x60_0000, 0x1000, 0xC0_0000, 0x50_0000, 0x4_0000, 0x8000


def notes(cpu):
    return [e[2] for e in cpu["events"]]


def expected_start(n):
    """The state CPU number ``n`` must start in: Linux's vmi_ap_state for it, its selectors
    resolved in its GDT by the reference model (sim/vip/start_context/model.py), independent of
    the RTL and of the kernel model."""
    gdt_base = KERNEL_DATA + GDTS + 256 * n
    fields = linux_ap_state(gdt_base=gdt_base, idt_base=KERNEL_DATA + IDT, cr3=KERNEL_DATA + PGD,
                            eip=KERNEL_ENTRY + START_SECONDARY,
                            esp=KERNEL_DATA + STACKS + (n + 1) * THREAD_SIZE)
    memory = {0: encode_vmi_ap_state(**fields).ljust(92, b"\0")}
    gdt = linux_gdt(percpu_base=KERNEL_DATA + PERCPU + n * PERCPU_SIZE, canary_base=KERNEL_DATA + 0x4_1000)

    def read(address, size):
        if address < 92:
            return memory[0][address:address + size]
        index, offset = divmod(address - gdt_base, 8)
        return gdt.get(index, 0).to_bytes(8, "little")[offset:offset + size]
    status, field, context = decode(read, 0)
    assert context is not None, (status, field)
    return ArchState.from_context(context).as_dict()


@cocotb.test(**TIMEOUT)
async def test_vmi(dut):
    """INIT, de-assert, SetInitialAPState, SIPI, SIPI per AP: each AP starts at start_secondary
    in protected mode with paging, on its own stack and per-CPU segment, in exactly the state the
    reference model decodes from Linux's map; the second SIPI is dropped; the real-mode
    trampoline never runs."""
    n_cpus = PvStartSystemConfig.from_env().n_cpus
    report = await run_scenario(dut, "pv-startup-vmi", ScenarioOptions())
    assert report["passed"], report["failures"]
    pv = report["pv_start"]
    assert pv["init_messages"] == pv["sipi_messages"] == 2 * (n_cpus - 1)
    assert [h["op"] for h in pv["hypercalls"]] == ["PARAVIRT"] + ["SET_INITIAL_AP_STATE"] * (n_cpus - 1)
    assert all(h["status"] == "OK" for h in pv["hypercalls"])
    for n, cpu in enumerate(report["timeline"][1:], start=1):
        started = cpu["started"]
        assert started["by"] == "SetInitialAPState context at SIPI", started
        assert started["state"] == expected_start(n), (started["state"], expected_start(n))
        assert started["state"]["mode"] == "protected+paging"
        assert started["state"]["fs"]["base"] == KERNEL_DATA + PERCPU + n * PERCPU_SIZE
        assert cpu["entry"] is None and cpu["ignored_sipis"] == 1      # no real-mode start
        assert "trampoline" not in " ".join(notes(cpu)) and cpu["where"] == "idle (hlt loop)"
        assert notes(cpu).count("SIPI 0x9a dropped by the hypervisor (vCPU running)") == 1


@cocotb.test(timeout_time=200, timeout_unit="ms")      # Linux's 10 s call-in wait per AP
async def test_vmi_drift(dut):
    """The hook sends the map from before per-CPU data moved to FS: every AP faults entering
    start_secondary, reported with the register and its value; none comes online."""
    report = await run_scenario(dut, "pv-startup-vmi-drift", ScenarioOptions())
    assert not report["passed"] and report["online"] == [0]
    for cpu in report["timeline"][1:]:
        started = cpu["started"]["state"]
        assert started["fs"] == {"selector": 0, "base": 0, "limit": 0, "attrib": 0}
        assert started["gs"]["selector"] == 0xD8 and started["gs"]["base"] != 0
        ap = f"CPU {cpu['port']} (APIC ID {cpu['cpu']:#x})"
        messages = [f["message"] for f in report["failures"] if f["cpu"] == cpu["cpu"]]
        assert f"{ap} entered start_secondary with FS base 0: per-CPU segment missing" in messages
        assert cpu["where"].startswith("start_secondary: faulted on entry")


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def test_vmi_mixed(dut):
    """The BSP runs paravirtual and AP 1 is started the classic way: the hypervisor refuses its
    real-mode start (reported once, naming constraint 5), it stays in wait-for-SIPI, the
    kernel's call-in wait times out and says so; the other APs come up.  No hang."""
    report = await run_scenario(dut, "pv-startup-vmi-mixed", ScenarioOptions())
    classic = report["timeline"][1]
    assert not report["passed"] and classic["cpu"] not in report["online"]
    assert sorted(report["online"]) == sorted(c["cpu"] for c in report["timeline"] if c["port"] != 1)
    mine = [f["message"] for f in report["failures"] if f["cpu"] == classic["cpu"]]
    assert len(mine) == 2, mine
    assert "refused to start it in real mode" in mine[0] and "VMI constraint 5" in mine[0]
    assert "wait for callin" in mine[1] and "did not answer within 10 s" in mine[1]
    assert classic["state"] == "INIT_RECEIVED" and classic["started"] is None
    assert notes(classic).count("SIPI 0x9a refused by the hypervisor: real-mode start in a paravirtual VM") == 2
    assert report["pv_start"]["classic_aps"] == [classic["cpu"]]


@cocotb.test(**TIMEOUT)
async def test_classic_on_the_same_machine(dut):
    """A native kernel's INIT-SIPI-SIPI on the same machine: the unit starts each AP in real mode
    at the SIPI's CS:IP (no context armed, the VM not paravirtual)."""
    report = await run_scenario(dut, "init-sipi", ScenarioOptions())
    assert report["passed"], report["failures"]
    for cpu in report["timeline"][1:]:
        assert cpu["started"]["by"] == "SIPI 0x9a" and cpu["started"]["state"]["mode"] == "real"
        assert cpu["entry"] == {"cs": 0x9A00, "ip": 0} and cpu["ignored_sipis"] == 1


@cocotb.test(**TIMEOUT)
async def test_direct(dut):
    """One start call per AP and nothing on the APIC bus: each AP starts in the state VMI's hook
    would carry (the reference model's), with no SIPI to drop (docs/SCENARIOS.md compares the
    three bring-ups: tests/ ... test_direct_start_against_vmi_and_classic)."""
    n_cpus = PvStartSystemConfig.from_env().n_cpus
    report = await run_scenario(dut, "pv-startup-direct", ScenarioOptions())
    assert report["passed"], report["failures"]
    pv = report["pv_start"]
    assert pv["init_messages"] == pv["sipi_messages"] == pv["bus_messages"] == 0
    assert report["bus_messages_by_mode"] == {}
    assert [h["op"] for h in pv["hypercalls"]] == ["PARAVIRT"] + ["START"] * (n_cpus - 1)
    for n, cpu in enumerate(report["timeline"][1:], start=1):
        assert cpu["started"]["by"] == "direct start (hypercall)" and cpu["ignored_sipis"] == 0
        assert cpu["started"]["state"] == expected_start(n)
