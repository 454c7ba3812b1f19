"""IPI storm: every APIC sends K Fixed IPIs to random destinations at once while every CPU
services its interrupts (nesting by priority class); :class:`apwake.sim.vip.lapic.scoreboard.IpiScoreboard`
checks exactly-once delivery, routing against the reference model, and priority order.

K comes from ``APWAKE_STORM_IPIS`` (default 200).  The random seed is cocotb's
(``COCOTB_RANDOM_SEED``), printed in the log and in every failure.
"""

import os
import random

import cocotb
from cocotb.triggers import Event, First, ReadOnly, RisingEdge, gather

from apwake.rtl.lapic.layouts import DestMode, Shorthand
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.vip.lapic.model import ApicState
from apwake.sim.vip.lapic.scoreboard import IpiScoreboard

SPURIOUS = 0xFF
IPIS = int(os.environ.get("APWAKE_STORM_IPIS", "200"))


def cluster_ldr(index):
    """xAPIC cluster-model logical ID: 15 clusters of 4."""
    return ((index // 4) % 15) << 4 | 1 << (index % 4)


def random_ipi(rng, env, sender, x2apic):
    """A random legal Fixed IPI: ``(icr, expected bus fields)``."""
    vector = rng.randrange(0x20, 0x100)
    roll = rng.random()
    ids = env.config.apic_ids
    fields = {"vector": vector, "shorthand": Shorthand.NONE, "dest_mode": DestMode.PHYSICAL}
    if roll < 0.02:
        fields["shorthand"] = Shorthand.ALL_INCLUDING_SELF if roll < 0.01 else Shorthand.ALL_EXCLUDING_SELF
        fields["destination"] = 0
    elif roll < 0.08:
        fields["shorthand"] = Shorthand.SELF
        fields["destination"] = 0
    elif roll < 0.30:
        fields["dest_mode"] = DestMode.LOGICAL
        if x2apic:
            target = rng.choice(ids)
            fields["destination"] = (target >> 4) << 16 | rng.randrange(1, 1 << 16)
        else:
            fields["destination"] = rng.randrange(0, 15) << 4 | rng.randrange(1, 16)
    elif roll < 0.31:
        fields["destination"] = 0xFFFF_FFFF if x2apic else 0xFF
    else:
        fields["destination"] = rng.choice(ids)
    icr = make_icr(vector, dest=fields["destination"], dest_mode=fields["dest_mode"],
                   shorthand=fields["shorthand"], x2apic=x2apic)
    return icr, fields


async def storm(dut, *, x2apic):
    env = await FabricEnv.start(dut)
    rng = random.Random(cocotb.RANDOM_SEED)
    seed_note = f"(COCOTB_RANDOM_SEED={cocotb.RANDOM_SEED})"
    states = []
    for port in env.ports:
        if x2apic:
            await port.enter_x2apic()
        else:
            await port.write("DFR", 0x0FFF_FFFF)              # cluster model
            await port.write("LDR", cluster_ldr(port.index) << 24)
        await port.software_enable(SPURIOUS)
        states.append(ApicState(apic_id=port.apic_id, mode="x2apic" if x2apic else "xapic",
                                sw_enabled=True, ldr=cluster_ldr(port.index) << 24,
                                dfr=0x0FFF_FFFF))
    board = IpiScoreboard(states, spurious_vector=SPURIOUS)
    plans = {p.index: [random_ipi(rng, env, p, x2apic) for _ in range(IPIS)] for p in env.ports}
    senders_done = Event()
    start = len(env.monitor.cycles)

    async def sender(port):
        for icr, fields in plans[port.index]:
            board.expect(port.index, **fields)
            await port.send_ipi(icr)

    async def handler(port):
        log = board.receivers[port.index]
        in_service = 0
        while True:
            await ReadOnly()
            if port.intr.value:
                await RisingEdge(port.clk)
                vector, edge_ns = await port.inta()
                log.intas.append((edge_ns, vector))
                in_service += 1
                continue
            if in_service:
                await RisingEdge(port.clk)
                await port.write("EOI", 0)
                log.eois.append(port.last_access_ns)
                in_service -= 1
                continue
            if senders_done.is_set():
                return
            await First(port.rising_edge("intr"), senders_done.wait())

    handlers = [cocotb.start_soon(handler(p)) for p in env.ports]
    await gather(*(sender(p) for p in env.ports))
    total = sum(len(v) for v in plans.values())
    await env.monitor.wait_for(start + total, timeout_cycles=50 * total,
                               what=f"storm of {total} IPIs {seed_note}")
    senders_done.set()
    for task in handlers:
        await task
    try:
        stats = board.check(env.monitor.since(start))
    except AssertionError as error:
        raise AssertionError(f"{error} {seed_note}") from None
    dut._log.info("storm %s: %s over %d CPUs, %s", "x2APIC" if x2apic else "xAPIC",
                  stats, env.n, seed_note)
    assert stats["delivered"] + stats["merged"] == stats["accepts"]
    assert stats["messages"] == total


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_storm_xapic_cluster(dut):
    """Storm in xAPIC mode: physical, cluster-logical, broadcast and shorthand destinations."""
    await storm(dut, x2apic=False)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_storm_x2apic(dut):
    """Storm in x2APIC mode: 32-bit physical, x2APIC-logical, broadcast and shorthands."""
    await storm(dut, x2apic=True)
