"""Every driver call is exactly one transfer, whatever simulation phase it is called from.

A value written in the time step of a rising clock edge, before the edge, is sampled by that
edge and again by the next one: a register write or an ICR write taken twice.  Each test enters
one phase (right after a rising or a falling edge, after a ``Timer`` ending on a rising edge, on
a falling edge or mid-cycle, in ``ReadOnly`` or ``ReadWrite``) and then makes one access through
:class:`apwake.sim.vip.lapic.bfm.ApicPort`; the effect must be that of exactly one transfer:

* one ESR write latches the pending send-accept error once (ESR reads 0x4; a second write would
  latch the now-empty pending bits and read 0);
* one ICR write (xAPIC: ICR_HI then ICR_LO; x2APIC: one WRMSR) puts exactly one message on the
  fabric bus, counted by the trace monitor.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, ReadWrite, RisingEdge, Timer
from cocotb.utils import get_sim_time

from apwake.rtl.lapic.layouts import DeliveryMode, Esr
from apwake.sim.harness.handshake import seeds
from apwake.sim.harness.codec import field_mask
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.vip.lapic.env import FabricEnv

__all__ = []

TIMEOUT = dict(timeout_time=1, timeout_unit="ms")
SEND_ACCEPT = field_mask(Esr, "send_accept")
#: no APIC has this ID in the small fabrics the test runs on: nobody accepts, ESR send-accept
ABSENT_ID = 0x77
#: cycles after a message in which a duplicate would have appeared (the one-deep transmit slot
#: and the bus register make it at most a few cycles later)
QUIET_CYCLES = 20


async def _after_rising():
    await RisingEdge(cocotb.top.clk)


async def _after_falling():
    await FallingEdge(cocotb.top.clk)


async def _timer(ns):
    # aligned on a rising edge first, so the timer's end is at a known point of the cycle
    await RisingEdge(cocotb.top.clk)
    await Timer(ns, "ns")


async def _read_only():
    await _timer(10 * CLOCK_NS)
    await ReadOnly()


async def _read_write():
    await _timer(10 * CLOCK_NS)
    await ReadWrite()


#: how each test reaches the phase it calls the driver from
#: (names short enough for cocotb to put them in the test name)
PHASES = {
    "rising": _after_rising,                                  # right after a rising edge
    "falling": _after_falling,                                # right after a falling edge
    "timer_edge": lambda: _timer(10 * CLOCK_NS),              # a Timer ending on a rising edge
    "timer_fall": lambda: _timer(10 * CLOCK_NS - CLOCK_NS // 2),  # ... on a falling edge
    "timer_mid": lambda: _timer(10 * CLOCK_NS - 3),           # ... mid-cycle
    "read_only": _read_only,                                  # ReadOnly of a rising-edge step
    "read_write": _read_write,                                # ReadWrite of a rising-edge step
}


async def _one_message(env, send, what):
    """Run ``send`` and check the bus carried exactly one message for it."""
    start = len(env.monitor.cycles)
    await send
    await env.monitor.wait_for(start + 1, what=what)
    await Timer(QUIET_CYCLES * CLOCK_NS, "ns")     # a duplicate would be on the bus by now
    messages = env.monitor.since(start)
    assert len(messages) == 1, (
        f"{what}: {len(messages)} bus messages for one ICR write: "
        + ", ".join(f"port {c.source} at {c.edge_ns} ns vector {c.msg['vector']:#x}" for c in messages))


#: without jitter, how long after each phase's moment (ns) the clock edge that takes the access
#: comes: the first rising edge after the next falling edge (sim/harness/handshake.py
#: sync_to_clock; from right after a rising edge on Verilator bus_access writes at the next
#: falling edge, and the same edge takes it).  A timer ending on a falling edge may run before or
#: after that edge in its time step, so it has no one answer.
TAKEN_AFTER_NS = {"rising": CLOCK_NS, "falling": 1.5 * CLOCK_NS, "timer_edge": CLOCK_NS,
                  "timer_mid": CLOCK_NS + 3, "read_only": CLOCK_NS, "read_write": CLOCK_NS}


async def _check_esr_write(env, port, phase, mode):
    """Raise a send-accept error, then one ESR write from ``phase``: ESR must read 0x4, and
    without jitter the write is taken :data:`TAKEN_AFTER_NS` after the phase's moment."""
    await _one_message(env, port.send_ipi(make_icr(0x40, dest=ABSENT_ID, x2apic=port.x2apic)),
                       f"{port.name}: IPI to absent APIC ID {ABSENT_ID:#x}")
    await PHASES[phase]()
    moment = get_sim_time("ns")
    await port.write("ESR", 0)
    if phase in TAKEN_AFTER_NS and not seeds():
        assert round(port.last_access_ns - moment, 3) == TAKEN_AFTER_NS[phase], (
            f"{port.name} ({mode}): a write from phase {phase} at {moment} ns was taken by the edge "
            f"at {port.last_access_ns} ns, not {moment + TAKEN_AFTER_NS[phase]} ns")
    esr = await port.read("ESR")
    assert esr == SEND_ACCEPT, (
        f"{port.name} ({mode}): one ESR write from phase {phase} left ESR = {esr:#x}, expected "
        f"{SEND_ACCEPT:#x} (send accept latched once); 0 means the write was taken twice")
    await port.write("ESR", 0)                     # clear what was latched


async def _check_icr_write(env, port, target, phase, mode):
    icr = make_icr(0x50, DeliveryMode.FIXED, dest=target.apic_id, x2apic=port.x2apic)

    async def send():
        await PHASES[phase]()
        await port.send_ipi(icr)
    await _one_message(env, send(), f"{port.name} ({mode}): ICR write from phase {phase}")


async def _start(dut, mode):
    env = await FabricEnv.start(dut)
    for p in env.ports:
        if mode == "x2apic":
            await p.enter_x2apic()
        await p.software_enable()
    return env, env.ports[0], env.ports[-1]


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(mode=["xapic", "x2apic"], phase=list(PHASES))
async def test_one_esr_write(dut, mode, phase):
    """From ``phase``, one ESR write (MMIO or WRMSR) latches the pending errors once."""
    env, port, _ = await _start(dut, mode)
    await _check_esr_write(env, port, phase, mode)


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(mode=["xapic", "x2apic"], phase=list(PHASES))
async def test_one_ipi_per_icr_write(dut, mode, phase):
    """From ``phase``, one ICR write (xAPIC: ICR_HI, ICR_LO; x2APIC: one WRMSR) is one bus
    message."""
    env, port, target = await _start(dut, mode)
    await _check_icr_write(env, port, target, phase, mode)
