"""TDX host scenarios (seed 003): a Linux host boots its CPUs over the APIC fabric, KVM turns VMX
on everywhere and initialises the TDX module on every CPU with call-function IPIs through the
RTL, and CPU hotplug keeps every online CPU able to call the module.

The host kernel is :class:`apwake.sim.models.cpu.tdx_host.TdxHost` on the Linux model; the
module is :class:`apwake.sim.models.tdx.module.TdxModule`.  Packages come from ``--topology``
(Linux splits the APIC ID into package, core and thread the same way); without it the CPUs are
split into two packages of contiguous IDs, with SMT pairs when the count is a multiple of 4.
docs/SCENARIOS.md "TDX host" maps each scenario to the thread's points.
"""

from dataclasses import replace

from apwake.sim.models.cpu.linux import BootMethod, errno_text
from apwake.sim.models.cpu.tdx_host import HOTPLUG_ORDERS, TdxHost
from apwake.sim.models.cpu.vmx import SeamPlatform
from apwake.sim.models.tdx.abi import Errno
from apwake.sim.models.tdx.module import Rule, TdxModule
from apwake.sim.models.topology import Topology, parse_topology
from .boot import FABRIC_BOOT_OPTIONS, boot, boot_detail
from .options import METHOD, Option, OptionError
from .registry import scenario

__all__ = ["host_topology", "boot_host"]

HOST_METHOD = replace(METHOD, help="how the host brings its APs up: INIT-SIPI-SIPI one "
                      "by one (modern or legacy timing) or Linux 6.5's parallel bring-up",
                      choices=("modern", "legacy", "parallel"))
ROUNDS = Option("rounds", int, 2, "IPI rounds for VMXON and TDH.SYS.LP.INIT on every CPU: 2 "
                "(on_each_cpu VMXON, then on_each_cpu tdx_cpu_enable) or 1 (both in one IPI)",
                choices=(1, 2), metavar="R")
TDX_RULE = Option("tdx_rule", str, "relaxed", "the TDX module's rule for TDH.SYS.LP.INIT: strict "
                  "(every present CPU before TDH.SYS.CONFIG, as in the published module source) "
                  "or relaxed (per CPU, any time after TDH.SYS.INIT)",
                  choices=tuple(r.value for r in Rule), metavar="RULE")
SMT = Option("smt", str, "on", "off: SMT siblings (odd thread numbers) are booted once and "
             "taken offline, as Linux's nosmt does; with the relaxed rule they are onlined again "
             "after TDX is enabled", choices=("on", "off"), metavar="ON|OFF")
TDX_MODULE = Option("tdx_module", str, "loaded", "none: the BIOS set up a SEAM range but no module "
                    "is loaded in it (SEAMCALL fails VMfailInvalid); bios-disabled: the BIOS did not "
                    "enable TDX (SEAMCALL raises #GP)", choices=("loaded", "none", "bios-disabled"),
                    metavar="STATE")
HOTPLUG_ORDER = Option("hotplug_order", str, "tdx-first", "the online callbacks' order: TDX's "
                       "(VMXON, TDH.SYS.LP.INIT, VMXOFF) before KVM's, as planned, or after it",
                       choices=HOTPLUG_ORDERS, metavar="ORDER")
NO_TD = Option("no_td", bool, False, "no TD holds a KeyID: the last CPU of a package may go offline")

#: the boot options of every host scenario (the fabric's INIT-SIPI boot, the host's method)
HOST_OPTIONS = (HOST_METHOD, TDX_RULE, TDX_MODULE) + FABRIC_BOOT_OPTIONS


def host_topology(apic_ids, text=None):
    """The :class:`Topology` the host's packages come from: ``text`` (``--topology``), or two
    packages of ``ceil(N / 2)`` CPUs' worth of core and thread IDs for the N ``apic_ids``, with
    SMT pairs when N is a multiple of 4 (one package for one CPU).  The package is the ID's
    bits above the core and thread fields (:meth:`Topology.split`), as Linux derives it, so
    with contiguous IDs the first package is the larger when the core count is not a power of
    two (6 CPUs: 4 and 2)."""
    if text is not None:
        return parse_topology(text)
    n = len(apic_ids)
    if n == 1:
        return Topology(1, 1, 1)
    threads = 2 if n % 4 == 0 else 1
    return Topology(2, -(-n // (2 * threads)), threads)


async def boot_host(machine, options):
    """Boot, set up the platform (the module in the SEAM range, or none) and the host; with
    ``--smt off`` take the SMT siblings offline again (Linux boots them once, then
    cpu_bootable() refuses them).  Returns ``(kernel, host, topology, siblings)``."""
    topology = host_topology([c.apic_id for c in machine.cpus], options.topology)

    def package_of(apic_id):
        return topology.split(apic_id)[0]
    module = None
    if options.tdx_module == "loaded":
        module = TdxModule({c.apic_id: package_of(c.apic_id) for c in machine.cpus}, rule=options.tdx_rule)
    machine.seam = SeamPlatform(module, bios_enabled=options.tdx_module != "bios-disabled")
    kernel = await boot(machine, options, BootMethod(options.method))
    host = TdxHost(kernel, package_of)
    siblings = []
    if options.smt == "off" and _smt_problem(topology):
        raise ValueError(_smt_problem(topology))
    if options.smt == "off":
        siblings = [n for n, a in enumerate(kernel.cpuid_to_apicid) if topology.split(a)[2] != 0]
        for n in siblings:
            error = await kernel.cpu_down(machine.bsp, n)
            if error:
                machine.fail(machine.bsp, f"nosmt: could not take CPU {n} offline: {error}")
        if siblings:
            machine.bsp.note(f"nosmt: {len(siblings)} SMT siblings booted once and offline")
    return kernel, host, topology, siblings


_ENABLE_PURPOSES = ("VMXON", "tdx_cpu_enable", "VMXON + tdx_cpu_enable")


async def _finish(machine, kernel, host, topology, **extra):
    """The report's detail once every IPI sent is on the bus: a wake-up IPI may still be in
    flight when its work already ran (the CPU was awake and found it queued)."""
    for apic_id in kernel.online_apic_ids():
        await kernel.lapic.wait_icr_idle(next(c for c in machine.cpus if c.apic_id == apic_id))
    # what the fabric delivered: an all-but-self IPI is one message that many APICs accept
    deliveries = sum(len(c.accept) for c in machine.env.monitor.cycles
                     if getattr(c.msg["delivery_mode"], "name", None) == "FIXED")
    return _detail(kernel, host, topology, ipi_deliveries=deliveries, **extra)


def _detail(kernel, host, topology, **extra):
    detail = boot_detail(kernel)
    detail["expected_online"] = kernel.online_apic_ids()
    summary = host.summary()
    # the IPIs that brought VMX and TDH.SYS.LP.INIT to the other CPUs (one or two rounds)
    enable = sum(n for purpose, n in summary["ipis"].items() if purpose in _ENABLE_PURPOSES)
    detail["tdx_host"] = {"topology": f"{topology.packages}x{topology.cores}x{topology.threads}",
                          **summary, "enable_ipis": enable, **extra}
    return detail


def _check_ready(machine, kernel, host, errno):
    """After a successful enable every online CPU has VMX on and its LP initialised, and the
    module is ready; otherwise the failure names the error and the CPUs the module never saw."""
    bsp = machine.bsp
    module = machine.seam.module
    if errno:
        never = module.uninitialized_lps() if module else []
        offline = [a for a in never if a not in kernel.online_apic_ids()]
        unregistered = [a for a in offline if a not in kernel.cpuid_to_apicid]
        unconfigured = [p for p in module.packages if p not in module.packages_configured] if (
            module and module.state.value == "SYSCONFIG_DONE") else []
        last = host.log[-2:] if host.log else []
        machine.fail(bsp, f"TDX enabling failed: {errno_text(errno)} ({'; '.join(last)})"
                     + (f"; present CPUs that never ran TDH.SYS.LP.INIT: APIC IDs "
                        f"{', '.join(hex(a) for a in never)}" if never else "")
                     + (f" ({len(offline)} of them not online" if offline else "")
                     + (f", {len(unregistered)} beyond nr_cpus" if unregistered else "")
                     + (")" if offline else "")
                     + (f"; packages with no online CPU, never key-configured: "
                        f"{', '.join(map(str, unconfigured))}" if unconfigured else ""))
        return
    for apic_id in kernel.online_apic_ids():
        cpu = next(c for c in machine.cpus if c.apic_id == apic_id)
        if not cpu.vmx.root or apic_id not in module.lp_initialized:
            machine.fail(cpu, f"{cpu.name}: online after TDX enabling but "
                              f"{'not in VMX operation' if not cpu.vmx.root else 'TDH.SYS.LP.INIT never ran'}")
    if not module.ready:
        machine.fail(bsp, f"the TDX module is not ready after tdx_enable() returned 0 ({module.state.value})")


async def _enable(machine, kernel, host, *, order="tdx-first", rounds=2):
    """Register the hotplug callbacks in ``order``, run KVM's TDX bring-up from the BSP and check
    the result (:func:`_check_ready`); returns its errno."""
    host.register_hotplug(order)
    errno = await host.bringup(machine.bsp, rounds=rounds)
    _check_ready(machine, kernel, host, errno)
    return errno


def _check_smt(values):
    """``--smt off`` needs SMT siblings in the topology the run will have."""
    if values.get("smt") != "off":
        return
    ids = values.get("apic_ids") or list(range(values.get("cpus", 8)))
    problem = _smt_problem(host_topology(ids, values.get("topology")))
    if problem:
        raise OptionError(problem)


def _smt_problem(topology):
    if topology.threads > 1:
        return None
    return (f"--smt off needs SMT siblings, but the topology {topology.packages}x{topology.cores}x1 "
            f"has one thread per core: give --topology PxCxT with T >= 2, or a multiple of 4 CPUs")


@scenario("tdx-host-init", "a TDX host: boot, KVM turns VMX on on every online CPU and runs "
                           "tdx_cpu_enable() on each through call-function IPIs (--rounds 2, "
                           "or 1 doing both), then tdx_enable() under the hotplug lock; the "
                           "report counts the IPIs.  With --smt off or --nr-cpus K the strict "
                           "module rule fails and names the present CPUs that never ran "
                           "TDH.SYS.LP.INIT; the relaxed rule succeeds, and the SMT siblings "
                           "onlined afterwards run it at online",
          options=(ROUNDS, SMT) + HOST_OPTIONS, check=_check_smt)
async def tdx_host_init(machine, options):
    kernel, host, topology, siblings = await boot_host(machine, options)
    errno = await _enable(machine, kernel, host, rounds=options.rounds)
    onlined = []
    if not errno and siblings:
        # echo on > /sys/devices/system/cpu/smt/control: the siblings come online now
        for n in siblings:
            result = await kernel.cpu_up(machine.bsp, n)
            onlined.append({"cpu": kernel.cpuid_to_apicid[n], "result": result or "ok"})
            if result:
                machine.fail(machine.bsp, f"SMT on: CPU {n} did not come online: {result}")
        _check_ready(machine, kernel, host, 0)
    return await _finish(machine, kernel, host, topology, result=errno_text(errno), rounds=options.rounds,
                   smt_siblings=[kernel.cpuid_to_apicid[n] for n in siblings],
                   onlined_after_enable=onlined)


@scenario("tdx-host-no-vmxon", "a TDX user calls tdx_cpu_enable() on every CPU before KVM turned "
                               "VMX on: each SEAMCALL raises #UD, which Linux's SEAMCALL wrapper "
                               "returns as TDX_SW_ERROR with trap 6 (TDX_SEAMCALL_UD), mapped to "
                               "-EACCES; the report shows the status",
          options=HOST_OPTIONS)
async def tdx_host_no_vmxon(machine, options):
    kernel, host, topology, _ = await boot_host(machine, options)
    results = await kernel.on_each_cpu(machine.bsp, host.tdx_cpu_enable, "tdx_cpu_enable")
    for n, errno in results.items():
        cpu = next(c for c in machine.cpus if c.apic_id == kernel.cpuid_to_apicid[n])
        if errno:
            machine.fail(cpu, f"{cpu.name}: tdx_cpu_enable() without VMXON: {errno_text(errno)}"
                              f" (SEAMCALL status {host.seamcalls[0]['status']:#018x}, "
                              f"{host.seamcalls[0]['name']})")
    return await _finish(machine, kernel, host, topology,
                   results={str(kernel.cpuid_to_apicid[n]): errno_text(e) for n, e in results.items()})


@scenario("tdx-host-irqs-on", "KVM turns VMX on everywhere, then another TDX user calls "
                              "tdx_cpu_enable() on each AP from process context (a kworker, "
                              "smp_call_on_cpu) with interrupts on: Linux's "
                              "lockdep_assert_irqs_disabled() is a WARN_ON_ONCE, so it warns on "
                              "the first AP (in tdx_cpu_enable and try_init_module_global), "
                              "naming it; the report lists every call made with interrupts on",
          options=HOST_OPTIONS)
async def tdx_host_irqs_on(machine, options):
    kernel, host, topology, _ = await boot_host(machine, options)
    bsp = machine.bsp
    await kernel.cpus_read_lock()
    errno = await host.kvm_enable_virtualization(bsp)
    results = {}
    if not errno:
        for n in kernel.online_cpus():
            if kernel.cpuid_to_apicid[n] != bsp.apic_id:
                result = await kernel.smp_call_on_cpu(bsp, n, host.tdx_cpu_enable, "tdx_cpu_enable (kworker)")
                results[n] = -Errno.ETIMEDOUT if result is None else result
    kernel.cpus_read_unlock()
    return await _finish(machine, kernel, host, topology, result=errno_text(errno),
                   results={str(kernel.cpuid_to_apicid[n]): errno_text(e) for n, e in results.items()})


@scenario("tdx-host-hotplug", "TDX enabled with one AP offline (the last whose package keeps a "
                              "CPU online), then that AP is "
                              "onlined: with TDX's online callback first (--hotplug-order "
                              "tdx-first) it runs TDH.SYS.LP.INIT and comes up ready; with KVM's "
                              "first, KVM's first SEAMCALL on it fails with "
                              "TDX_SYS_LP_INIT_NOT_DONE and the online is rolled back; under the "
                              "strict module rule TDX cannot be enabled with the AP offline",
          options=(HOTPLUG_ORDER,) + HOST_OPTIONS)
async def tdx_host_hotplug(machine, options):
    kernel, host, topology, _ = await boot_host(machine, options)
    bsp = machine.bsp
    aps = list(range(1, len(kernel.cpuid_to_apicid)))
    if not aps:
        raise ValueError("tdx-host-hotplug needs an AP: --cpus 2 or more")

    def shares_package(m):
        package = host.package_of(kernel.cpuid_to_apicid[m])
        return any(host.package_of(a) == package for k, a in enumerate(kernel.cpuid_to_apicid) if k != m)
    # the last AP whose package keeps an online CPU; else the last AP (its package then has
    # none, and TDH.SYS.KEY.CONFIG cannot run there: the enabling fails, as it would)
    n = next((m for m in reversed(aps) if shares_package(m)), aps[-1])
    down = await kernel.cpu_down(bsp, n)
    if down:
        machine.fail(bsp, f"could not take CPU {n} offline before TDX enabling: {down}")
    errno = await _enable(machine, kernel, host, order=options.hotplug_order)
    apic_id = kernel.cpuid_to_apicid[n]
    up = "not tried: TDX is not enabled" if errno else await kernel.cpu_up(bsp, n)
    if up and not errno:
        cpu = next(c for c in machine.cpus if c.apic_id == apic_id)
        machine.fail(cpu, f"{cpu.name}: cpu_up after TDX enabling: {up}")
    elif not errno:
        _check_ready(machine, kernel, host, 0)
    return await _finish(machine, kernel, host, topology, result=errno_text(errno), order=options.hotplug_order,
                   onlined={"cpu": apic_id, "result": up or "ok"})


@scenario("tdx-host-offline-last", "TDX enabled and a TD holding a KeyID: offlining the CPUs of "
                                   "the last package one by one is refused for its last online "
                                   "CPU (-EBUSY, \"TDX requires all packages to have an online "
                                   "CPU\"); with --no-td it is allowed",
          options=(NO_TD,) + HOST_OPTIONS)
async def tdx_host_offline_last(machine, options):
    kernel, host, topology, _ = await boot_host(machine, options)
    bsp = machine.bsp
    errno = await _enable(machine, kernel, host)
    if errno:
        return await _finish(machine, kernel, host, topology, result=errno_text(errno), offline=[])
    if not options.no_td:
        host.td_keyids.add(machine.seam.module.tdx_keyids.start + 1)     # a TD's private KeyID
    last_package = max(host.package_of(a) for a in kernel.cpuid_to_apicid)
    victims = [n for n in kernel.online_cpus()
               if host.package_of(kernel.cpuid_to_apicid[n]) == last_package
               and kernel.cpuid_to_apicid[n] != bsp.apic_id]
    rounds = []
    for n in victims:
        result = await kernel.cpu_down(bsp, n)
        rounds.append({"cpu": kernel.cpuid_to_apicid[n], "result": result or "ok"})
    refused = [r for r in rounds if r["result"] != "ok"]
    # with a TD: exactly the last one is refused; without: none
    wanted = rounds[-1:] if rounds and not options.no_td else []
    if refused != wanted:
        target = next(c for c in machine.cpus if c.apic_id == (rounds[-1]["cpu"] if rounds else bsp.apic_id))
        machine.fail(target, f"offlining package {last_package}'s CPUs "
                             f"{'with a TD holding a KeyID' if not options.no_td else 'with no TD'}: "
                             f"refused {refused}, expected {wanted}")
    return await _finish(machine, kernel, host, topology, result=errno_text(errno), package=last_package,
                   offline=rounds)
