"""INIT-SIPI bring-up scenarios on the APIC fabric with the CPU models: one AP at a time,
broadcast, Linux 6.5's parallel bring-up, and an AP held in SMM."""

from apwake.sim.models.cpu.linux import BootMethod
from apwake.sim.models.cpu.smm import setup_smm
from .boot import FABRIC_BOOT_OPTIONS, boot, boot_detail, targeted_method
from .options import BOOT_OPTIONS, KVM, METHOD, Option
from .registry import scenario

__all__ = ["smm_outcome"]

SMM_CPU = Option("smm_cpu", int, None, "the AP the firmware's SMI holds in SMM (default: port 1)",
                 ap_port=True, metavar="PORT")
SMM_US = Option("smm_us", float, 50_000, "guest microseconds the SMI handler runs (the default "
                "is longer than the AP's INIT-SIPI-SIPI)", minimum=0, metavar="US")

@scenario("init-sipi", "the BSP wakes each AP in turn with INIT, SIPI, SIPI "
                       "(--method modern: no INIT delay, 10 us gaps; legacy: 10 ms, 300/200 us)",
          options=(METHOD,) + FABRIC_BOOT_OPTIONS)
async def init_sipi(machine, options):
    return boot_detail(await boot(machine, options, targeted_method("init-sipi", options)))


@scenario("init-sipi-smm", "init-sipi while one AP (--smm-cpu, default 1) is in SMM: the "
                           "firmware's SMI just before hand-off holds it --smm-us guest us; "
                           "INIT is latched until RSM and SIPIs arriving in SMM are lost, so the "
                           "AP ends in wait-for-SIPI and the BSP's wait times out; an SMI that "
                           "ends before the SIPIs lets the AP come up",
          # no --unresponsive: the scenario's own SMI is the stuck AP, --smm-us how long
          options=(METHOD, SMM_CPU, SMM_US, KVM) + BOOT_OPTIONS)
async def init_sipi_smm(machine, options):
    method = targeted_method("init-sipi-smm", options)
    port = 1 if options.smm_cpu is None else options.smm_cpu
    setup_smm(machine, [port], options.smm_us)
    kernel = await boot(machine, options, method)
    cpu = machine.cpus[port]
    if cpu.in_smm:
        # the BSP gave up first: report where the AP ends once its SMI handler is done
        await cpu.wait_until(lambda: not (cpu.in_smm or cpu.init_latched), what="RSM and the latched INIT",
                             timeout_ns=machine.scaled_ns(options.smm_us * 1000) + 10_000)
    return {**boot_detail(kernel), "smm": smm_outcome(cpu, kernel, options.smm_us)}


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
async def init_sipi_broadcast(machine, options):
    return boot_detail(await boot(machine, options, BootMethod.BROADCAST))


@scenario("init-sipi-parallel", "Linux 6.5 parallel bring-up: kick every AP, then release them "
                                "one by one through the cpuhp sync states",
          options=FABRIC_BOOT_OPTIONS)
async def init_sipi_parallel(machine, options):
    return boot_detail(await boot(machine, options, BootMethod.PARALLEL))

