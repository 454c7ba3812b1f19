"""x2APIC hand-over and the kernel's x2APIC modes (issue 12): the firmware leaves every CPU or
only the BSP in x2APIC mode, the kernel follows it (Linux's check_x2apic and x2apic_setup),
turns it off, or enables it itself in physical or cluster mode; the kernel without the
hand-over fix, whose xAPIC-format INIT and SIPI reach no AP; and APIC IDs above 0xFE, which
exist only in x2APIC mode."""

from dataclasses import replace

import cocotb

from apwake.rtl.lapic.layouts import MSR_IA32_APIC_BASE, ApicBase, DeliveryMode, DestMode, Level, Shorthand
from apwake.sim.harness.codec import pack, unpack
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.models.cpu.linux import BootMethod
from apwake.sim.scenarios.boot import boot
from apwake.sim.vip.lapic.bfm import GeneralProtection
from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.vip.lapic.model import x2apic_ldr
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import start_machine

TIMEOUT = dict(timeout_time=60, timeout_unit="ms")
#: the configurations with an APIC ID above 0xFE, and the others
WIDE_IDS = applies_to(lambda config: max(config.apic_ids) > 0xFE)
XAPIC_IDS = applies_to(lambda config: max(config.apic_ids) <= 0xFE)


async def booted(dut, method=BootMethod.MODERN, **changes):
    options = replace(ScenarioOptions(callin_timeout_us=2000), **changes)
    machine = await start_machine(dut, options)
    return machine, await boot(machine, options, method)


async def in_x2apic(cpu):
    base = unpack(ApicBase, await cpu.apic.rdmsr(MSR_IA32_APIC_BASE))
    return bool(base["enable"] and base["extd"])


def start_cycles(machine):
    """The INIT (assert) and SIPI messages on the fabric; an INIT level de-assert goes to every
    APIC whatever its destination (SDM vol. 3A §11.6.1), so it is left out."""
    return [c for c in machine.env.monitor.cycles
            if c.msg["delivery_mode"] == DeliveryMode.STARTUP
            or c.msg["delivery_mode"] == DeliveryMode.INIT and c.msg["level"] == Level.ASSERT]


def start_messages(machine):
    return [c.msg for c in start_cycles(machine)]


def fabric_ids(dut):
    """The fabric's APIC IDs, from the configuration the test runs on."""
    return list(FabricConfig.from_env().apic_ids)


def assert_all_online(machine, kernel):
    failures = [f["message"] for f in machine.failures]
    assert sorted(kernel.online_apic_ids()) == sorted(c.apic_id for c in machine.cpus), failures
    assert not failures, failures


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(method=[BootMethod.MODERN, BootMethod.PARALLEL, BootMethod.BROADCAST])
async def test_every_cpu_handed_over_in_x2apic(dut, method):
    """The firmware leaves every APIC in x2APIC (a TDX guest, a large machine): the kernel
    switches to x2APIC ops and starts each AP with x2APIC-format INIT and SIPI."""
    machine, kernel = await booted(dut, method, firmware_x2apic="all")
    assert_all_online(machine, kernel)
    assert kernel.lapic.x2apic_mode
    for cpu in machine.cpus:
        assert await in_x2apic(cpu), f"{cpu.name} left x2APIC mode"
    messages = start_messages(machine)
    assert messages and all(m["x2apic"] for m in messages)
    targeted = {m["destination"] for m in messages if m["shorthand"] == Shorthand.NONE}
    aps = {c.apic_id for c in machine.cpus if not c.is_bsp}
    assert targeted == (set() if method is BootMethod.BROADCAST else aps), targeted


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(method=[BootMethod.MODERN, BootMethod.PARALLEL])
async def test_bsp_only_in_x2apic_fixed_kernel(dut, method):
    """Only the BSP arrives in x2APIC (the inconsistent firmware of Linux commit 69a7386c): the
    kernel takes x2APIC ops from the BSP; in parallel bring-up each AP enables x2APIC before it
    reads its APIC ID (the fix), and x2apic_setup has every AP in x2APIC mode at the end."""
    machine, kernel = await booted(dut, method, firmware_x2apic="bsp")
    assert_all_online(machine, kernel)
    assert any("enabled by BIOS, switching to x2apic ops" in note for _, _, note in machine.bsp.history)
    for cpu in machine.cpus:
        assert await in_x2apic(cpu), f"{cpu.name} not in x2APIC mode after x2apic_setup"
    assert all(m["x2apic"] for m in start_messages(machine))


@cocotb.test(**TIMEOUT)
@XAPIC_IDS
async def test_bsp_only_in_x2apic_unfixed_kernel(dut):
    """Parallel bring-up without the fix: INIT and SIPI reach every AP (x2APIC ops, the right
    destinations), but the first AP reads its APIC ID from the xAPIC MMIO page an x2APIC
    kernel never mapped and dies there holding the trampoline lock; the others spin on it.
    Every AP's ALIVE wait times out, naming it: the AP that dies silently."""
    machine, kernel = await booted(dut, BootMethod.PARALLEL, firmware_x2apic="bsp", x2apic_unfixed=True)
    aps = [c for c in machine.cpus if not c.is_bsp]
    assert kernel.online_apic_ids() == [machine.bsp.apic_id]
    targeted = {m["destination"] for m in start_messages(machine) if m["shorthand"] == Shorthand.NONE}
    assert targeted == {c.apic_id for c in aps}
    assert all(c.accept for c in start_cycles(machine)), "an INIT or SIPI found no APIC"
    dead = [c for c in aps if "unmapped xAPIC MMIO page" in c.where]
    assert len(dead) == 1, [c.position for c in aps]
    assert all("tr_lock" in c.where for c in aps if c not in dead), [c.position for c in aps]
    for cpu in aps:
        assert any(f["cpu"] == cpu.apic_id and "did not answer" in f["message"] for f in machine.failures), \
            [f["message"] for f in machine.failures]


@cocotb.test(**TIMEOUT)
@XAPIC_IDS
async def test_serial_bringup_never_met_the_inconsistency(dut):
    """The same firmware and kernel without parallel bring-up: the AP is handed its CPU
    number instead of reading its APIC ID, so all come up (why disabling parallel bring-up was
    the workaround)."""
    machine, kernel = await booted(dut, firmware_x2apic="bsp", x2apic_unfixed=True)
    assert_all_online(machine, kernel)


@cocotb.test(**TIMEOUT)
@XAPIC_IDS
async def test_kernel_turns_x2apic_off(dut):
    """``nox2apic`` on x2APIC firmware: every APIC goes back to xAPIC through the disabled
    state (a direct x2APIC to xAPIC step would be #GP) and the boot is xAPIC."""
    machine, kernel = await booted(dut, firmware_x2apic="all", x2apic="off")
    assert_all_online(machine, kernel)
    for cpu in machine.cpus:
        assert not await in_x2apic(cpu), f"{cpu.name} still in x2APIC mode"
    assert not any(m["x2apic"] for m in start_messages(machine))


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(mode=["phys", "cluster"])
async def test_call_function_ipis_in_x2apic(dut, mode):
    """The kernel enables x2APIC itself; a call-function IPI goes to the x2APIC ID (physical)
    or to the logical ID (cluster) and runs once on its target."""
    machine, kernel = await booted(dut, x2apic=mode)
    assert_all_online(machine, kernel)
    monitor = machine.env.monitor
    before = len(monitor.cycles)
    targets = list(range(1, len(kernel.cpuid_to_apicid)))
    for n in targets:
        await kernel.smp_call_function_single(machine.bsp, n, ("call", n))
    await monitor.wait_for(before + len(targets), what="one call-function IPI per target")
    await machine.bsp.wait_until(lambda: len(kernel.calls_done) == len(targets), timeout_ns=100_000,
                                  what="every call to run")
    assert sorted(kernel.calls_done) == [(n, ("call", n)) for n in targets]
    sent = monitor.cycles[before:]
    for n, cycle in zip(targets, sent):
        apic_id = kernel.cpuid_to_apicid[n]
        if mode == "cluster":
            assert cycle.msg["dest_mode"] == DestMode.LOGICAL
            assert cycle.msg["destination"] == x2apic_ldr(apic_id)
        else:
            assert cycle.msg["dest_mode"] == DestMode.PHYSICAL and cycle.msg["destination"] == apic_id
        assert cycle.accept == frozenset({next(c.index for c in machine.cpus if c.apic_id == apic_id)})


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(method=[BootMethod.MODERN, BootMethod.PARALLEL])
@WIDE_IDS
async def test_ids_above_0xfe(dut, method):
    """Sparse 32-bit IDs: the firmware lists the wide ones in Local x2APIC entries and hands
    every CPU over in x2APIC mode (``auto``), and the kernel brings each up by its 32-bit ID."""
    machine, kernel = await booted(dut, method)
    assert_all_online(machine, kernel)
    wide = [c for c in machine.cpus if c.apic_id > 0xFE]
    for m in start_messages(machine):
        assert m["x2apic"]
    targeted = {m["destination"] for m in start_messages(machine) if m["shorthand"] == Shorthand.NONE}
    assert targeted >= {c.apic_id for c in wide}, targeted


@cocotb.test(**TIMEOUT)
@WIDE_IDS
async def test_wide_ids_stay_in_x2apic(dut):
    """An APIC whose ID is above 0xFE is in x2APIC mode from reset and refuses to leave it (#GP);
    an xAPIC kernel (firmware hand-over in xAPIC mode) does not register those CPUs, as Linux's
    acpi_parse_x2apic ignores IDs the xAPIC cannot address, and boots the others."""
    wide = [c for c in fabric_ids(dut) if c > 0xFE]
    narrow = [c for c in fabric_ids(dut) if c <= 0xFE]
    # nr_cpus counts the CPUs the kernel registers, after the ignored ones are dropped
    machine, kernel = await booted(dut, firmware_x2apic="none", nr_cpus=len(narrow))
    wide = [c for c in machine.cpus if c.apic_id in wide]
    assert sorted(kernel.online_apic_ids()) == sorted(narrow), [f["message"] for f in machine.failures]
    assert any("x2apic entry ignored" in note for _, _, note in machine.bsp.history)
    for cpu in wide:
        assert await in_x2apic(cpu)
        assert cpu.state.name == "INIT_RECEIVED", f"{cpu.name} is {cpu.position}"
        base = await cpu.apic.rdmsr(MSR_IA32_APIC_BASE)
        for value in (base & ~pack(ApicBase, extd=1), base & ~pack(ApicBase, extd=1, enable=1)):
            try:
                await cpu.apic.wrmsr(MSR_IA32_APIC_BASE, value)
            except GeneralProtection:
                pass
            else:
                raise AssertionError(f"{cpu.name}: IA32_APIC_BASE write {value:#x} left x2APIC mode without #GP")
        assert await in_x2apic(cpu)
