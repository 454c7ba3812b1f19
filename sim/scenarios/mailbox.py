"""ACPI MP wakeup mailbox scenarios (TDX-style): wakeup, offline and online again, and kexec
with each mailbox version and with the rejected parking-loop plan."""

from apwake.sim.models.cpu.linux import KERNEL2_DATA, KERNEL2_ENTRY, BootMethod, Kernel
from apwake.sim.vip.memory import Owner
from .boot import MAILBOX_BOOT_OPTIONS, boot, boot_detail, bounded, kernel_summary, report_corruptions
from .options import MAILBOX_VERSION, Option
from .registry import scenario

__all__ = []

PARKING_PAGE = Option("parking_page", str, "kernel", "where kernel 1's parking loop polls: its "
                      "own page with the MADT patched, or the firmware's mailbox page",
                      choices=("kernel", "firmware"), metavar="PAGE")
FIRMWARE_REUSES_MAILBOX = Option("firmware_reuses_mailbox", bool, False,
                                 "the firmware takes its mailbox page back after the last AP wakeup")


@scenario("mpwk-wakeup", "TDX-style: APs parked on the ACPI MP wakeup mailbox, the kernel wakes "
                         "them one by one with acpi_wakeup_cpu", system="mpwk",
          options=(MAILBOX_VERSION,) + MAILBOX_BOOT_OPTIONS)
async def mpwk_wakeup(machine, options):
    return boot_detail(await boot(machine, options, BootMethod.MPWK))


@scenario("mpwk-offline-online", "mailbox boot, then every AP in turn is offlined (play_dead to "
                                 "ResetVector, Test acknowledged) and brought online again; "
                                 "version 0 refuses the offline", system="mpwk",
          options=(MAILBOX_VERSION,) + MAILBOX_BOOT_OPTIONS)
async def mpwk_offline_online(machine, options):
    kernel = await boot(machine, options, BootMethod.MPWK)
    detail = boot_detail(kernel)
    rounds = []
    bsp = machine.bsp
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
        machine.fail(bsp, "version 0 mailbox: an offline was not refused")
    for r in rounds:
        if not kernel.mp_wake.can_reset:
            continue
        if r["offline"] != "ok" or r.get("online_again") != "ok":
            cpu = next(c for c in machine.cpus if c.apic_id == r["cpu"])
            if not any(f["cpu"] == cpu.apic_id for f in machine.failures):
                machine.fail(cpu, f"offline/online round failed: {r}")
    return detail


async def _kexec_mpwk(machine, options, parking_page=None):
    """Kernel 1 boots through the mailbox (``nr_cpus`` applies to it), kexecs into kernel 2 in
    other pages, which boots from the MADT as kernel 1 left it (docs/spec/mpwk.md §4, §5, §7 #19, #20).
    ``parking_page``: plan B (:mod:`apwake.sim.models.cpu.parking`)."""
    kernel1 = await boot(machine, options, BootMethod.MPWK, parking_page=parking_page)
    version = kernel1.mp_wake.version if kernel1.mp_wake else None
    woken_by_1 = set(kernel1.online_apic_ids())

    def reason_1(cpu):
        if cpu.apic_id not in kernel1.cpuid_to_apicid:
            return f"nr_cpus={options.nr_cpus}: never woken, still polling the firmware mailbox"
        return cpu.position

    summary_1 = kernel_summary(kernel1, machine, reason_1)     # before kexec stops its CPUs
    # kexec passes kernel 2 the same command line (its APIC settings) but not nr_cpus's limit
    kernel2 = Kernel(machine, BootMethod.MPWK, callin_timeout_us=options.callin_timeout_us,
                     owner=Owner.KERNEL2, entry=KERNEL2_ENTRY, data=KERNEL2_DATA,
                     lapic_timer=options.lapic_timer, x2apic=options.x2apic,
                     x2apic_fixed=not options.x2apic_unfixed)
    bsp = machine.bsp
    await kernel1.kexec(bsp)
    bsp.restart_at(KERNEL2_ENTRY, "kexec: jump to kernel 2")
    await bounded(machine, options, kernel2.booted.wait(), "kernel 2 smp_init")
    can_reset = bool(kernel1.mp_wake and kernel1.mp_wake.can_reset)
    hides_mailbox = not can_reset and parking_page is None
    # Under the version-0 policy kernel 2 finding no mailbox is the documented outcome: it is
    # reported as stranded CPUs, not as a model failure.
    if hides_mailbox:
        machine.failures = [f for f in machine.failures if "No MADT mailbox" not in f["message"]]
    report_corruptions(machine)

    def reason_2(cpu):
        if parking_page == "kernel" and cpu.apic_id not in woken_by_1:
            return (f"never woken by kernel 1 (nr_cpus={options.nr_cpus}): still polling the "
                    f"firmware mailbox at {machine.mailbox.base:#x}, but the patched MADT sends "
                    f"kernel 2 to kernel 1's parking loop at {kernel1.parking_loop.mailbox_address:#x}")
        if parking_page is not None:
            return cpu.position
        if not can_reset and cpu.apic_id in woken_by_1:
            return "halted by kernel 1's stop_this_cpu: a version-0 mailbox has no way back to firmware"
        if not can_reset:
            return "still polling the firmware mailbox, but kernel 1 zeroed the MADT mailbox address (version-0 policy)"
        return cpu.position

    detail = {"kernel": kernel2, "method": "mpwk", "mailbox_version": version,
              "kernels": [summary_1, kernel_summary(kernel2, machine, reason_2)]}
    detail["expected_online"] = ([bsp.apic_id] if hides_mailbox
                                 else [c.apic_id for c in machine.cpus])
    if parking_page is not None:
        reused = machine.firmware.reused_page
        detail["parking"] = {
            "page": parking_page,
            "mailbox": kernel1.parking_loop.mailbox_address if kernel1.parking_loop else None,
            "woken_from_loop": [apic_id for apic_id, _ in kernel1.parking_loop.woken]
            if kernel1.parking_loop else [],
            "firmware_reused_mailbox_page": reused}
    return detail


@scenario("kexec-mpwk-v0", "mailbox version 0: kernel 1 kexecs into kernel 2, which finds the MADT "
                           "mailbox zeroed and comes up on 1 CPU; the others are stranded",
          system="mpwk", mailbox_version=0, options=MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_v0(machine, options):
    return await _kexec_mpwk(machine, options)


@scenario("kexec-mpwk-v1", "mailbox version 1: kernel 1's APs go back to firmware through "
                           "ResetVector and kernel 2 wakes every AP (also those kernel 1 never woke)",
          system="mpwk", mailbox_version=1, options=MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_v1(machine, options):
    return await _kexec_mpwk(machine, options)


@scenario("kexec-mpwk-parking-loop",
          "plan B (rejected upstream) on a version-0 mailbox: kernel 1 parks its APs in a loop of "
          "its own and kernel 2 wakes them from there; --parking-page kernel (own page, MADT "
          "patched) strands the APs kernel 1 never woke (--nr-cpus K); --parking-page firmware "
          "breaks when the firmware reuses its page (--firmware-reuses-mailbox)",
          system="mpwk", mailbox_version=0,
          options=(PARKING_PAGE, FIRMWARE_REUSES_MAILBOX) + MAILBOX_BOOT_OPTIONS)
async def kexec_mpwk_parking_loop(machine, options):
    return await _kexec_mpwk(machine, options, parking_page=options.parking_page)

