"""SEV-ES scenarios on the APIC fabric with the GHCB MSR unit (docs/spec/ghcb.md §2-§5)."""

import cocotb

from apwake.rtl.ghcb_msr.layouts import GHCB_OFFSETS, VcpuState
from apwake.sim.models.cpu.model import MpState
from apwake.sim.models.cpu.linux import KERNEL_DATA, TRAMPOLINE
from apwake.sim.models.cpu.sev import FIRMWARE_GHCB, ghcb_page
from apwake.sim.vip.ghcb_msr.design import SevSystemConfig
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario

TIMEOUT = dict(timeout_time=30, timeout_unit="ms")
v2 = applies_to(lambda c: c.max_version >= 2)
v1 = applies_to(lambda c: c.max_version == 1)


def notes(cpu):
    return [e[2] for e in cpu["events"]]


@cocotb.test(**TIMEOUT)
async def test_sev_es_boot(dut):
    """First boot: each AP is created UNINITIALIZED, INIT-SIPI starts it from its launch state
    (SIPI vector ignored: the kernel's SIPI vector would be 0x9a, the AP starts in the reset
    block), the firmware's reset block far-jumps to the jump table's CS:IP (the kernel's
    trampoline); the second SIPI of each pair is dropped by the hypervisor."""
    config = SevSystemConfig.from_env()
    report = await run_scenario(dut, "sev-es-boot", ScenarioOptions())
    assert report["passed"], report["failures"]
    assert report["ghcb_version"] == min(config.max_version, 2)
    assert report["hv_range"] == [config.min_version, config.max_version]
    assert sorted(report["online"]) == sorted(c["cpu"] for c in report["timeline"])
    for cpu in report["timeline"][1:]:
        events = notes(cpu)
        assert events[0] == "created (SEV-ES)" and cpu["events"][0][1] == MpState.UNINITIALIZED.name
        assert events.count("first SIPI: launch state (vector ignored)") == 1
        assert events.count(f"jump table: CS:IP {TRAMPOLINE >> 4:#06x}:0x0000") == 1
        assert cpu["entry"] == {"cs": TRAMPOLINE >> 4, "ip": 0}
    assert report["corruptions"] == []
    for k in range(config.n_cpus):
        assert int(getattr(dut, f"vcpu__{k}__state").value) == VcpuState.RUNNABLE.value
    assert int(dut.ghcb_term.value) == 0


@cocotb.test(**TIMEOUT)
async def test_offline_online(dut):
    """Every AP offlined into AP reset hold and brought back with INIT-SIPI-SIPI.  Version 1:
    mainline's GHCB-page hold, the wake-up written into the AP's own GHCB (shared) page; version
    2 with the kexec series: the MSR form from the jump table page, no guest memory written."""
    config = SevSystemConfig.from_env()
    report = await run_scenario(dut, "sev-es-offline-online", ScenarioOptions())
    assert report["passed"], report["failures"]
    form = "msr" if config.max_version >= 2 else "ghcb"
    assert report["hold_form"] == form
    rounds = report["offline_online"]
    assert len(rounds) == config.n_cpus - 1
    assert all(r == {"cpu": r["cpu"], "offline": "ok", "online_again": "ok"} for r in rounds), rounds
    for cpu in report["timeline"][1:]:
        events = notes(cpu)
        assert events.count("hypervisor: AP_RESET_HOLD") == 1, events
        woken = [e for e in events if e.startswith("woken:")]
        assert woken == (["woken: far jump to jump table CS:IP 0x9a00:0x0000"] if form == "msr"
                         else ["woken: soft_restart_cpu"]), events
        assert events.count("online") == 2
    assert report["corruptions"] == []
    # the pages the hypervisor wrote: the firmware's and the BSP's GHCB (jump table SET/GET),
    # plus, for the page form only, each AP's own GHCB
    ap_ghcbs = {ghcb_page(KERNEL_DATA, n) for n in range(1, config.n_cpus)}
    written = set(report["hypervisor_writes"])
    assert {FIRMWARE_GHCB, ghcb_page(KERNEL_DATA, 0)} <= written
    assert written & ap_ghcbs == (ap_ghcbs if form == "ghcb" else set()), sorted(map(hex, written))


@cocotb.test(**TIMEOUT)
@v2
async def test_kexec_v2(dut):
    """kexec with protocol 2: every AP of kernel 1 parks in the MSR hold in the jump table page;
    kernel 2 takes over kernel 1's pages, points the table at its trampoline and wakes them all;
    no hypervisor write lands in memory kernel 2 owns."""
    report = await run_scenario(dut, "kexec-sev-es-v2", ScenarioOptions())
    assert report["passed"], report["failures"]
    ids = [c["cpu"] for c in report["timeline"]]
    kernel1, kernel2 = report["kernels"]
    assert kernel1["online"] == ids and kernel2["online"] == ids and kernel2["stranded"] == []
    assert report["kexec"] == "ok" and report["corruptions"] == []
    for cpu in report["timeline"][1:]:
        events = notes(cpu)
        assert "stop_this_cpu: to the AP jump table's parking code" in events
        assert events.count("online") == 2


@cocotb.test(**TIMEOUT)
@v1
async def test_kexec_v1_refused(dut):
    """Protocol 1: kexec is refused with a message (the SEV-ES kexec series, docs/spec/ghcb.md §5); kernel 1
    keeps running with every CPU."""
    report = await run_scenario(dut, "kexec-sev-es-v1", ScenarioOptions())
    assert report["passed"], report["failures"]
    assert report["kexec"].startswith("kexec refused: SEV-ES guest on GHCB protocol version 1")
    (kernel1,) = report["kernels"]
    assert kernel1["online"] == [c["cpu"] for c in report["timeline"]]


@cocotb.test(**TIMEOUT)
@v1
async def test_kexec_v1_forced_corrupts_kernel2(dut):
    """Forced past the refusal: each AP parks in a GHCB-page hold in kernel 1's memory; kernel 2's
    INIT-SIPI makes the hypervisor write SW_EXITINFO1/2 and the valid bitmap into what is now
    kernel 2's page, and the AP wakes in kernel 1's stale code; every corrupted address and its
    owner are reported, and kernel 2 has only the BSP."""
    report = await run_scenario(dut, "kexec-sev-es-v1", ScenarioOptions(
        force_kexec=True, callin_timeout_us=200_000))
    assert not report["passed"]
    ids = [c["cpu"] for c in report["timeline"]]
    kernel1, kernel2 = report["kernels"]
    assert kernel1["online"] == ids and kernel2["online"] == ids[:1]
    assert [s["cpu"] for s in kernel2["stranded"]] == ids[1:]
    assert all("kernel 1's sev_es_ap_hlt_loop" in s["reason"] for s in kernel2["stranded"])
    corrupted = report["corruptions"]
    assert corrupted and all(c["owner"] == "kernel 2" and c["writer"] == "hypervisor" for c in corrupted)
    pages = {c["address"] & ~0xFFF for c in corrupted}
    assert len(pages) == len(ids) - 1, "one GHCB page per parked AP"
    offsets = {c["address"] & 0xFFF for c in corrupted}
    replied = {GHCB_OFFSETS[name] for name in ("sw_exit_info_1", "sw_exit_info_2", "valid_bitmap")}
    assert replied <= offsets, sorted(hex(o) for o in offsets)
    stale = [f for f in report["failures"] if "stale code" in f["message"]]
    assert sorted(f["cpu"] for f in stale) == ids[1:]
