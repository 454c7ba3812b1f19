"""SEV-ES and SEV-SNP scenarios on the APIC fabric with the GHCB MSR unit (docs/spec/ghcb.md §2-§6)."""

import cocotb

from apwake.rtl.ghcb_msr.layouts import GHCB_OFFSETS, ApCreationOp, VcpuState
from apwake.sim.models.cpu.model import MpState
from apwake.sim.models.cpu.linux import KERNEL2_DATA, KERNEL_DATA, TRAMPOLINE
from apwake.sim.models.cpu.sev import FIRMWARE_GHCB, VMSA_POOL, SnpKernel, ghcb_page
from apwake.sim.vip.ghcb_msr.design import SevSystemConfig
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario, start_machine
from apwake.sim.scenarios.sev import boot_snp

TIMEOUT = dict(timeout_time=30, timeout_unit="ms")
sev_es = applies_to(lambda c: not c.snp)
v2 = applies_to(lambda c: c.max_version >= 2 and not c.snp)
v1 = applies_to(lambda c: c.max_version == 1)
snp = applies_to(lambda c: c.snp)


def notes(cpu):
    return [e[2] for e in cpu["events"]]


@cocotb.test(**TIMEOUT)
@sev_es
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
@sev_es
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


# --- SEV-SNP: AP Creation (docs/spec/ghcb.md §6) ----------------------------------------------------------
#: a fresh AP's VMSA as Linux fills it (wakeup_cpu_via_vmgexit), as the CPU started from it
_SNP_CS = {"selector": TRAMPOLINE >> 4, "base": TRAMPOLINE, "limit": 0xFFFF, "attrib": 0x9A}
_SNP_DATA = {"selector": 0, "base": 0, "limit": 0xFFFF, "attrib": 0x92}


def check_snp_start(cpu, vmsa, pool):
    """``cpu`` (a timeline row) last started from ``vmsa``, a VMSA page as Linux allocates it in
    the kernel's pool, in the state Linux puts there: real mode at the trampoline."""
    assert vmsa is not None and pool <= vmsa < pool + (64 << 20), hex(vmsa or 0)
    assert vmsa % 0x2000 == 0x1000 and vmsa % (2 << 20), f"{vmsa:#x}: not an 8 KiB allocation's second page"
    started = cpu["started"]
    assert started["by"] == f"SNP AP Creation (VMSA at {vmsa:#x})", started["by"]
    state = started["state"]
    assert (state["mode"], state["cr0"], state["efer"], state["rflags"], state["rip"]) == (
        "real", 0x6000_0010, 0x1000, 0x2, 0), state
    assert state["cs"] == _SNP_CS
    assert all(state[name] == _SNP_DATA for name in ("ds", "es", "fs", "gs", "ss")), state
    assert state["gdtr"] == state["idtr"] == {"base": 0, "limit": 0xFFFF}
    assert cpu["entry"] is None, "a SIPI started it"


@cocotb.test(**TIMEOUT)
@snp
async def test_snp_boot(dut):
    """Every AP started with AP Creation: one CREATE each, answered (0, 0), with a VMSA in the
    second page of an 8 KiB allocation; each AP started from it (``started`` in the report:
    real mode at the trampoline, as Linux fills the VMSA) and came online.  No INIT and no SIPI
    on the APIC bus, no AP jump table, no launch of a launch VMSA."""
    config = SevSystemConfig.from_env()
    report = await run_scenario(dut, "snp-boot", ScenarioOptions())
    assert report["passed"], report["failures"]
    ids = [c["cpu"] for c in report["timeline"]]
    assert sorted(report["online"]) == sorted(ids) and len(ids) == config.n_cpus
    assert report["method"] == "snp" and report["jump_table"] is None and report["ghcb_version"] == 2
    assert report["hv_features"] == 0x3
    modes = report["bus_messages_by_mode"]
    assert "INIT" not in modes and "STARTUP" not in modes, modes
    assert [(o["op"], o["cpu"], o["reply"]) for o in report["ap_creation"]] == [
        ("CREATE", apic_id, [0, 0]) for apic_id in ids[1:]]
    for cpu in report["timeline"][1:]:
        check_snp_start(cpu, report["vmsa"][str(cpu["cpu"])], KERNEL_DATA + VMSA_POOL)
        events = notes(cpu)
        assert not any("SIPI" in e for e in events), events
        assert events.count("online") == 1
    assert report["corruptions"] == []
    for k in range(config.n_cpus):
        assert int(getattr(dut, f"vcpu__{k}__state").value) == VcpuState.RUNNABLE.value
    assert int(dut.ghcb_term.value) == 0


@cocotb.test(**TIMEOUT)
@snp
async def test_kexec_snp(dut):
    """Mainline SNP kexec: kernel 1's APs halt and are destroyed (one DESTROY each, (0, 0)), kernel
    2 takes kernel 1's pages and creates every AP anew from a VMSA in its own pool; all online in
    both kernels, no hypervisor write into memory kernel 2 owns, no jump table, no AP reset
    hold, no INIT or SIPI."""
    report = await run_scenario(dut, "kexec-snp", ScenarioOptions())
    assert report["passed"], report["failures"]
    ids = [c["cpu"] for c in report["timeline"]]
    kernel1, kernel2 = report["kernels"]
    assert kernel1["online"] == ids and kernel2["online"] == ids and kernel2["stranded"] == []
    assert report["kexec"] == "ok" and report["corruptions"] == [] and report["jump_table"] is None
    assert [(o["op"], o["cpu"], o["reply"]) for o in report["destroyed"]] == [
        ("DESTROY", apic_id, [0, 0]) for apic_id in ids[1:]]
    assert [(o["op"], o["cpu"], o["reply"]) for o in report["ap_creation"]] == [
        ("CREATE", apic_id, [0, 0]) for apic_id in ids[1:]]
    modes = report["bus_messages_by_mode"]
    assert "INIT" not in modes and "STARTUP" not in modes, modes
    for cpu in report["timeline"][1:]:
        check_snp_start(cpu, report["vmsa"][str(cpu["cpu"])], KERNEL2_DATA + VMSA_POOL)
        events = notes(cpu)
        assert events.count("online") == 2 and "stop_this_cpu: cli; hlt (no way back to firmware)" in events
        assert events.count("hypervisor: AP Creation, VMSA dropped") >= 1
        assert "hypervisor: AP_RESET_HOLD" not in events


class ApicProbeKernel(SnpKernel):
    """An SNP kernel whose APs read, first thing in start_secondary (before setup_local_APIC
    rewrites them), the local APIC registers an earlier start left: ``found[apic_id]``, one dict
    per start."""

    PROBED = ("TPR", "SVR", "LVT_LINT0", "LVT_ERROR")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.found = {}

    async def start_secondary(self, cpu):
        self.found.setdefault(cpu.apic_id, []).append(
            {name: await cpu.apic.read(name) for name in self.PROBED})
        await super().start_secondary(cpu)


@cocotb.test(**TIMEOUT)
@snp
async def test_apic_survives_ap_creation(dut):
    """An AP programs its local APIC (Linux's setup_local_APIC, then TPR 0x50 of its own), goes
    offline, is destroyed (DESTROY) and created again (CREATE): starting from the new VMSA it
    reads back every value it left, as the GHCB unit never touches an APIC (mainline KVM resets
    the APIC at this point, kvm_vcpu_reset(vcpu, true): COCONUT-SVSM issue #378)."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    kernel = await boot_snp(machine, options, kernel_class=ApicProbeKernel)
    bsp, ap = machine.bsp, machine.cpus[1 if machine.cpus[0].is_bsp else 0]
    n = kernel.cpuid_to_apicid.index(ap.apic_id)
    assert kernel.found[ap.apic_id] == [{"TPR": 0, "SVR": 0xFF, "LVT_LINT0": 0x1_0000,
                                         "LVT_ERROR": 0x1_0000}]          # reset values
    await ap.apic.write("TPR", 0x50)                      # the AP's own write, while it idles
    left = {name: await ap.apic.read(name) for name in ApicProbeKernel.PROBED}
    assert left["TPR"] == 0x50 and left["SVR"] & 0x100, left
    assert await kernel.cpu_down(bsp, n) is None
    old = kernel.vmsa[n]
    assert await kernel.vmgexit_ap_control(bsp, ApCreationOp.DESTROY, old, ap.apic_id) is None
    await bsp.wait_until(lambda: ap.vcpu.state is VcpuState.HALTED, timeout_ns=100_000,
                         what="the destroyed AP HALTED")
    assert await kernel.cpu_up(bsp, n) is None
    assert kernel.vmsa[n] != old and ap.started["by"] == f"SNP AP Creation (VMSA at {kernel.vmsa[n]:#x})"
    assert kernel.found[ap.apic_id][1] == left, (kernel.found[ap.apic_id], left)
    assert machine.failures == []


@cocotb.test(**TIMEOUT)
@snp
async def test_2mib_aligned_vmsa_refused(dut):
    """A kernel without Linux's 8 KiB VMSA allocation hands the first AP a VMSA page on a 2 MiB
    boundary: the hypervisor refuses it with (2, 5) (the RMP erratum, KVM sev_snp_ap_creation),
    that AP never starts and the kernel reports it; the others come online."""
    options = ScenarioOptions(callin_timeout_us=100_000)
    machine = await start_machine(dut, options)
    kernel = await boot_snp(machine, options, vmsa_workaround=False)
    first, *rest = kernel.ap_creation
    assert first["vmsa"] % (2 << 20) == 0 and first["reply"] == [2, 5], first
    assert rest and all(o["reply"] == [0, 0] for o in rest), "needs a second AP, created after the refusal"
    refused = machine.cpus[[c.apic_id for c in machine.cpus].index(first["cpu"])]
    assert refused.started is None and refused.vcpu.state is VcpuState.UNINITIALIZED
    assert [f["cpu"] for f in machine.failures] == [first["cpu"]]
    assert "SNP AP CREATE error" in machine.failures[0]["message"]
    assert kernel.online_apic_ids() == [c.apic_id for c in machine.cpus if c is not refused]
