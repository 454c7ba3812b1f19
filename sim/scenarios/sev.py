"""SEV-ES and SEV-SNP scenarios (docs/spec/ghcb.md §2-§6) on ``rtl/system/sev.py``: the APIC
fabric with the hypervisor's GHCB MSR unit taking INIT and SIPI, and for an SNP VM serving AP
Creation (``@scenario(..., snp=True)`` builds the unit with ``snp=True``)."""

from apwake.sim.models.cpu.linux import KERNEL2_DATA, KERNEL2_ENTRY, Firmware
from apwake.sim.models.cpu.sev import SevFirmware, SevKernel, SnpKernel
from apwake.sim.vip.memory import Owner
from .boot import bounded, firmware_x2apic_steps, kernel_summary, report_corruptions
from .registry import scenario
from .options import CALLIN_TIMEOUT_MS, FIRMWARE_X2APIC, GHCB_VERSION, NR_CPUS, X2APIC, Option

__all__ = ["boot_sev", "boot_snp", "SEV_BOOT_OPTIONS", "FORCE_KEXEC"]

#: what boot_sev takes: no --lapic-timer (it keeps the kernel's default timer), no --kvm (an
#: SEV-ES guest always runs under KVM), no --unresponsive (KVM offers SEV-ES guests no SMM)
SEV_BOOT_OPTIONS = (NR_CPUS, CALLIN_TIMEOUT_MS, FIRMWARE_X2APIC, X2APIC)
FORCE_KEXEC = Option("force_kexec", bool, False,
                     "go past the kernel's refusal of kexec to show why it refuses")


async def boot_sev(machine, options, *, firmware_class=SevFirmware, kernel_class=SevKernel,
                   **kernel_options):
    """Firmware (by default with the jump table SET), an SEV-ES kernel (or ``kernel_class``),
    the CPUs started; returns after smp_init."""
    machine.firmware = firmware_class(machine.memory, madt=machine.madt,
                                      handoff=firmware_x2apic_steps(machine, options))
    kernel = kernel_class(machine, nr_cpus=options.nr_cpus, callin_timeout_us=options.callin_timeout_us,
                          x2apic=options.x2apic, **kernel_options)
    machine.start()
    await bounded(machine, options, kernel.booted.wait(), f"{kernel.name} smp_init")
    return kernel


def _detail(kernel):
    """The report detail; ``hypervisor_writes``: the pages the unit has written so far."""
    accesses = kernel.machine.guest_memory.accesses
    return {"hypervisor_writes": sorted({a & ~0xFFF for a, write, _ in accesses if write}),
            "kernel": kernel, "method": "sev-es", "ghcb_version": kernel.ghcb_version,
            "hv_range": list(kernel.hv_range) if kernel.hv_range else None, "hold_form": kernel.hold_form,
            "jump_table": kernel.jump_table,
            "expected_online": list(kernel.cpuid_to_apicid) if kernel.ghcb_version else []}


@scenario("sev-es-boot", "SEV-ES: the kernel negotiates the GHCB protocol, points the AP jump "
                         "table at its trampoline, and INIT-SIPI-SIPI starts each AP from its "
                         "launch state (the SIPI vector is ignored)", system="sev",
          options=(GHCB_VERSION,) + SEV_BOOT_OPTIONS)
async def sev_es_boot(machine, options):
    return _detail(await boot_sev(machine, options))


@scenario("sev-es-offline-online", "SEV-ES: every AP in turn goes offline into AP reset hold "
                                   "(--ghcb-version 1: the GHCB-page form of mainline; 2: the "
                                   "MSR form in the jump table page) and INIT-SIPI-SIPI brings it back",
          system="sev", options=(GHCB_VERSION,) + SEV_BOOT_OPTIONS)
async def sev_es_offline_online(machine, options):
    kernel = await boot_sev(machine, options)
    bsp, rounds = machine.bsp, []
    for n in range(1, len(kernel.cpuid_to_apicid)):
        if n not in kernel.online_cpus():
            continue
        entry = {"cpu": kernel.cpuid_to_apicid[n], "offline": await kernel.cpu_down(bsp, n) or "ok"}
        if entry["offline"] == "ok":
            entry["online_again"] = await kernel.cpu_up(bsp, n) or "ok"
        rounds.append(entry)
        if entry != {"cpu": entry["cpu"], "offline": "ok", "online_again": "ok"}:
            cpu = next(c for c in machine.cpus if c.apic_id == entry["cpu"])
            if not any(f["cpu"] == cpu.apic_id for f in machine.failures):
                machine.fail(cpu, f"offline/online round failed: {entry}")
    return {**_detail(kernel), "offline_online": rounds}


async def _kexec_sev(machine, options):
    """Kernel 1 boots, stops its APs into AP reset hold and kexecs into kernel 2, which takes
    over kernel 1's pages and wakes every AP with INIT-SIPI-SIPI."""
    kernel1 = await boot_sev(machine, options)
    summary_1 = kernel_summary(kernel1, machine, lambda c: c.position)
    bsp = machine.bsp
    refused = await kernel1.kexec(bsp, force=options.force_kexec)
    if refused:
        return {**_detail(kernel1), "kexec": refused, "kernels": [summary_1]}
    for base, size in kernel1.memory_ranges():       # kernel 2 takes over kernel 1's memory
        machine.memory.set_owner(base, size, Owner.KERNEL2)
    kernel2 = SevKernel(machine, callin_timeout_us=options.callin_timeout_us, x2apic=options.x2apic,
                        owner=Owner.KERNEL2, entry=KERNEL2_ENTRY, data=KERNEL2_DATA)
    bsp.restart_at(KERNEL2_ENTRY, "kexec: jump to kernel 2")
    await bounded(machine, options, kernel2.booted.wait(), "kernel 2 smp_init")
    ghcbs = {kernel1.ghcb_page(n): apic_id for n, apic_id in enumerate(kernel1.cpuid_to_apicid)}
    report_corruptions(machine, lambda page: page in ghcbs
                       and f"kernel 1's GHCB of APIC ID {ghcbs[page]:#x}")
    return {**_detail(kernel2), "kexec": "ok", "expected_online": [c.apic_id for c in machine.cpus],
            "kernels": [summary_1, kernel_summary(kernel2, machine, lambda c: c.position)]}


@scenario("kexec-sev-es-v2", "SEV-ES, GHCB protocol 2: kernel 1 parks its APs with the MSR-form "
                             "AP reset hold in the jump table page; kernel 2 points the table at "
                             "its own trampoline and wakes them all; the hypervisor writes no "
                             "guest memory", system="sev", ghcb_version=2,
          options=SEV_BOOT_OPTIONS)
async def kexec_sev_es_v2(machine, options):
    return await _kexec_sev(machine, options)


@scenario("kexec-sev-es-v1", "SEV-ES, GHCB protocol 1: the kernel refuses kexec; --force-kexec "
                             "parks the APs in GHCB-page holds and each wake-up writes into a page "
                             "kernel 2 now owns", system="sev", ghcb_version=1,
          options=(FORCE_KEXEC,) + SEV_BOOT_OPTIONS)
async def kexec_sev_es_v1(machine, options):
    return await _kexec_sev(machine, options)


# --- SEV-SNP: AP Creation (docs/spec/ghcb.md §6) -----------------------------------------------------

async def boot_snp(machine, options, *, kernel_class=SnpKernel, **kernel_options):
    """Firmware (no AP jump table), an SNP kernel, the CPUs started; returns after smp_init.
    ValueError when the machine is not an SNP VM (a design built without ``snp=True``)."""
    config = getattr(machine, "sev_config", None)
    if config is None or not config.snp:
        raise ValueError("an SNP scenario runs on the SEV system built with snp=True "
                         "(SevSystemConfig(..., snp=True))")
    return await boot_sev(machine, options, firmware_class=Firmware, kernel_class=kernel_class,
                          **kernel_options)


def _snp_detail(kernel):
    """The report detail of an SNP run: every AP Creation request and its reply, each AP's VMSA."""
    return {**_detail(kernel), "method": "snp", "hold_form": None, "hv_features": kernel.hv_features,
            "ap_creation": list(kernel.ap_creation),
            "vmsa": {str(kernel.cpuid_to_apicid[n]): gpa for n, gpa in sorted(kernel.vmsa.items())}}


@scenario("snp-boot", "SEV-SNP: the kernel negotiates GHCB protocol 2, checks the hypervisor's "
                      "SNP features, registers its GHCBs and starts each AP with AP Creation: a "
                      "fresh VMSA (real mode at the trampoline, in the second page of an 8 KiB "
                      "allocation) handed over with CREATE; no INIT, no SIPI, no AP jump table",
          system="sev", snp=True, ghcb_version=2, options=SEV_BOOT_OPTIONS)
async def snp_boot(machine, options):
    return _snp_detail(await boot_snp(machine, options))


@scenario("kexec-snp", "SEV-SNP kexec as mainline Linux: kernel 1 halts its APs and destroys "
                       "them with AP Creation DESTROY (snp_kexec_finish), kernel 2 takes its pages "
                       "and creates every AP anew with CREATE; no jump table, no reset hold, no "
                       "hypervisor write into kernel 2's memory",
          system="sev", snp=True, ghcb_version=2, options=SEV_BOOT_OPTIONS)
async def kexec_snp(machine, options):
    kernel1 = await boot_snp(machine, options)
    summary_1 = kernel_summary(kernel1, machine, lambda c: c.position)
    bsp = machine.bsp
    await kernel1.kexec(bsp)
    destroyed = [dict(o) for o in kernel1.ap_creation if o["op"] == "DESTROY"]
    for base, size in kernel1.memory_ranges():       # kernel 2 takes over kernel 1's memory
        machine.memory.set_owner(base, size, Owner.KERNEL2)
    kernel2 = SnpKernel(machine, callin_timeout_us=options.callin_timeout_us, x2apic=options.x2apic,
                        owner=Owner.KERNEL2, entry=KERNEL2_ENTRY, data=KERNEL2_DATA)
    bsp.restart_at(KERNEL2_ENTRY, "kexec: jump to kernel 2")
    await bounded(machine, options, kernel2.booted.wait(), "kernel 2 smp_init")
    report_corruptions(machine)
    return {**_snp_detail(kernel2), "kexec": "ok", "destroyed": destroyed,
            "expected_online": [c.apic_id for c in machine.cpus],
            "kernels": [summary_1, kernel_summary(kernel2, machine, lambda c: c.position)]}
