"""INIT-SIPI bring-up scenarios on the APIC fabric with the CPU models.

Each scenario is an ``async def body(platform, options) -> dict`` registered under a name; the
dict is scenario-specific detail for the report.  :func:`run_scenario` sets up the platform,
runs the body under a watchdog and returns the report (:mod:`sim.scenarios.report`).
"""

import random
import time
from dataclasses import dataclass

import cocotb
from cocotb.triggers import First, SimTimeoutError, Timer, with_timeout

from ..cpu.lapic_setup import HZ
from ..cpu.linux import (CALL_FUNCTION_VECTOR, KERNEL2_DATA, KERNEL2_ENTRY, BootMethod, Firmware,
                         Kernel)
from ..memory import PAGE_SIZE, Owner
from ..cpu.platform import Platform
from ..cpu.smm import setup_smm
from ..lapic.env import FabricEnv
from ..mpwk.bfm import MailboxPorts
from ..ghcb.design import SevPlatformConfig
from ..mpwk.design import PlatformConfig
from .options import (BOOT_OPTIONS, KVM, MAILBOX_VERSION, METHOD, MODEL_RUN_OPTIONS,
                      UNRESPONSIVE, Option, ScenarioOptions)
from .report import make_report

__all__ = ["Scenario", "ScenarioOptions", "SCENARIOS", "run_scenario", "scenario", "boot",
           "start_platform", "report_corruptions"]


@dataclass
class Scenario:
    """A registered scenario.

    Attributes
    ----------
    name, description : str
    body : coroutine function or None
        ``async def body(platform, options) -> dict``; None for a scenario with a cocotb module
        of its own (``soc-demo``).
    platform : str
        "fabric" (APIC fabric only), "mpwk" (fabric + MP wakeup mailbox, APs parked on it),
        "sev" (fabric + GHCB MSR unit, an SEV-ES guest) or "soc" (the soft-SoC).
    mailbox_version, ghcb_version : int or None
        The version the scenario is about, fixed; None when the scenario takes the option.
    options : tuple of Option
        The scenario options it takes besides ``run_options``.
    run_options : tuple of Option
        The run settings it takes (:data:`.options.MODEL_RUN_OPTIONS` for the CPU models).
    check : callable or None
        ``check(values)``: constraints between options (values: name -> value), raising
        :class:`.options.OptionError`.
    """

    name: str
    description: str
    body: object
    platform: str = "fabric"
    mailbox_version: int | None = None
    ghcb_version: int | None = None
    options: tuple = ()
    run_options: tuple = MODEL_RUN_OPTIONS
    check: object = None

    @property
    def all_options(self):
        """The run settings, then the scenario's own options."""
        return self.run_options + self.options


SCENARIOS = {}


def scenario(name, description, *, platform="fabric", mailbox_version=None, ghcb_version=None,
             options=(), run_options=MODEL_RUN_OPTIONS, check=None):
    """Register the decorated ``async def body(platform, options)`` as scenario ``name``, taking
    ``options`` (:class:`.options.Option` s) besides ``run_options``."""
    def register(body):
        SCENARIOS[name] = Scenario(name, description, body, platform, mailbox_version,
                                   ghcb_version, tuple(options), tuple(run_options), check)
        return body
    return register


async def boot(platform, options, method, **kernel_options):
    """Load firmware and a kernel booting by ``method``, start the CPUs, wait for smp_init to
    finish (it always does: every wait of the kernel has its timeout)."""
    platform.firmware = Firmware(platform.memory, madt=platform.madt,
                                 reuses_mailbox_page=options.firmware_reuses_mailbox,
                                 handoff=platform.handoff)
    kernel = Kernel(platform, method, nr_cpus=options.nr_cpus,
                    callin_timeout_us=options.callin_timeout_us, lapic_timer=options.lapic_timer,
                    **kernel_options)
    platform.start()
    await _bounded(platform, options, kernel.booted.wait(), f"{kernel.name} smp_init")
    await check_ticks(platform, kernel)
    return kernel


#: how long (guest time) an online CPU may take to see its first local timer tick: 10 jiffies
TICK_WAIT_US = 10 * 1_000_000 // HZ


async def check_ticks(platform, kernel):
    """Every online CPU programmed its APIC timer one jiffy ahead (sim.cpu.lapic_setup): each
    must take exactly that one tick.  A CPU without it is a failure naming it and where it is."""
    online = kernel.online_apic_ids()
    try:
        # the tick handler notes the tick in the timeline, which wakes the wait
        await platform.bsp.wait_until(lambda: all(kernel.lapic.ticks.get(a) for a in online),
                                      timeout_ns=platform.scaled_ns(TICK_WAIT_US * 1000) + 1000,
                                      what="a local timer tick on every online CPU")
    except AssertionError:
        pass                    # each CPU without its tick is reported below
    for apic_id in online:
        cpu = next(c for c in platform.cpus if c.apic_id == apic_id)
        ticks = kernel.lapic.ticks.get(apic_id, 0)
        if ticks != 1:
            platform.fail(cpu, f"{cpu.name}: {ticks} local timer ticks within {TICK_WAIT_US} us "
                               f"of guest time after setup_local_APIC, expected 1; it is {cpu.position}")


def watchdog_ns(platform, options):
    """Longer than every timeout the guest software has of its own: a wait that exceeds it is
    a model bug, reported with every CPU's state."""
    return platform.scaled_ns(options.callin_timeout_us * 1000) * (platform.env.n + 3) + 1_000_000


async def _bounded(platform, options, awaitable, what):
    limit = watchdog_ns(platform, options)
    try:
        return await with_timeout(awaitable, limit, "ns")
    except SimTimeoutError:
        where = "; ".join(f"{c.name}: {c.position}" for c in platform.cpus)
        raise AssertionError(f"watchdog: {what} not done after {limit / 1e6:g} ms simulated ({where})") from None


def _boot_detail(kernel):
    lapic = kernel.lapic
    return {"kernel": kernel, "method": kernel.method.value,
            "expected_online": list(kernel.cpuid_to_apicid),
            "lapic": {"timer": lapic.timer_mode, "ticks": dict(lapic.ticks),
                      "apic_errors": [{"cpu": a, "esr": e} for a, e in lapic.errors]}}


def _targeted_method(name, options):
    if options.method not in ("modern", "legacy"):
        raise ValueError(f"{name} --method must be 'modern' or 'legacy', not {options.method!r}")
    return BootMethod(options.method)


#: an INIT-SIPI boot on the fabric: the kernel's options, KVM's AP start, APs stuck in SMM
FABRIC_BOOT_OPTIONS = BOOT_OPTIONS + (KVM, UNRESPONSIVE)
#: a boot through the MP wakeup mailbox: no SIPI (so no --kvm); a stuck AP is a vCPU never run
MAILBOX_BOOT_OPTIONS = BOOT_OPTIONS + (UNRESPONSIVE,)

SMM_CPU = Option("smm_cpu", int, None, "the AP the firmware's SMI holds in SMM (default: port 1)",
                 ap_port=True, metavar="PORT")
SMM_US = Option("smm_us", float, 50_000, "guest microseconds the SMI handler runs (the default "
                "is longer than the AP's INIT-SIPI-SIPI)", minimum=0, metavar="US")
IPIS = Option("ipis", int, 20, "call-function IPIs each online CPU sends", minimum=1)
PARKING_PAGE = Option("parking_page", str, "kernel", "where kernel 1's parking loop polls: its "
                      "own page with the MADT patched, or the firmware's mailbox page",
                      choices=("kernel", "firmware"), metavar="PAGE")
FIRMWARE_REUSES_MAILBOX = Option("firmware_reuses_mailbox", bool, False,
                                 "the firmware takes its mailbox page back after the last AP wakeup")


@scenario("init-sipi", "the BSP wakes each AP in turn with INIT, SIPI, SIPI "
                       "(--method modern: no INIT delay, 10 us gaps; legacy: 10 ms, 300/200 us)",
          options=(METHOD,) + FABRIC_BOOT_OPTIONS)
async def init_sipi(platform, options):
    return _boot_detail(await boot(platform, options, _targeted_method("init-sipi", options)))


@scenario("init-sipi-smm", "init-sipi while one AP (--smm-cpu, default 1) is in SMM: the "
                           "firmware's SMI just before hand-off holds it --smm-us guest us; "
                           "INIT is latched until RSM and SIPIs arriving in SMM are lost, so the "
                           "AP ends in wait-for-SIPI and the BSP's wait times out; an SMI that "
                           "ends before the SIPIs lets the AP come up",
          # no --unresponsive: the scenario's own SMI is the stuck AP, --smm-us how long
          options=(METHOD, SMM_CPU, SMM_US, KVM) + BOOT_OPTIONS)
async def init_sipi_smm(platform, options):
    method = _targeted_method("init-sipi-smm", options)
    port = 1 if options.smm_cpu is None else options.smm_cpu
    setup_smm(platform, [port], options.smm_us)
    kernel = await boot(platform, options, method)
    cpu = platform.cpus[port]
    if cpu.in_smm:
        # the BSP gave up first: report where the AP ends once its SMI handler is done
        await cpu.wait_until(lambda: not (cpu.in_smm or cpu.init_latched), what="RSM and the latched INIT",
                             timeout_ns=platform.scaled_ns(options.smm_us * 1000) + 10_000)
    return {**_boot_detail(kernel), "smm": smm_outcome(cpu, kernel, options.smm_us)}


def smm_outcome(cpu, kernel, smm_us):
    """What SMM did to ``cpu``'s bring-up: when it entered and left SMM, whether its INIT was
    latched, how many SIPIs it lost, where it ended, in one sentence too."""
    def first(text):
        return next((t for t, _, note in cpu.history if text in note), None)

    online = cpu.apic_id in kernel.online_apic_ids()
    init_latched = first("INIT latched (in SMM)") is not None
    if online:
        outcome = ("came up: the SMI ended before the SIPIs"
                   + (", the INIT latched in SMM was taken at RSM" if init_latched else ""))
    elif cpu.in_smm:
        outcome = f"still in SMM: INIT latched, {cpu.ignored_sipis} SIPIs lost"
    else:
        outcome = (f"INIT latched in SMM and taken at RSM, its {cpu.ignored_sipis} SIPIs arrived "
                   f"in SMM and were lost: left {cpu.position}")
    return {"cpu": cpu.apic_id, "port": cpu.index, "smm_us": smm_us,
            "smi_ns": first("enter SMM"), "rsm_ns": first("RSM"), "init_latched": init_latched,
            "ignored_sipis": cpu.ignored_sipis, "state": cpu.status, "where": cpu.where,
            "online": online, "outcome": outcome}


@scenario("init-sipi-broadcast", "one INIT and two SIPIs to all-excluding-self wake every AP at once",
          options=FABRIC_BOOT_OPTIONS)
async def init_sipi_broadcast(platform, options):
    return _boot_detail(await boot(platform, options, BootMethod.BROADCAST))


@scenario("init-sipi-parallel", "Linux 6.5 parallel bring-up: kick every AP, then release them "
                                "one by one through the cpuhp sync states",
          options=FABRIC_BOOT_OPTIONS)
async def init_sipi_parallel(platform, options):
    return _boot_detail(await boot(platform, options, BootMethod.PARALLEL))


@scenario("mpwk-wakeup", "TDX-style: APs parked on the ACPI MP wakeup mailbox, the kernel wakes "
                         "them one by one with acpi_wakeup_cpu", platform="mpwk",
          options=(MAILBOX_VERSION,) + MAILBOX_BOOT_OPTIONS)
async def mpwk_wakeup(platform, options):
    return _boot_detail(await boot(platform, options, BootMethod.MPWK))


@scenario("mpwk-offline-online", "mailbox boot, then every AP in turn is offlined (play_dead to "
                                 "ResetVector, Test acknowledged) and brought online again; "
                                 "version 0 refuses the offline", platform="mpwk",
          options=(MAILBOX_VERSION,) + MAILBOX_BOOT_OPTIONS)
async def mpwk_offline_online(platform, options):
    kernel = await boot(platform, options, BootMethod.MPWK)
    detail = _boot_detail(kernel)
    rounds = []
    bsp = platform.bsp
    for n in range(1, len(kernel.cpuid_to_apicid)):
        if n not in kernel.online_cpus():
            continue
        down = await kernel.cpu_down(bsp, n)
        entry = {"cpu": kernel.cpuid_to_apicid[n], "offline": down or "ok"}
        if down is None:
            entry["online_again"] = await kernel.cpu_up(bsp, n) or "ok"
        rounds.append(entry)
    detail["offline_online"] = rounds
    refused = [r for r in rounds if r["offline"].startswith("-EOPNOTSUPP")]
    if kernel.mp_wake and not kernel.mp_wake.can_reset and len(refused) != len(rounds):
        platform.fail(bsp, "version 0 mailbox: an offline was not refused")
    for r in rounds:
        if not kernel.mp_wake.can_reset:
            continue
        if r["offline"] != "ok" or r.get("online_again") != "ok":
            cpu = next(c for c in platform.cpus if c.apic_id == r["cpu"])
            if not any(f["cpu"] == cpu.apic_id for f in platform.failures):
                platform.fail(cpu, f"offline/online round failed: {r}")
    return detail


def report_corruptions(platform, whose_page=lambda page: None):
    """One failure per corrupted page (writer, page owner, how many stores); ``whose_page``
    may say what the page was."""
    pages = {}
    for address, owner, writer in platform.memory.corruptions:
        pages.setdefault((address - address % PAGE_SIZE, owner, writer), []).append(address)
    for (page, owner, writer), addresses in pages.items():
        whose = whose_page(page)
        platform.fail(platform.bsp, f"memory corruption: {writer.value} wrote {len(addresses)} "
                                    f"times into page {page:#x}" + (f" ({whose})" if whose else "")
                                    + f", which {owner.value} owns")


def _kernel_summary(kernel, platform, reason):
    online = kernel.online_apic_ids()
    return {"name": kernel.name, "online": online,
            "stranded": [{"cpu": c.apic_id, "reason": reason(c)} for c in platform.cpus
                         if c.apic_id not in online]}


async def _kexec_mpwk(platform, options, parking_page=None):
    """Kernel 1 boots through the mailbox (``nr_cpus`` applies to it), kexecs into kernel 2 in
    other pages, which boots from the MADT as kernel 1 left it (docs/spec/mpwk.md §4, §5, §7 #19, #20).
    ``parking_page``: plan B (:mod:`sim.cpu.parking`)."""
    kernel1 = await boot(platform, options, BootMethod.MPWK, parking_page=parking_page)
    version = kernel1.mp_wake.version if kernel1.mp_wake else None
    woken_by_1 = set(kernel1.online_apic_ids())

    def reason_1(cpu):
        if cpu.apic_id not in kernel1.cpuid_to_apicid:
            return f"nr_cpus={options.nr_cpus}: never woken, still polling the firmware mailbox"
        return cpu.position

    summary_1 = _kernel_summary(kernel1, platform, reason_1)     # before kexec stops its CPUs
    kernel2 = Kernel(platform, BootMethod.MPWK, callin_timeout_us=options.callin_timeout_us,
                     owner=Owner.KERNEL2, entry=KERNEL2_ENTRY, data=KERNEL2_DATA)
    bsp = platform.bsp
    await kernel1.kexec(bsp)
    bsp.restart_at(KERNEL2_ENTRY, "kexec: jump to kernel 2")
    await _bounded(platform, options, kernel2.booted.wait(), "kernel 2 smp_init")
    can_reset = bool(kernel1.mp_wake and kernel1.mp_wake.can_reset)
    hides_mailbox = not can_reset and parking_page is None
    # Under the version-0 policy kernel 2 finding no mailbox is the documented outcome: it is
    # reported as stranded CPUs, not as a model failure.
    if hides_mailbox:
        platform.failures = [f for f in platform.failures if "No MADT mailbox" not in f["message"]]
    report_corruptions(platform)

    def reason_2(cpu):
        if parking_page == "kernel" and cpu.apic_id not in woken_by_1:
            return (f"never woken by kernel 1 (nr_cpus={options.nr_cpus}): still polling the "
                    f"firmware mailbox at {platform.mailbox.base:#x}, but the patched MADT sends "
                    f"kernel 2 to kernel 1's parking loop at {kernel1.parking_loop.mailbox_address:#x}")
        if parking_page is not None:
            return cpu.position
        if not can_reset and cpu.apic_id in woken_by_1:
            return "halted by kernel 1's stop_this_cpu: a version-0 mailbox has no way back to firmware"
        if not can_reset:
            return "still polling the firmware mailbox, but kernel 1 zeroed the MADT mailbox address (version-0 policy)"
        return cpu.position

    detail = {"kernel": kernel2, "method": "mpwk", "mailbox_version": version,
              "kernels": [summary_1, _kernel_summary(kernel2, platform, reason_2)]}
    detail["expected_online"] = ([bsp.apic_id] if hides_mailbox
                                 else [c.apic_id for c in platform.cpus])
    if parking_page is not None:
        reused = platform.firmware.reused_page
        detail["parking"] = {
            "page": parking_page,
            "mailbox": kernel1.parking_loop.mailbox_address if kernel1.parking_loop else None,
            "woken_from_loop": [apic_id for apic_id, _ in kernel1.parking_loop.woken]
            if kernel1.parking_loop else [],
            "firmware_reused_mailbox_page": reused}
    return detail


@scenario("kexec-mpwk-v0", "mailbox version 0: kernel 1 kexecs into kernel 2, which finds the MADT "
                           "mailbox zeroed and comes up on 1 CPU; the others are stranded",
          platform="mpwk", mailbox_version=0, options=MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_v0(platform, options):
    return await _kexec_mpwk(platform, options)


@scenario("kexec-mpwk-v1", "mailbox version 1: kernel 1's APs go back to firmware through "
                           "ResetVector and kernel 2 wakes every AP (also those kernel 1 never woke)",
          platform="mpwk", mailbox_version=1, options=MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_v1(platform, options):
    return await _kexec_mpwk(platform, options)


@scenario("kexec-mpwk-parking-loop",
          "plan B (rejected upstream) on a version-0 mailbox: kernel 1 parks its APs in a loop of "
          "its own and kernel 2 wakes them from there; --parking-page kernel (own page, MADT "
          "patched) strands the APs kernel 1 never woke (--nr-cpus K); --parking-page firmware "
          "breaks when the firmware reuses its page (--firmware-reuses-mailbox)",
          platform="mpwk", mailbox_version=0,
          options=(PARKING_PAGE, FIRMWARE_REUSES_MAILBOX) + MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_parking_loop(platform, options):
    return await _kexec_mpwk(platform, options, parking_page=options.parking_page)


@scenario("ipi-storm", "parallel bring-up, then every online CPU sends --ipis call-function IPIs "
                       "to random other CPUs; each queued call must run exactly once",
          options=(IPIS,) + FABRIC_BOOT_OPTIONS)
async def ipi_storm(platform, options):
    kernel = await boot(platform, options, BootMethod.PARALLEL)
    detail = _boot_detail(kernel)
    online = kernel.online_cpus()
    if len(online) < 2:
        detail["storm"] = {"calls": 0, "note": "fewer than two CPUs online: no storm"}
        return detail
    rng = random.Random(options.seed)
    plan = {n: [(n, k, rng.choice([t for t in online if t != n])) for k in range(options.ipis)]
            for n in online}
    expected = sorted((target, (sender, k)) for calls in plan.values() for sender, k, target in calls)
    by_cpu = {kernel.cpuid_to_apicid.index(c.apic_id): c for c in platform.cpus
              if c.apic_id in kernel.cpuid_to_apicid}

    async def sender(n):
        cpu = by_cpu[n]
        for sender_n, k, target in plan[n]:
            await kernel.smp_call_function_single(cpu, target, (sender_n, k))

    for task in [cocotb.start_soon(sender(n)) for n in online]:
        await task
    deadline = Timer(platform.scaled_ns(options.callin_timeout_us * 1000), "ns")
    while len(kernel.calls_done) < len(expected):
        kernel.call_ran.clear()
        if await First(kernel.call_ran.wait(), deadline) is deadline:
            break
    done = sorted(kernel.calls_done)
    lost = sorted(set(expected) - set(done))
    duplicated = len(done) - len(set(done))
    for target, entry in lost[:10]:
        platform.fail(by_cpu[target], f"call {entry} queued for CPU {target} never ran")
    if duplicated:
        platform.fail(platform.bsp, f"{duplicated} calls ran more than once")
    # the call-function interrupts only (each CPU also took its local timer tick)
    interrupts = sum(vector == CALL_FUNCTION_VECTOR for c in platform.cpus
                     for _, vector in c.interrupts_taken)
    detail["storm"] = {"calls": len(expected), "ran": len(done), "lost": len(lost),
                       "duplicated": duplicated, "interrupts": interrupts,
                       "merged_ipis": len(expected) - interrupts}
    return detail


async def start_platform(dut, options):
    """Clock, reset and CPU models for ``dut`` (not started yet)."""
    mailbox_platform = PlatformConfig.from_env(required=False)
    sev_platform = SevPlatformConfig.from_env(required=False)
    fabric = (mailbox_platform or sev_platform).fabric if (mailbox_platform or sev_platform) else None
    env = await FabricEnv.start(dut, config=fabric)
    platform = Platform(env, time_scale=options.time_scale,
                        sipi_before_init=options.sipi_before_init)
    platform.madt = b""
    if sev_platform is not None:
        platform.attach_sev(dut)
    if mailbox_platform is not None:
        ap_ids = [c.apic_id for c in platform.cpus if not c.is_bsp]
        platform.park_aps(MailboxPorts(dut, ap_ids, mailbox_platform.base))
        platform.madt = mailbox_platform.madt_entry()
    if options.unresponsive and sev_platform is not None:
        # KVM offers no SMM to SEV-ES guests (arch/x86/kvm/svm/svm.c svm_has_emulated_msr)
        raise ValueError("--unresponsive is not modelled for SEV-ES guests, which have no SMM")
    if options.unresponsive and mailbox_platform is None:
        # an AP stuck in SMM: parked by the firmware, its SMI handler never returns
        setup_smm(platform, options.unresponsive, None)
    for index in options.unresponsive if mailbox_platform is not None else ():
        if not 0 <= index < env.n or platform.cpus[index].is_bsp:
            raise ValueError(f"unresponsive CPU port {index} is not an AP (ports 0 to {env.n - 1})")
        cpu = platform.cpus[index]
        # parked on the mailbox: the VMM never runs the vCPU, its loop answers nothing
        cpu.mailbox.deschedule()
        cpu.where = "firmware: mailbox poll loop, vCPU descheduled by the VMM"
    return platform


async def run_scenario(dut, name, options, *, waves=None):
    """Run scenario ``name`` on ``dut``; returns the report dict."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    platform = await start_platform(dut, options)
    # Everything the kernel waits for is bounded by its own timeouts; the watchdog catches a
    # model that would hang anyway, and says where each CPU is.
    limit = watchdog_ns(platform, options)
    detail = {}
    try:
        detail = await with_timeout(SCENARIOS[name].body(platform, options), limit, "ns")
    except SimTimeoutError:
        for cpu in platform.cpus:
            platform.fail(cpu, f"scenario watchdog ({limit / 1e6:g} ms simulated): "
                               f"{cpu.name} is {cpu.position}")
    return make_report(name, platform, options, detail, wall_s=time.monotonic() - started,
                       waves=waves)
