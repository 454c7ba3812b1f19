"""TDX host initialisation (seed 003) on the APIC fabric: VMXON and TDH.SYS.LP.INIT on every CPU
through call-function IPIs in the RTL, the module's ordering rules, SEAMCALL without VMXON,
tdx_cpu_enable() with interrupts on, CPU hotplug, and INIT blocked in VMX root operation.

The rows of docs/SCENARIOS.md "TDX host"; the IPI counts are checked against the messages the
fabric's monitor saw on the bus, not only against the kernel's own count.
"""

import cocotb

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.sim.models.tdx.abi import (TDX_SEAMCALL_GP, TDX_SEAMCALL_UD,
                                       TDX_SEAMCALL_VMFAILINVALID, Status)
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario, start_machine
from apwake.sim.scenarios.tdx_host import boot_host
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.design import FabricConfig

TIMEOUT = dict(timeout_time=100, timeout_unit="ms")


def n_cpus():
    return FabricConfig.from_env().n_cpus


def fixed_messages(report):
    return report["bus_messages_by_mode"].get("FIXED", 0)


def leaf_calls(tdx, leaf):
    return [s for s in tdx["seamcalls"] if s["leaf"] == leaf]


def assert_ready(report):
    """Every online CPU in VMX root with its LP initialised (module and per-CPU flag), the
    module ready, and every IPI the kernel counted seen once on the bus."""
    assert report["passed"], report["failures"]
    tdx = report["tdx_host"]
    online = sorted(report["online"])
    assert online == sorted(c["cpu"] for c in report["timeline"])
    assert tdx["module_status"] == "initialized" and tdx["module"]["ready"]
    assert tdx["module"]["lp_initialized"] == tdx["lp_initialized_flag"] == online
    assert tdx["vmx_root"] == online
    assert tdx["ipis_total"] == fixed_messages(report), (tdx["ipis"], report["bus_messages_by_mode"])
    assert tdx["warnings"] == [] and tdx["log"][-1] == "virt/tdx: module initialized"


@cocotb.test(**TIMEOUT)
async def test_init_two_rounds(dut):
    """on_each_cpu(VMXON), on_each_cpu(tdx_cpu_enable), tdx_enable(): each round and WBINVD one
    all-but-self IPI (every present CPU booted: Linux's shorthand) that every other CPU accepts,
    one kworker wake-up for TDH.SYS.KEY.CONFIG on the other package; TDH.SYS.INIT exactly once;
    the PAMT initialised in 4 MiB steps."""
    n = n_cpus()
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(rounds=2))
    assert_ready(report)
    tdx = report["tdx_host"]
    assert tdx["ipis"] == {"VMXON": 1, "tdx_cpu_enable": 1, "WBINVD": 1, "reschedule": 1}
    assert tdx["enable_ipis"] == 2
    assert tdx["ipi_deliveries"] == 3 * (n - 1) + 1
    assert len(leaf_calls(tdx, "TDH_SYS_INIT")) == 1
    assert sorted(s["cpu"] for s in leaf_calls(tdx, "TDH_SYS_LP_INIT")) == list(range(n))
    assert len(leaf_calls(tdx, "TDH_SYS_KEY_CONFIG")) == 2          # one CPU of each package
    assert len(leaf_calls(tdx, "TDH_SYS_TDMR_INIT")) == (1 << 30) // (4 << 20)
    assert all(s["status"] == Status.TDX_SUCCESS for s in tdx["seamcalls"])


@cocotb.test(**TIMEOUT)
async def test_init_one_round(dut):
    """VMXON and tdx_cpu_enable() in one IPI round: half the enabling IPIs (and interrupts) of
    two rounds, the same end state."""
    n = n_cpus()
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(rounds=1))
    assert_ready(report)
    tdx = report["tdx_host"]
    assert tdx["ipis"] == {"VMXON + tdx_cpu_enable": 1, "WBINVD": 1, "reschedule": 1}
    assert tdx["enable_ipis"] == 1
    assert tdx["ipi_deliveries"] == 2 * (n - 1) + 1


def package_rule_failure(report, package):
    """Relaxed rule, but ``package`` has no online CPU: TDH.SYS.KEY.CONFIG never ran there, so
    the module never becomes ready and TDH.SYS.TDMR.INIT is refused with TDX_SYS_NOT_READY."""
    tdx = report["tdx_host"]
    assert not report["passed"] and tdx["result"] == "-EIO"
    assert tdx["module"]["state"] == "SYSCONFIG_DONE" and package not in tdx["module"]["packages_configured"]
    assert [s["status"] for s in leaf_calls(tdx, "TDH_SYS_TDMR_INIT")] == [Status.TDX_SYS_NOT_READY]
    (failure,) = report["failures"]
    assert f"packages with no online CPU, never key-configured: {package}" in failure["message"]


def smt_off(n):
    """SMT off: the default topology has SMT pairs on a multiple of 4 CPUs; 2 CPUs are made one
    core of two threads."""
    return {"smt": "off"} if n % 4 == 0 else {"smt": "off", "topology": "1x1x2"}


def one_package(n):
    """The hotplug runs' topology: on 2 CPUs one package of two cores, so that the AP taken
    offline leaves its package a CPU (on 8, the default two packages of four)."""
    return {} if n > 2 else {"topology": "1x2x1"}


@cocotb.test(**TIMEOUT)
async def test_strict_rule_with_cpus_offline(dut):
    """Under the strict rule TDH.SYS.CONFIG is refused (TDX_SYS_CONFIG_NOT_PENDING, -EIO) while
    present CPUs that are offline never ran TDH.SYS.LP.INIT; the failure names them."""
    n = n_cpus()
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(tdx_rule="strict", **smt_off(n)))
    tdx = report["tdx_host"]
    assert not report["passed"] and tdx["result"] == "-EIO" and tdx["module_status"] == "error"
    never = [c["cpu"] for c in report["timeline"] if c["cpu"] not in report["online"]]
    assert never and tdx["module"]["uninitialized_lps"] == never
    config = leaf_calls(tdx, "TDH_SYS_CONFIG")
    assert [c["status"] for c in config] == [Status.TDX_SYS_CONFIG_NOT_PENDING]
    (failure,) = report["failures"]
    assert "SEAMCALL (0x000000000000002d) failed: 0xc000050c00000000" in failure["message"]
    assert f"APIC IDs {', '.join(hex(a) for a in never)}" in failure["message"]
    assert leaf_calls(tdx, "TDH_SYS_TDMR_INIT") == []


@cocotb.test(**TIMEOUT)
async def test_relaxed_rule_with_cpus_offline(dut):
    """Under the relaxed rule the same machine enables TDX; SMT siblings onlined afterwards run
    TDH.SYS.LP.INIT in TDX's online callback, after the module became ready."""
    n = n_cpus()
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(**smt_off(n)))
    assert_siblings_online_late(report, n)


def assert_siblings_online_late(report, n):
    assert_ready(report)
    tdx = report["tdx_host"]
    siblings = tdx["smt_siblings"]
    assert siblings == [a for a in range(n) if a % 2] and len(tdx["onlined_after_enable"]) == len(siblings)
    calls = tdx["seamcalls"]
    ready = max(i for i, s in enumerate(calls) if s["leaf"] == "TDH_SYS_TDMR_INIT")
    late = [s["cpu"] for s in calls[ready + 1:] if s["leaf"] == "TDH_SYS_LP_INIT"]
    assert late == siblings
    ups = [h for h in tdx["hotplug"] if h["op"] == "cpu_up"]
    assert [h["result"] for h in ups] == ["ok"] * len(siblings)
    assert [h["callbacks"][0] for h in ups] == [{"state": "tdx:online", "direction": "startup",
                                                 "result": "0"}] * len(siblings)


@cocotb.test(**TIMEOUT)
async def test_parallel_bringup_and_online(dut):
    """The host booted by Linux 6.5's parallel bring-up: SMT siblings offline, TDX enabled, the
    siblings onlined again through the parallel release (ALIVE, SHOULD_ONLINE)."""
    n = n_cpus()
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(method="parallel", **smt_off(n)))
    assert report["method"] == "parallel"
    assert_siblings_online_late(report, n)


@cocotb.test(**TIMEOUT)
async def test_package_without_an_online_cpu(dut):
    """Relaxed rule, but the second package has no online CPU (nr_cpus = half): the module
    never becomes ready, and the failure names the package."""
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(nr_cpus=n_cpus() // 2))
    package_rule_failure(report, 1)


@cocotb.test(**TIMEOUT)
async def test_no_module_loaded(dut):
    """A SEAM range with no module: TDH.SYS.INIT fails VMfailInvalid (TDX_SEAMCALL_VMFAILINVALID),
    -ENODEV with Linux's "module not loaded", on every CPU (the cached global result)."""
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(tdx_module="none"))
    tdx = report["tdx_host"]
    assert not report["passed"] and tdx["result"] == "-ENODEV" and tdx["module"] is None
    assert [(s["leaf"], s["status"]) for s in tdx["seamcalls"]] == [("TDH_SYS_INIT", TDX_SEAMCALL_VMFAILINVALID)]
    assert "virt/tdx: module not loaded" in tdx["log"]
    assert tdx["module_status"] == "uninitialized"           # tdx_enable() never ran


@cocotb.test(**TIMEOUT)
async def test_tdx_disabled_by_bios(dut):
    """TDX not enabled by the BIOS: SEAMCALL raises #GP, TDX_SW_ERROR | 13, -EOPNOTSUPP."""
    report = await run_scenario(dut, "tdx-host-init", ScenarioOptions(tdx_module="bios-disabled"))
    tdx = report["tdx_host"]
    assert not report["passed"] and tdx["result"] == "-EOPNOTSUPP"
    assert [(s["leaf"], s["status"]) for s in tdx["seamcalls"]] == [("TDH_SYS_INIT", TDX_SEAMCALL_GP)]
    assert TDX_SEAMCALL_GP == 0x8000_FF00_0000_000D


@cocotb.test(**TIMEOUT)
async def test_seamcall_without_vmxon(dut):
    """tdx_cpu_enable() on every CPU before VMXON: the first SEAMCALL (TDH.SYS.INIT) raises #UD,
    returned as TDX_SW_ERROR | 6 and mapped to -EACCES, cached for every CPU; the module is never
    reached."""
    report = await run_scenario(dut, "tdx-host-no-vmxon", ScenarioOptions())
    tdx = report["tdx_host"]
    assert not report["passed"]
    assert [(s["leaf"], s["status"]) for s in tdx["seamcalls"]] == [("TDH_SYS_INIT", TDX_SEAMCALL_UD)]
    assert TDX_SEAMCALL_UD == 0x8000_FF00_0000_0006
    assert set(tdx["results"].values()) == {"-EACCES"} and len(tdx["results"]) == n_cpus()
    assert tdx["module"]["state"] == "SYSINIT_PENDING" and tdx["module"]["lp_initialized"] == []
    assert len(report["failures"]) == n_cpus()
    assert all("0x8000ff0000000006, TDX_SEAMCALL_UD" in f["message"] for f in report["failures"])


@cocotb.test(**TIMEOUT)
async def test_tdx_cpu_enable_with_interrupts_on(dut):
    """tdx_cpu_enable() from a kworker (interrupts on) on each AP: lockdep_assert_irqs_disabled()
    is a WARN_ON_ONCE, so Linux warns on the first AP only, once in tdx_cpu_enable and once in
    try_init_module_global; every call goes on and initialises its LP."""
    report = await run_scenario(dut, "tdx-host-irqs-on", ScenarioOptions())
    tdx = report["tdx_host"]
    aps = [c["cpu"] for c in report["timeline"] if not c["bsp"]]
    assert not report["passed"]
    assert [(w["cpu"], w["message"].split(":")[0]) for w in tdx["warnings"]] == [
        (aps[0], "at arch/x86/virt/vmx/tdx/tdx.c tdx_cpu_enable"),
        (aps[0], "at arch/x86/virt/vmx/tdx/tdx.c try_init_module_global")]
    assert [f["cpu"] for f in report["failures"]] == [aps[0], aps[0]]
    assert all("lockdep_assert_irqs_disabled(): interrupts enabled" in f["message"] for f in report["failures"])
    assert [c["cpu"] for c in tdx["irqs_on_calls"] if c["function"] == "tdx_cpu_enable"] == aps
    assert tdx["module"]["lp_initialized"] == aps and set(tdx["results"].values()) == {"0"}
    assert tdx["ipis"]["reschedule"] == len(aps)


@cocotb.test(**TIMEOUT)
async def test_hotplug_tdx_callback_first(dut):
    """TDX enabled with the last AP offline; onlined afterwards, TDX's callback (VMXON,
    LP.INIT, VMXOFF) runs before KVM's (VMXON, SEAMCALL): the CPU comes up ready."""
    report = await run_scenario(dut, "tdx-host-hotplug", ScenarioOptions(**one_package(n_cpus())))
    assert_ready(report)
    tdx = report["tdx_host"]
    last = n_cpus() - 1
    (up,) = [h for h in tdx["hotplug"] if h["op"] == "cpu_up"]
    assert up["apic_id"] == last and up["result"] == "ok"
    assert [c["state"] for c in up["callbacks"]] == ["tdx:online", "kvm:online"]
    mine = [(s["leaf"], s["name"]) for s in tdx["seamcalls"] if s["cpu"] == last]
    assert mine == [("TDH_SYS_LP_INIT", "TDX_SUCCESS"), ("TDH_SYS_RD", "TDX_SUCCESS")]


@cocotb.test(**TIMEOUT)
async def test_hotplug_kvm_callback_first(dut):
    """KVM's callback first: its first SEAMCALL on the new CPU fails with
    TDX_SYS_LP_INIT_NOT_DONE, the online is rolled back and the CPU stays offline, out of VMX
    operation; the failure names it."""
    report = await run_scenario(dut, "tdx-host-hotplug",
                                ScenarioOptions(hotplug_order="kvm-first", **one_package(n_cpus())))
    tdx = report["tdx_host"]
    last = n_cpus() - 1
    assert not report["passed"] and last not in report["online"]
    (up,) = [h for h in tdx["hotplug"] if h["op"] == "cpu_up"]
    assert up["callbacks"] == [{"state": "kvm:online", "direction": "startup", "result": "-EIO"}]
    mine = [(s["leaf"], s["status"]) for s in tdx["seamcalls"] if s["cpu"] == last]
    assert mine == [("TDH_SYS_RD", Status.TDX_SYS_LP_INIT_NOT_DONE)]
    assert last not in tdx["vmx_root"]
    assert [f["cpu"] for f in report["failures"]] == [last]


@cocotb.test(**TIMEOUT)
async def test_hotplug_strict_rule(dut):
    """Under the strict rule TDX cannot be enabled while that AP is offline."""
    report = await run_scenario(dut, "tdx-host-hotplug", ScenarioOptions(tdx_rule="strict", **one_package(n_cpus())))
    tdx = report["tdx_host"]
    assert not report["passed"] and tdx["result"] == "-EIO"
    assert tdx["module"]["uninitialized_lps"] == [n_cpus() - 1]


@cocotb.test(**TIMEOUT)
async def test_offline_last_cpu_of_a_package(dut):
    """With a TD holding a KeyID, the last online CPU of the last package may not go offline
    (-EBUSY and KVM's message); the others of its package may.  Without a TD it goes."""
    report = await run_scenario(dut, "tdx-host-offline-last", ScenarioOptions())
    assert report["passed"], report["failures"]
    tdx = report["tdx_host"]
    rounds = tdx["offline"]
    assert [r["result"] for r in rounds[:-1]] == ["ok"] * (len(rounds) - 1)
    assert rounds[-1]["result"] == "tdx:online teardown on CPU %d failed: -EBUSY" % (n_cpus() - 1)
    assert rounds[-1]["cpu"] in report["online"]
    # the refusal rolls back: KVM's state, already torn down (VMXOFF), is set up again
    refused = tdx["hotplug"][-1]
    assert refused["callbacks"] == [
        {"state": "kvm:online", "direction": "teardown", "result": "0"},
        {"state": "tdx:online", "direction": "teardown", "result": "-EBUSY"},
        {"state": "kvm:online", "direction": "rollback", "result": "0"}]
    assert rounds[-1]["cpu"] in tdx["vmx_root"]
    assert "TDX requires all packages to have an online CPU" in tdx["log"][-1]


@cocotb.test(**TIMEOUT)
async def test_offline_last_cpu_without_td(dut):
    report = await run_scenario(dut, "tdx-host-offline-last", ScenarioOptions(no_td=True))
    assert report["passed"], report["failures"]
    assert all(r["result"] == "ok" for r in report["tdx_host"]["offline"])
    assert report["tdx_host"]["offline"][-1]["cpu"] not in report["online"]


@cocotb.test(**TIMEOUT)
async def test_init_blocked_in_vmx_root(dut):
    """An INIT IPI to a CPU in VMX root operation stays pending in its APIC; the CPU keeps
    running until VMXOFF, then takes the INIT and waits for SIPI (SDM vol. 3C §24.8)."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    kernel, host, _, _ = await boot_host(machine, options)
    bsp, ap = machine.bsp, machine.cpus[1]
    assert await host.kvm_enable_virtualization(bsp) == 0 and ap.vmx.root
    await bsp.apic.send_ipi(make_icr(0, DeliveryMode.INIT, dest=ap.apic_id))
    await bsp.apic.wait_idle()
    await ap.wait_until(lambda: ap.init_latched, timeout_ns=5_000, what="the INIT held pending")
    assert ap.status == "HALTED" and ap.where == "idle (hlt loop)"
    assert any("INIT blocked (VMX root operation)" in note for _, _, note in ap.history)
    assert await kernel.smp_call_on_cpu(bsp, 1, host.vmx_hardware_disable, "VMXOFF") == 0
    await ap.wait_until(lambda: ap.status == "INIT_RECEIVED", timeout_ns=5_000, what="the INIT taken at VMXOFF")
    assert ap.where == "wait-for-SIPI" and not ap.vmx.root
