"""What the scenario families share: a Linux boot by the CPU models under the watchdog, the
one-tick check, report details and corruption reports."""

from cocotb.triggers import SimTimeoutError, with_timeout

from apwake.sim.models.cpu.lapic_setup import HZ
from apwake.sim.models.cpu.linux import (BootMethod, Firmware, Kernel,
                                         x2apic_handoff)
from apwake.rtl.lapic.layouts import XAPIC_MAX_ID
from apwake.sim.vip.memory import PAGE_SIZE
from .options import BOOT_OPTIONS, KVM, TDX_BOOT_OPTIONS, UNRESPONSIVE
from .registry import watchdog_ns

__all__ = ["firmware_x2apic_steps", "boot", "bounded", "check_ticks", "boot_detail", "targeted_method",
           "kernel_summary",
           "report_corruptions", "FABRIC_BOOT_OPTIONS", "MAILBOX_BOOT_OPTIONS", "TICK_WAIT_US"]


def firmware_x2apic_steps(machine, options):
    """The firmware's last hand-over step when ``--firmware-x2apic`` asks for one."""
    which = options.firmware_x2apic
    if which == "auto":
        which = "all" if any(c.apic_id > XAPIC_MAX_ID for c in machine.cpus) else "none"
    return [] if which == "none" else [x2apic_handoff(machine.cpus, which)]


async def boot(machine, options, method, **kernel_options):
    """Load firmware and a kernel booting by ``method``, start the CPUs, wait for smp_init to
    finish (it always does: every wait of the kernel has its timeout)."""
    machine.firmware = Firmware(machine.memory, madt=machine.madt,
                                 reuses_mailbox_page=options.firmware_reuses_mailbox,
                                 handoff=machine.handoff + firmware_x2apic_steps(machine, options))
    kernel = Kernel(machine, method, nr_cpus=options.nr_cpus,
                    callin_timeout_us=options.callin_timeout_us, lapic_timer=options.lapic_timer,
                    x2apic=options.x2apic, x2apic_fixed=not options.x2apic_unfixed, **kernel_options)
    machine.start()
    await bounded(machine, options, kernel.booted.wait(), f"{kernel.name} smp_init")
    await check_ticks(machine, kernel)
    return kernel


#: how long (guest time) an online CPU may take to see its first local timer tick: 10 jiffies
TICK_WAIT_US = 10 * 1_000_000 // HZ


async def check_ticks(machine, kernel):
    """Every online CPU programmed its APIC timer one jiffy ahead (apwake.sim.models.cpu.lapic_setup): each
    must take exactly that one tick.  A CPU without it is a failure naming it and where it is."""
    online = kernel.online_apic_ids()
    try:
        # the tick handler notes the tick in the timeline, which wakes the wait
        await machine.bsp.wait_until(lambda: all(kernel.lapic.ticks.get(a) for a in online),
                                      timeout_ns=machine.scaled_ns(TICK_WAIT_US * 1000) + 1000,
                                      what="a local timer tick on every online CPU")
    except AssertionError:
        pass                    # each CPU without its tick is reported below
    for apic_id in online:
        cpu = next(c for c in machine.cpus if c.apic_id == apic_id)
        ticks = kernel.lapic.ticks.get(apic_id, 0)
        if ticks != 1:
            machine.fail(cpu, f"{cpu.name}: {ticks} local timer ticks within {TICK_WAIT_US} us "
                               f"of guest time after setup_local_APIC, expected 1; it is {cpu.position}")


async def bounded(machine, options, awaitable, what):
    limit = watchdog_ns(machine, options)
    try:
        return await with_timeout(awaitable, limit, "ns")
    except SimTimeoutError:
        where = "; ".join(f"{c.name}: {c.position}" for c in machine.cpus)
        raise AssertionError(f"watchdog: {what} not done after {limit / 1e6:g} ms simulated ({where})") from None


def boot_detail(kernel):
    lapic = kernel.lapic
    return {"kernel": kernel, "method": kernel.method.value,
            "expected_online": list(kernel.cpuid_to_apicid),
            "lapic": {"timer": lapic.timer_mode, "ticks": dict(lapic.ticks),
                      "apic_errors": [{"cpu": a, "esr": e} for a, e in lapic.errors]}}


def targeted_method(name, options):
    if options.method not in ("modern", "legacy"):
        raise ValueError(f"{name} --method must be 'modern' or 'legacy', not {options.method!r}")
    return BootMethod(options.method)


#: an INIT-SIPI boot on the fabric: the kernel's options, KVM's AP start, APs stuck in SMM
FABRIC_BOOT_OPTIONS = BOOT_OPTIONS + (KVM, UNRESPONSIVE)
#: a boot through the MP wakeup mailbox: no SIPI (so no --kvm); a stuck AP is a vCPU never run
MAILBOX_BOOT_OPTIONS = TDX_BOOT_OPTIONS + (UNRESPONSIVE,)


def report_corruptions(machine, whose_page=lambda page: None):
    """One failure per corrupted page (writer, page owner, how many stores); ``whose_page``
    may say what the page was."""
    pages = {}
    for address, owner, writer in machine.memory.corruptions:
        pages.setdefault((address - address % PAGE_SIZE, owner, writer), []).append(address)
    for (page, owner, writer), addresses in pages.items():
        whose = whose_page(page)
        machine.fail(machine.bsp, f"memory corruption: {writer.value} wrote {len(addresses)} "
                                    f"times into page {page:#x}" + (f" ({whose})" if whose else "")
                                    + f", which {owner.value} owns")


def kernel_summary(kernel, machine, reason):
    online = kernel.online_apic_ids()
    return {"name": kernel.name, "online": online,
            "stranded": [{"cpu": c.apic_id, "reason": reason(c)} for c in machine.cpus
                         if c.apic_id not in online]}

