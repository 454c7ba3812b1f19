"""Register-port behaviour of every APIC: reset values, write masks, ESR, access rules of
xAPIC MMIO and x2APIC MSRs, IA32_APIC_BASE mode transitions (docs/spec/lapic.md §1, §4)."""

import cocotb

from apwake.rtl.lapic.layouts import (ApicBase, DeliveryMode, Esr, Lvt, MSR_IA32_APIC_BASE,
                               MSR_X2APIC_FIRST, TimerMode, XAPIC_DEFAULT_BASE)
from apwake.rtl.lapic.local_apic import MAX_LVT_INDEX, VERSION
from apwake.rtl.lapic.registers import Access, BY_NAME, Kind, REGISTERS
from apwake.sim.harness.codec import field_mask, pack, unpack
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.vip.lapic.bfm import GeneralProtection, make_icr
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.vip.lapic.model import x2apic_ldr

from .marks import needs_x2apic


ILLEGAL_ADDRESS = field_mask(Esr, "illegal_register_address")
RECEIVE_ILLEGAL = field_mask(Esr, "receive_illegal_vector")
TIMEOUT = dict(timeout_time=2, timeout_unit="ms")


def expected_reset(register, port):
    if register.name == "ID":
        return port.apic_id << 24
    if register.name == "VERSION":
        return VERSION | (MAX_LVT_INDEX << 16)
    return register.reset


async def read_esr(port):
    await port.write("ESR", 0)
    return await port.read("ESR")


async def expect_gp(port, coro, what):
    try:
        await coro
    except GeneralProtection:
        return
    raise AssertionError(f"{port.name}: {what} did not raise #GP")


@cocotb.test(**TIMEOUT)
async def test_reset_values(dut):
    """Every readable register of every APIC reads its reset value."""
    env = await FabricEnv.start(dut)
    for port in env.ports:
        for r in REGISTERS:
            if r.xapic not in (Access.RW, Access.RO):
                continue
            value = await port.mmio_read(r.offset)
            assert value == expected_reset(r, port), (
                f"{port.name}: {r.name} (offset {r.offset:#05x}) reads {value:#010x} after "
                f"reset, expected {expected_reset(r, port):#010x}")
        assert await read_esr(port) == 0, f"{port.name}: reading the map set ESR bits"
        base = unpack(ApicBase, await port.rdmsr(MSR_IA32_APIC_BASE))
        assert base["enable"] == 1 and base["extd"] == 0, f"{port.name}: not in xAPIC mode at reset"
        assert base["bsp"] == (port.index == env.config.bsp_index), f"{port.name}: BSP flag {base['bsp']}"
        assert base["base"] << 12 == XAPIC_DEFAULT_BASE, f"{port.name}: base {base['base']:#x}"


@cocotb.test(**TIMEOUT)
async def test_storage_write_masks(dut):
    """Storage registers keep exactly their writable bits; LVT masks stay set while the APIC
    is software-disabled and can be cleared once it is enabled."""
    env = await FabricEnv.start(dut)
    port = env.ports[-1]
    storage = [r for r in REGISTERS if r.kind is Kind.STORAGE and r.xapic is Access.RW]
    for pattern in (0xFFFF_FFFF, 0x0000_0000, 0xA5A5_5A5A):
        for r in storage:
            await port.mmio_write(r.offset, pattern)
            expected = (pattern & r.write_mask) | (r.reset & ~r.write_mask & 0xFFFF_FFFF)
            if r.name.startswith("LVT_"):
                expected |= 0x1_0000   # software-disabled (SVR[8] = 0) forces the mask bit
            if r.name == "TIMER_INITIAL" and env.config.local_interrupts and (
                    unpack(Lvt, await port.read("LVT_TIMER"))["timer_mode"] is TimerMode.TSC_DEADLINE):
                expected = 0           # ignored in TSC-deadline mode (SDM vol. 3 §11.5.4.1)
            if r.name == "SVR":
                # restore a software-disabled SVR so the LVT rule above keeps applying
                await port.mmio_write(r.offset, r.reset)
                got = await port.mmio_read(r.offset)
                assert got == r.reset, f"{port.name}: SVR restore read {got:#x}"
                continue
            got = await port.mmio_read(r.offset)
            assert got == expected, (f"{port.name}: {r.name} written {pattern:#010x} reads "
                                     f"{got:#010x}, expected {expected:#010x}")
    await port.software_enable()
    lvt = BY_NAME["LVT_LINT0"]
    await port.mmio_write(lvt.offset, 0x0000_0700)
    assert await port.mmio_read(lvt.offset) == 0x700, "LVT mask not clearable when enabled"
    await port.write("SVR", 0xFF)   # software-disable again: masks are forced back on
    assert await port.mmio_read(lvt.offset) == 0x1_0700, "disabling did not mask the LVT"
    # The all-zero pattern wrote Fixed LVTs with vector 0 (SDM vol. 3 §11.5.2)
    expected_esr = RECEIVE_ILLEGAL if env.config.local_interrupts else 0
    assert await read_esr(port) == expected_esr


@cocotb.test(**TIMEOUT)
async def test_xapic_read_only_and_write_only(dut):
    """xAPIC: writes to read-only registers are ignored, reads of write-only ones return 0,
    neither sets ESR."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    for name in ("ID", "VERSION", "PPR", "APR", "ISR0", "TMR3", "IRR7", "TIMER_CURRENT"):
        r = BY_NAME[name]
        before = await port.mmio_read(r.offset)
        await port.mmio_write(r.offset, 0xFFFF_FFFF)
        after = await port.mmio_read(r.offset)
        assert after == before, f"{port.name}: write to read-only {name} changed it to {after:#x}"
    assert await port.mmio_read(BY_NAME["EOI"].offset) == 0
    assert await read_esr(port) == 0, "read-only/write-only accesses set ESR"


@cocotb.test(**TIMEOUT)
async def test_illegal_register_address(dut):
    """Reserved, unaligned and out-of-page MMIO offsets set ESR bit 7 and read 0."""
    env = await FabricEnv.start(dut)
    port = env.ports[-1]
    known = {r.offset for r in REGISTERS if r.xapic is not Access.ABSENT}
    reserved = [off for off in range(0, 0x400, 0x10) if off not in known]
    assert reserved, "no reserved offsets left in the map"
    for offset in reserved[:6] + [0x304, 0x302, 0x1000, 0x3F0]:
        assert await read_esr(port) == 0
        value = await port.mmio_read(offset)
        assert value == 0, f"{port.name}: reserved offset {offset:#x} read {value:#x}"
        esr = await read_esr(port)
        assert esr == ILLEGAL_ADDRESS, (f"{port.name}: access to reserved offset {offset:#x} "
                                        f"gave ESR {esr:#x}, expected {ILLEGAL_ADDRESS:#x}")


@cocotb.test(**TIMEOUT)
async def test_esr_write_then_read(dut):
    """Errors stay invisible until ESR is written; a second write clears them."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    await port.write("ESR", 0)
    await port.mmio_read(0x040)                       # reserved: sets the pending error
    assert await port.read("ESR") == 0, "error visible before the ESR write"
    await port.write("ESR", 0x1234)                   # xAPIC: any value latches
    assert await port.read("ESR") == ILLEGAL_ADDRESS, "error not latched by the write"
    await port.write("ESR", 0)
    assert await port.read("ESR") == 0, "second ESR write did not clear"


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_x2apic_msr_rules(dut):
    """x2APIC: 32-bit ID, derived read-only LDR, and #GP for every illegal access of docs/spec/lapic.md
    §1 and §8 #13-#15."""
    env = await FabricEnv.start(dut)
    port = env.ports[-1]
    await expect_gp(port, port.rdmsr(BY_NAME["ID"].msr), "RDMSR of x2APIC ID in xAPIC mode")
    await port.enter_x2apic()
    assert await port.read("ID") == port.apic_id
    assert await port.read("LDR") == x2apic_ldr(port.apic_id)
    assert await port.read("VERSION") == VERSION | (MAX_LVT_INDEX << 16)
    # MMIO page is gone in x2APIC mode
    assert await port.mmio_read(BY_NAME["ID"].offset) == 0xFFFF_FFFF
    for msr in (0x809, 0x80C, 0x80E, 0x831, 0x800, 0x801, 0x840, 0x8FF, 0x900, 0xBFF):
        await expect_gp(port, port.rdmsr(msr), f"RDMSR {msr:#x}")
    checks = [
        ("EOI", 1), ("ESR", 1), ("TPR", 0x100), ("TPR", 1 << 32), ("SVR", 1 << 9),
        ("ID", 0), ("LDR", 0), ("PPR", 0), ("ISR0", 0), ("SELF_IPI", 0x100),
        ("ICR", 1 << 13), ("ICR", 1 << 16), ("ICR", 1 << 20), ("LVT_LINT0", 1 << 20),
        ("LVT_TIMER", 1 << 14), ("LVT_ERROR", 1 << 14),   # remote IRR exists only in LINT0/1
    ]
    for name, value in checks:
        await expect_gp(port, port.write(name, value), f"WRMSR {name} = {value:#x}")
    for name in ("EOI", "SELF_IPI"):
        await expect_gp(port, port.read(name), f"RDMSR of write-only {name}")
    await port.write("TPR", 0x20)
    assert await port.read("TPR") == 0x20
    await port.write("LVT_LINT0", 0x1_4020)          # remote IRR: defined, read-only
    assert await port.read("LVT_LINT0") == 0x1_0020
    await port.write("ESR", 0)
    await port.write("EOI", 0)
    assert await port.read("ESR") == 0, "x2APIC accesses set ESR (only #GP is expected)"
    # ICR delivery-status bit 12 is ignored on write (Intel) and reads 0
    await port.write("ICR", (port.apic_id << 32) | (1 << 12) | 0x40)
    assert await port.read("ICR") == (port.apic_id << 32) | 0x40


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_apic_base_transitions(dut):
    """Legal and illegal IA32_APIC_BASE transitions; disabling resets the APIC and removes it
    from the fabric; INIT keeps the mode."""
    env = await FabricEnv.start(dut)
    port = env.ports[-1]
    base = await port.rdmsr(MSR_IA32_APIC_BASE)
    disabled = base & ~pack(ApicBase, enable=1, extd=1)
    xapic = disabled | pack(ApicBase, enable=1)
    x2apic = xapic | pack(ApicBase, extd=1)
    invalid = disabled | pack(ApicBase, extd=1)
    await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, invalid), "EN=0/EXTD=1")
    await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, xapic | 1), "reserved bit 0")
    await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, xapic | (1 << 40)), "reserved bit 40")
    await port.write("TPR", 0x30)
    await port.wrmsr(MSR_IA32_APIC_BASE, x2apic)
    assert await port.read("TPR") == 0x30, "xAPIC -> x2APIC lost TPR"
    await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, xapic), "x2APIC -> xAPIC directly")
    # an NMI pending towards the CPU does not survive the APIC's global disable
    await port.write("ICR", make_icr(0, DeliveryMode.NMI, dest=port.apic_id, x2apic=True))
    await port.wait_nmi(timeout_cycles=20)
    await port.wrmsr(MSR_IA32_APIC_BASE, disabled)
    assert port.x2apic is False
    assert not port.nmi.value, "a disabled APIC kept an NMI pending"
    assert await port.mmio_read(BY_NAME["ID"].offset) == 0xFFFF_FFFF, "disabled APIC MMIO"
    await expect_gp(port, port.rdmsr(BY_NAME["ID"].msr), "x2APIC MSR while disabled")
    await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, x2apic), "disabled -> x2APIC directly")
    await port.wrmsr(MSR_IA32_APIC_BASE, xapic)
    assert await port.read("TPR") == 0, "re-enabled APIC kept TPR: disable did not reset it"
    relocated = (xapic & ~field_mask(ApicBase, "base")) | pack(ApicBase, base=0xFED00)
    await port.wrmsr(MSR_IA32_APIC_BASE, relocated)
    assert unpack(ApicBase, await port.rdmsr(MSR_IA32_APIC_BASE))["base"] == 0xFED00
    # BSP is hardware's to say, not software's
    await port.wrmsr(MSR_IA32_APIC_BASE, relocated ^ pack(ApicBase, bsp=1))
    got = unpack(ApicBase, await port.rdmsr(MSR_IA32_APIC_BASE))["bsp"]
    assert got == (port.index == env.config.bsp_index), "software changed the BSP flag"


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: not config.x2apic_support)
async def test_no_x2apic_mode(dut):
    """An APIC built without x2APIC mode (x2apic_support=False, SDM vol. 3A §11.12.1): EXTD reads
    0 and setting it is #GP on every port, the x2APIC MSRs stay #GP, and the APIC keeps working
    in xAPIC mode (a TPR write reads back; an IPI arrives)."""
    env = await FabricEnv.start(dut)
    for port in env.ports:
        base = await port.rdmsr(MSR_IA32_APIC_BASE)
        assert unpack(ApicBase, base)["extd"] == 0 and unpack(ApicBase, base)["enable"] == 1
        await expect_gp(port, port.wrmsr(MSR_IA32_APIC_BASE, base | pack(ApicBase, extd=1)), "EXTD set")
        assert await port.rdmsr(MSR_IA32_APIC_BASE) == base, "a refused EXTD write changed IA32_APIC_BASE"
        await expect_gp(port, port.rdmsr(BY_NAME["ID"].msr), "x2APIC ID MSR")
        await port.write("TPR", 0x20 + port.index)
        assert await port.read("TPR") == 0x20 + port.index
    sender, target = env.ports[0], env.ports[-1]
    await target.software_enable()
    await target.write("TPR", 0)
    await sender.send_ipi(make_icr(0x31, dest=target.apic_id))
    await target.wait_intr(timeout_cycles=200)
    assert (await target.inta())[0] == 0x31


@cocotb.test(**TIMEOUT)
async def test_msr_path_in_xapic_mode(dut):
    """MSR accesses outside IA32_APIC_BASE are #GP in xAPIC mode, as is any foreign MSR."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    for msr in (MSR_X2APIC_FIRST + 2, BY_NAME["ICR"].msr, 0xC001_0130, 0x3A):
        await expect_gp(port, port.rdmsr(msr), f"RDMSR {msr:#x} in xAPIC mode")
        await expect_gp(port, port.wrmsr(msr, 0), f"WRMSR {msr:#x} in xAPIC mode")
