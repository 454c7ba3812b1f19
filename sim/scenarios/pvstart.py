"""State-carrying AP start-up scenarios (VMware VMI's startup IPI hook, a direct start) on
``rtl/system/pvstart.py``: the APIC fabric with the hypervisor's start-context unit taking the
SIPIs.  The guest is :class:`apwake.sim.models.cpu.paravirt.VmiKernel`; the rows map to the 2007
thread (docs/SCENARIOS.md, "State-carrying start-up")."""

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.sim.models.cpu.linux import Firmware
from apwake.sim.models.cpu.paravirt import VmiKernel
from .boot import bounded, boot_detail, check_ticks
from .options import CALLIN_TIMEOUT_MS, NR_CPUS, Option
from .registry import scenario

__all__ = ["boot_pv", "PV_BOOT_OPTIONS"]

#: what boot_pv takes: the kernel's CPU limit and call-in timeout (a 32-bit VMI kernel runs
#: xAPIC, with the kernel's default timer)
PV_BOOT_OPTIONS = (NR_CPUS, CALLIN_TIMEOUT_MS)
CLASSIC_AP = Option("classic_ap", int, None, "the AP the kernel starts the classic way, with no "
                    "hook (default: port 1)", ap_port=True, metavar="PORT")


async def boot_pv(machine, options, **kernel_options):
    """Firmware, a VMI kernel, the CPUs started; returns the kernel after smp_init and the
    one-tick check."""
    machine.firmware = Firmware(machine.memory, madt=machine.madt, handoff=machine.handoff)
    kernel = VmiKernel(machine, nr_cpus=options.nr_cpus, callin_timeout_us=options.callin_timeout_us,
                       **kernel_options)
    machine.start()
    await bounded(machine, options, kernel.booted.wait(), f"{kernel.name} smp_init")
    await check_ticks(machine, kernel)
    return kernel


def _detail(machine, kernel, start):
    """The report detail: how the APs were started, the hypercalls, and what the bring-up (from
    smp_init to "smp booted") put on the APIC bus and how long it took (simulated ns)."""
    def when(prefix):
        return next(t for t, _, note in machine.bsp.history if note.startswith(prefix))
    begin, end = when("smp_init"), when("smp booted")
    on_bus = [c for c in machine.env.monitor.cycles if begin <= c.edge_ns <= end]
    modes = [c.msg["delivery_mode"] for c in on_bus]
    return {**boot_detail(kernel), "method": start,
            "pv_start": {"start": start, "state_map": kernel.state_map,
                         "classic_aps": sorted(kernel.classic_apic_ids),
                         "hypercalls": [{"op": op, "cpu": apic_id, "status": status, "field": field}
                                        for op, apic_id, status, field in kernel.hypercalls],
                         "init_messages": modes.count(DeliveryMode.INIT),
                         "sipi_messages": modes.count(DeliveryMode.STARTUP),
                         "bus_messages": len(on_bus), "smp_boot_ns": end - begin}}


@scenario("pv-startup-vmi", "VMware VMI's state-carrying start (Linux 2.6.2x): INIT, INIT "
                            "de-assert, the startup IPI hook (SetInitialAPState with a full "
                            "protected-mode state map), SIPI, SIPI; each AP starts at "
                            "start_secondary on its own stack and per-CPU segment, never "
                            "running the real-mode trampoline",
          system="pvstart", options=PV_BOOT_OPTIONS)
async def pv_startup_vmi(machine, options):
    return _detail(machine, await boot_pv(machine, options, start="vmi"), "vmi")


@scenario("pv-startup-vmi-drift", "the state map drifts from the kernel (expected to fail): the "
                                  "kernel keeps its per-CPU data in FS (since January 2007), the hook "
                                  "still sends the older map with it in GS; each AP enters "
                                  "start_secondary with FS base 0 and is reported",
          system="pvstart", options=PV_BOOT_OPTIONS)
async def pv_startup_vmi_drift(machine, options):
    kernel = await boot_pv(machine, options, start="vmi", state_map="old")
    return {**_detail(machine, kernel, "vmi"), "expected_online": [machine.bsp.apic_id]}


@scenario("pv-startup-vmi-mixed", "mixed mode (expected to fail): the BSP runs paravirtual and "
                                  "one AP (--classic-ap, default port 1) is started the classic "
                                  "way, real-mode trampoline and no hook; the hypervisor refuses "
                                  "the real-mode start (VMI constraint 5) and the kernel's "
                                  "call-in wait times out, both reported",
          system="pvstart", options=(CLASSIC_AP,) + PV_BOOT_OPTIONS)
async def pv_startup_vmi_mixed(machine, options):
    port = 1 if options.classic_ap is None else options.classic_ap
    kernel = await boot_pv(machine, options, start="vmi", classic_aps=[port])
    classic = machine.cpus[port].apic_id
    return {**_detail(machine, kernel, "vmi"),
            "expected_online": [a for a in kernel.cpuid_to_apicid if a != classic]}


@scenario("pv-startup-direct", "Eric Biederman's higher-level hook (Xen VCPUOP_up, Hyper-V "
                               "HvCallStartVirtualProcessor): one start call per AP carrying its "
                               "state, no INIT and no SIPI on the APIC bus; the report counts the "
                               "bus messages and hypercalls to compare with pv-startup-vmi and "
                               "init-sipi --method legacy",
          system="pvstart", options=PV_BOOT_OPTIONS)
async def pv_startup_direct(machine, options):
    return _detail(machine, await boot_pv(machine, options, start="direct"), "direct")
