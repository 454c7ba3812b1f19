"""The local interrupt sources of every APIC (Intel SDM vol. 3 §11.5): the timer in one-shot,
periodic and TSC-deadline modes with its divider, LINT0/LINT1 in each delivery mode and trigger,
the error LVT, illegal LVT vectors; and two choices of :class:`apwake.rtl.lapic.LocalApic` that tests
written for KVM and the SDM disagree with an older apwake on: the xAPIC ICR read-back and the
SIPI latch.

Timing checks are in fabric clock cycles, which the timer counts by definition (the
``LocalApic`` docstring documents the rate); they hold in simulated time only.
"""

import cocotb
from cocotb.triggers import First, Timer

from apwake.rtl.lapic.layouts import (DeliveryMode, Esr, Lvt, MSR_IA32_TSC,
                               MSR_IA32_TSC_DEADLINE, Shorthand, TimerMode, Trigger,
                               TIMER_DIVIDE_VALUES as DIVIDE)
from apwake.rtl.lapic.registers import BY_NAME
from apwake.sim.harness.codec import field_mask, pack
from apwake.sim.vip.lapic.bfm import GeneralProtection, make_icr
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.harness.pytest_plugin import applies_to

TIMEOUT = dict(timeout_time=2, timeout_unit="ms")
#: implemented in every configuration (the smallest has 64 vectors)
VECTOR = 0x30
MASKED = field_mask(Lvt, "mask")
REMOTE_IRR = field_mask(Lvt, "remote_irr")
RECEIVE_ILLEGAL = field_mask(Esr, "receive_illegal_vector")
SEND_ILLEGAL = field_mask(Esr, "send_illegal_vector")


def timer_lvt(vector, mode=TimerMode.ONE_SHOT, *, masked=False):
    return pack(Lvt, vector=vector, timer_mode=mode, mask=masked)


def lint_lvt(vector=0, mode=DeliveryMode.FIXED, *, level=False, active_low=False, masked=False):
    return pack(Lvt, vector=vector, delivery_mode=mode, polarity=active_low, mask=masked,
                trigger=Trigger.LEVEL if level else Trigger.EDGE)


async def ready(port):
    """Software-enable the APIC with TPR 0 and an empty ESR."""
    await port.software_enable()
    await port.write("TPR", 0)
    await read_esr(port)


async def ready_port(dut, index=0):
    """Start the fabric; port ``index``, :func:`ready`."""
    env = await FabricEnv.start(dut)
    port = env.ports[index]
    await ready(port)
    return port


async def read_esr(port):
    await port.write("ESR", 0)
    return await port.read("ESR")


async def intr_after(port, start_ns, limit_cycles, what):
    """Cycles from ``start_ns`` to the rise of INTR; fails after ``limit_cycles``."""
    if not port.intr.value:
        rise = port.rising_edge("intr")
        if await First(rise, Timer(limit_cycles * CLOCK_NS, "ns")) is not rise:
            raise AssertionError(f"{port.name}: {what}: no interrupt within {limit_cycles} cycles")
    return round((cocotb.utils.get_sim_time("ns") - start_ns) / CLOCK_NS)


async def no_intr(port, cycles, what):
    if port.intr.value:
        raise AssertionError(f"{port.name}: {what}: an interrupt is pending")
    rise = port.rising_edge("intr")
    if await First(rise, Timer(cycles * CLOCK_NS, "ns")) is rise:
        raise AssertionError(f"{port.name}: {what}: unexpected interrupt")


async def take(port):
    """INTA then EOI; returns the vector."""
    vector, _ = await port.inta()
    await port.write("EOI", 0)
    return vector


async def tmr_bit(port, vector):
    return (await port.read(f"TMR{vector // 32}") >> (vector % 32)) & 1


# --- timer ---------------------------------------------------------------------------------------

@cocotb.test(**TIMEOUT)
async def test_timer_one_shot(dut):
    """One-shot: the interrupt comes after initial count x divisor cycles (within one divide
    period, the divider runs freely), once; the current count counts down and stays 0."""
    port = await ready_port(dut)
    await port.write("LVT_TIMER", timer_lvt(VECTOR))
    count = 20
    for divisor in (1, 2, 16):
        await port.write("TIMER_DIVIDE", DIVIDE[divisor])
        await port.write("TIMER_INITIAL", count)
        start = port.last_access_ns
        first = await port.read("TIMER_CURRENT")
        second = await port.read("TIMER_CURRENT")
        assert count >= first >= second > 0, (
            f"{port.name}: ÷{divisor}: TIMER_CURRENT read {first} then {second} after "
            f"TIMER_INITIAL={count}")
        cycles = await intr_after(port, start, count * divisor + 4, f"one-shot ÷{divisor}")
        assert (count - 1) * divisor < cycles <= count * divisor, (
            f"{port.name}: one-shot ÷{divisor} of {count} fired after {cycles} cycles, expected "
            f"{(count - 1) * divisor + 1} to {count * divisor}")
        assert await take(port) == VECTOR
        assert await port.read("TIMER_CURRENT") == 0
        await no_intr(port, 3 * count * divisor, f"one-shot ÷{divisor} after firing")


@cocotb.test(**TIMEOUT)
async def test_timer_periodic(dut):
    """Periodic: one interrupt every initial-count cycles (÷1), exactly; writing 0 stops it."""
    port = await ready_port(dut)
    await port.write("TIMER_DIVIDE", DIVIDE[1])
    await port.write("LVT_TIMER", timer_lvt(VECTOR, TimerMode.PERIODIC))
    period = 60
    await port.write("TIMER_INITIAL", period)
    start = port.last_access_ns
    for k in range(1, 4):
        cycles = await intr_after(port, start, period * k + 4, f"periodic tick {k}")
        assert cycles == period * k, (
            f"{port.name}: periodic tick {k} after {cycles} cycles, expected {period * k}")
        assert await take(port) == VECTOR
    await port.write("TIMER_INITIAL", 0)
    assert await port.read("TIMER_CURRENT") == 0
    await no_intr(port, 3 * period, "periodic timer after TIMER_INITIAL=0")


@cocotb.test(**TIMEOUT)
async def test_timer_masked(dut):
    """A masked timer counts down to 0 but raises nothing."""
    port = await ready_port(dut)
    await port.write("TIMER_DIVIDE", DIVIDE[1])
    await port.write("LVT_TIMER", timer_lvt(VECTOR, masked=True))
    await port.write("TIMER_INITIAL", 40)
    await no_intr(port, 100, "masked timer")
    assert await port.read("TIMER_CURRENT") == 0, f"{port.name}: the masked timer did not count"
    assert await port.read(f"IRR{VECTOR // 32}") == 0


@cocotb.test(**TIMEOUT)
async def test_tsc_deadline(dut):
    """TSC-deadline: IA32_TSC counts cycles; the interrupt comes when the TSC reaches
    IA32_TSC_DEADLINE, which then reads 0; TIMER_INITIAL is ignored and TIMER_CURRENT reads 0;
    outside this mode the MSR reads 0 and ignores writes; a mode switch disarms; IA32_TSC
    writes are #GP."""
    port = await ready_port(dut)
    # outside TSC-deadline mode
    await port.write("LVT_TIMER", timer_lvt(VECTOR))
    await port.wrmsr(MSR_IA32_TSC_DEADLINE, 1)
    assert await port.rdmsr(MSR_IA32_TSC_DEADLINE) == 0
    await no_intr(port, 50, "deadline written in one-shot mode")

    await port.write("LVT_TIMER", timer_lvt(VECTOR, TimerMode.TSC_DEADLINE))
    tsc0 = await port.rdmsr(MSR_IA32_TSC)
    tsc0_ns = port.last_access_ns
    tsc1 = await port.rdmsr(MSR_IA32_TSC)
    elapsed = round((port.last_access_ns - tsc0_ns) / CLOCK_NS)
    assert tsc1 - tsc0 == elapsed, (
        f"{port.name}: IA32_TSC advanced {tsc1 - tsc0} in {elapsed} cycles")
    await port.write("TIMER_INITIAL", 1000)
    assert await port.read("TIMER_INITIAL") == 0, "TIMER_INITIAL written in TSC-deadline mode"
    assert await port.read("TIMER_CURRENT") == 0
    deadline = tsc0 + 200
    await port.wrmsr(MSR_IA32_TSC_DEADLINE, deadline)
    assert await port.rdmsr(MSR_IA32_TSC_DEADLINE) == deadline
    cycles = await intr_after(port, tsc0_ns, 260, "TSC deadline")
    assert abs(cycles - 200) <= 2, (
        f"{port.name}: deadline TSC+200 fired {cycles} cycles after the TSC read")
    assert await take(port) == VECTOR
    assert await port.rdmsr(MSR_IA32_TSC_DEADLINE) == 0, "deadline not cleared after firing"

    # a deadline already in the past fires at once
    await port.wrmsr(MSR_IA32_TSC_DEADLINE, 1)
    await intr_after(port, port.last_access_ns, 4, "deadline in the past")
    assert await take(port) == VECTOR

    # mode switches disarm: an armed deadline, a running count
    await port.wrmsr(MSR_IA32_TSC_DEADLINE, (await port.rdmsr(MSR_IA32_TSC)) + 100)
    await port.write("LVT_TIMER", timer_lvt(VECTOR))
    await port.write("LVT_TIMER", timer_lvt(VECTOR, TimerMode.TSC_DEADLINE))
    assert await port.rdmsr(MSR_IA32_TSC_DEADLINE) == 0, "deadline kept across a mode switch"
    await no_intr(port, 200, "disarmed deadline")
    await port.write("LVT_TIMER", timer_lvt(VECTOR))
    await port.write("TIMER_INITIAL", 500)
    await port.write("LVT_TIMER", timer_lvt(VECTOR, TimerMode.TSC_DEADLINE))
    await port.write("LVT_TIMER", timer_lvt(VECTOR))
    assert await port.read("TIMER_INITIAL") == 0 and await port.read("TIMER_CURRENT") == 0
    try:
        await port.wrmsr(MSR_IA32_TSC, 0)
    except GeneralProtection:
        pass
    else:
        raise AssertionError(f"{port.name}: WRMSR IA32_TSC did not #GP")


# --- LINT0 / LINT1 -------------------------------------------------------------------------------

@cocotb.test(**TIMEOUT)
async def test_lint_edge(dut):
    """Edge-triggered Fixed LINT: one interrupt per active edge, none while held or masked;
    polarity selects the active level; TMR stays 0."""
    port = await ready_port(dut, -1)
    await port.write("LVT_LINT0", lint_lvt(VECTOR))
    port.set_lint(0, 1)
    await intr_after(port, cocotb.utils.get_sim_time("ns"), 4, "LINT0 rising edge")
    assert await take(port) == VECTOR
    assert await tmr_bit(port, VECTOR) == 0, "edge-triggered LINT set TMR"
    await no_intr(port, 20, "LINT0 held high (edge-triggered)")
    port.set_lint(0, 0)
    await port.write("LVT_LINT0", lint_lvt(VECTOR, masked=True))
    port.set_lint(0, 1)
    await no_intr(port, 20, "masked LINT0 edge")
    # active low on LINT1: the falling pin edge is the active edge
    port.set_lint(1, 1)
    await port.write("LVT_LINT1", lint_lvt(VECTOR + 1, active_low=True))
    await no_intr(port, 10, "LINT1 high with active-low polarity")
    port.set_lint(1, 0)
    await intr_after(port, cocotb.utils.get_sim_time("ns"), 4, "LINT1 active-low edge")
    assert await take(port) == VECTOR + 1


@cocotb.test(**TIMEOUT)
async def test_lint_level(dut):
    """Level-triggered Fixed LINT: IRR, TMR and remote IRR while active; no new request until
    the EOI of its vector; then again while the pin stays active; nothing after it drops."""
    port = await ready_port(dut)
    await port.write("LVT_LINT1", lint_lvt(VECTOR, level=True))
    port.set_lint(1, 1)
    await intr_after(port, cocotb.utils.get_sim_time("ns"), 4, "level LINT1")
    assert await port.read("LVT_LINT1") & REMOTE_IRR, "remote IRR not set"
    assert await tmr_bit(port, VECTOR) == 1, "level-triggered LINT did not set TMR"
    vector, _ = await port.inta()
    assert vector == VECTOR
    await no_intr(port, 20, "level LINT1 before EOI (remote IRR set)")
    await port.write("EOI", 0)
    await intr_after(port, cocotb.utils.get_sim_time("ns"), 4, "level LINT1 still active after EOI")
    port.set_lint(1, 0)
    assert await take(port) == VECTOR
    assert not await port.read("LVT_LINT1") & REMOTE_IRR, "remote IRR not cleared by EOI"
    await no_intr(port, 20, "level LINT1 after the pin dropped")


@cocotb.test(**TIMEOUT)
async def test_lint_modes(dut):
    """LINT delivery modes: NMI and SMI raise the CPU's events (edge, even when the LVT says
    level); ExtINT (no 8259) and a masked NMI raise nothing; INIT resets the APIC and raises
    INIT."""
    port = await ready_port(dut)
    await port.write("LVT_LINT1", lint_lvt(mode=DeliveryMode.NMI, level=True))
    port.set_lint(1, 1)
    await port.wait_nmi(timeout_cycles=4)
    await port.acknowledge("nmi")
    await no_intr(port, 10, "NMI LINT held")
    assert not port.nmi.value, "NMI LINT held high raised a second NMI (NMI is edge-triggered)"
    port.set_lint(1, 0)
    await port.write("LVT_LINT1", lint_lvt(mode=DeliveryMode.NMI, masked=True))
    port.set_lint(1, 1)
    await no_intr(port, 10, "masked NMI LINT")
    assert not port.nmi.value, "masked NMI LINT raised NMI"
    port.set_lint(1, 0)
    await port.write("LVT_LINT0", lint_lvt(mode=DeliveryMode.SMI))
    port.set_lint(0, 1)
    await port.wait_smi(timeout_cycles=4)
    await port.acknowledge("smi")
    port.set_lint(0, 0)
    await port.write("LVT_LINT0", lint_lvt(VECTOR, mode=DeliveryMode.EXTINT))
    port.set_lint(0, 1)
    await no_intr(port, 10, "ExtINT LINT0 (no 8259)")
    assert not (port.nmi.value or port.smi.value or port.init.value)
    port.set_lint(0, 0)
    await port.write("LVT_LINT0", lint_lvt(mode=DeliveryMode.INIT))
    port.set_lint(0, 1)
    await port.wait_init(timeout_cycles=4)
    await port.acknowledge("init")
    assert await port.read("SVR") == BY_NAME["SVR"].reset, "INIT from LINT0 did not reset the APIC"


# --- error LVT and illegal vectors ---------------------------------------------------------------

@cocotb.test(**TIMEOUT)
async def test_error_lvt(dut):
    """The error LVT fires when errors become pending, not again while they stay pending, again
    after the ESR write that empties them; masked, errors are still collected."""
    port = await ready_port(dut)
    await port.write("LVT_ERROR", VECTOR + 2)
    illegal_self = make_icr(5, shorthand=Shorthand.SELF)     # Fixed to self with vector 5
    await port.send_ipi(illegal_self)
    await intr_after(port, port.last_access_ns, 8, "error LVT after an illegal vector")
    assert await take(port) == VECTOR + 2
    await port.send_ipi(illegal_self)            # errors still pending: no new interrupt
    await no_intr(port, 20, "second error while the ESR is not empty")
    esr = await read_esr(port)
    assert esr & SEND_ILLEGAL and esr & RECEIVE_ILLEGAL, f"{port.name}: ESR {esr:#x}"
    await port.send_ipi(illegal_self)
    await intr_after(port, port.last_access_ns, 8, "error LVT after the ESR was emptied")
    assert await take(port) == VECTOR + 2
    await read_esr(port)
    await port.write("LVT_ERROR", (VECTOR + 2) | MASKED)
    await port.send_ipi(illegal_self)
    await no_intr(port, 20, "masked error LVT")
    assert await read_esr(port) & SEND_ILLEGAL, "error not collected while the LVT is masked"


@cocotb.test(**TIMEOUT)
async def test_lvt_illegal_vector(dut):
    """An LVT written with Fixed mode and a vector 0-15 sets receive-illegal-vector, masked or
    not (SDM §11.5.2); other modes do not; a timer firing with such a vector sets it again and
    no IRR bit."""
    port = await ready_port(dut)
    for name, value in (("LVT_LINT0", lint_lvt(3)), ("LVT_TIMER", timer_lvt(5, masked=True)),
                        ("LVT_ERROR", 15 | MASKED)):
        await port.write(name, value)
        esr = await read_esr(port)
        assert esr == RECEIVE_ILLEGAL, f"{port.name}: {name}={value:#x}: ESR {esr:#x}"
    await port.write("LVT_LINT1", lint_lvt(0, DeliveryMode.NMI))
    await port.write("LVT_LINT0", lint_lvt(16))
    assert await read_esr(port) == 0, "NMI LVT with vector 0 or Fixed vector 16 set an error"
    await port.write("TIMER_DIVIDE", DIVIDE[1])
    await port.write("LVT_TIMER", timer_lvt(8))
    await read_esr(port)                          # the write's own error
    await port.write("TIMER_INITIAL", 10)
    await no_intr(port, 30, "timer with vector 8")
    esr = await read_esr(port)
    assert esr == RECEIVE_ILLEGAL, f"{port.name}: timer fired with vector 8: ESR {esr:#x}"
    assert await port.read("IRR0") == 0


# --- ICR read-back and SIPI latch ----------------------------------------------------------------

@cocotb.test(**TIMEOUT)
async def test_icr_read_back(dut):
    """xAPIC ICR low reads back every written bit, reserved ones included, with bit 12 showing
    the delivery status (KVM's xapic_state_test); x2APIC reads back the 64-bit value."""
    port = await ready_port(dut)
    for value in (0xA5A5_A0A5, 0x5A5A_4F5A, 0xFFF3_EFFF & ~0x700):
        await port.write("ICR_HI", 0xFE00_0000)        # no such APIC: the IPI goes nowhere
        await port.write("ICR", value)
        await port.wait_idle()
        got = await port.read("ICR")
        assert got == value & ~(1 << 12), (
            f"{port.name}: ICR written {value:#010x} reads {got:#010x}")
    await read_esr(port)
    await port.enter_x2apic()
    value = make_icr(VECTOR, dest=0xFFFF_FFFE, x2apic=True)
    await port.write("ICR", value)
    assert await port.read("ICR") == value


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: config.n_cpus >= 2)
async def test_sipi_first_wins(dut):
    """Two SIPIs reach a CPU in wait-for-SIPI before it acknowledges: the first vector is kept
    (SDM vol. 3 §9.4.4); a SIPI after the acknowledge is latched again."""
    env = await FabricEnv.start(dut)
    sender, target = env.ports[0], env.ports[1]
    for vector in (0x10, 0x20):
        await sender.send_ipi(make_icr(vector, DeliveryMode.STARTUP, dest=target.apic_id))
        await sender.wait_idle()
    assert await target.wait_sipi(timeout_cycles=10) == 0x10, (
        f"{target.name}: second SIPI replaced the first")
    await target.acknowledge("sipi")
    assert not target.sipi.value
    await sender.send_ipi(make_icr(0x30, DeliveryMode.STARTUP, dest=target.apic_id))
    assert await target.wait_sipi(timeout_cycles=100) == 0x30
