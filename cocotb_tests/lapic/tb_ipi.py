"""IPI delivery through the fabric: delivery modes, destinations, shorthands, delivery status,
priority/EOI, ESR errors and the defined behaviour for illegal ICR values (docs/spec/lapic.md §2-§6, §8).

Who accepted each message is read from the fabric's trace (the monitor) and compared with the
independent reference model in :mod:`apwake.sim.vip.lapic.model`; receivers are checked through their
own registers and CPU-side event outputs.
"""

import cocotb
from cocotb.triggers import gather

from apwake.rtl.lapic.layouts import (DeliveryMode, DestMode, Esr, Level, Shorthand, Trigger,
                               X2APIC_BROADCAST, XAPIC_BROADCAST)
from apwake.rtl.lapic.registers import BY_NAME
from apwake.sim.harness.codec import field_mask
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.vip.lapic.model import ApicState, expected_acceptors
from apwake.sim.harness.pytest_plugin import applies_to

from .marks import needs_x2apic

SEND_ACCEPT = field_mask(Esr, "send_accept")
SEND_ILLEGAL = field_mask(Esr, "send_illegal_vector")
RECEIVE_ILLEGAL = field_mask(Esr, "receive_illegal_vector")
BUSY = 1 << 12
TIMEOUT = dict(timeout_time=5, timeout_unit="ms")
F, LP, NMI, SMI, INIT, SIPI = (DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY, DeliveryMode.NMI,
                               DeliveryMode.SMI, DeliveryMode.INIT, DeliveryMode.STARTUP)
LOGICAL = DestMode.LOGICAL


#: tests whose vectors span all 16 priority classes
full_vectors = applies_to(lambda config: config.n_vectors == 256)


def at_least(n):
    return applies_to(lambda config: config.n_cpus >= n)


def sample(env, k=8):
    """Up to ``k`` ports spread over the fabric (all of them for small N)."""
    if env.n <= k:
        return list(env.ports)
    step = env.n / k
    return [env.ports[int(i * step)] for i in range(k)]


async def enable_all(env, *, x2apic=False):
    async def one(port):
        if x2apic:
            await port.enter_x2apic()
        await port.software_enable()
    await gather(*(one(p) for p in env.ports))


async def read_esr(port):
    await port.write("ESR", 0)
    return await port.read("ESR")


async def irr_has(port, vector):
    bank = await port.read(f"IRR{vector // 32}")
    return bool(bank >> (vector % 32) & 1)


async def send_and_trace(env, port, icr):
    """Send ``icr`` from ``port`` and return the bus cycle that carried it."""
    start = len(env.monitor.cycles)
    await port.send_ipi(icr)
    await env.monitor.wait_for(start + 1, what=f"IPI {icr:#x} from {port.name}")
    cycle = env.monitor.cycles[start]
    assert cycle.source == port.index, f"unexpected sender {cycle.source} on the bus"
    return cycle


async def service(port, expected_vector):
    """Take the pending interrupt and EOI it; check it is ``expected_vector``."""
    await port.wait_intr(timeout_cycles=200)
    vector, _ = await port.inta()
    assert vector == expected_vector, f"{port.name}: INTA gave {vector:#x}, expected {expected_vector:#x}"
    isr = await port.read(f"ISR{vector // 32}")
    assert isr >> (vector % 32) & 1, f"{port.name}: vector {vector:#x} not in service after INTA"
    await port.write("EOI", 0)
    assert not (await port.read(f"ISR{vector // 32}")) >> (vector % 32) & 1, "EOI left ISR set"


@cocotb.test(**TIMEOUT)
async def test_fixed_physical(dut):
    """Fixed physical IPIs reach exactly their target: IRR, INTR, INTA, ISR, EOI."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    for k, port in enumerate(sample(env)):
        target = env.ports[(port.index + 1) % env.n]
        vector = 0x20 + k
        cycle = await send_and_trace(env, port, make_icr(vector, dest=target.apic_id))
        assert cycle.accept == {target.index}, (
            f"IPI from {port.name} to APIC {target.apic_id:#x} accepted by ports {set(cycle.accept)}")
        assert await irr_has(target, vector), f"{target.name}: vector {vector:#x} not in IRR"
        await service(target, vector)
        assert await read_esr(port) == 0 and await read_esr(target) == 0


@cocotb.test(**TIMEOUT)
@at_least(8)
async def test_delivery_status(dut):
    """xAPIC ICR bit 12 is set from the write until the message has been accepted."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    last = env.ports[-1]
    # Every port sends at once: the last port waits its round-robin turn, so its delivery
    # status is observably busy (whatever --jitter/--stall say: the point is one cycle).
    for port in env.ports:
        port.set_exact_timing()
    icrs = {p.index: make_icr(0x30, dest=env.ports[0].apic_id) for p in env.ports}
    await gather(*(p.send_ipi(icrs[p.index]) for p in env.ports[:-1]), last.send_ipi(icrs[last.index]))
    first = await last.read("ICR")
    await last.wait_idle()
    assert first == (icrs[last.index] & 0xFFFF_FFFF) | BUSY, (
        f"{last.name}: ICR read {first:#x} right after sending behind {env.n - 1} others; "
        f"expected delivery status set")
    assert await last.read("ICR") == icrs[last.index] & 0xFFFF_FFFF
    await env.monitor.wait_for(env.n)


@cocotb.test(**TIMEOUT)
async def test_shorthands(dut):
    """Self, all-including-self and all-excluding-self (Fixed), and all-excluding-self for
    INIT, SIPI and NMI; destination field ignored."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    port = env.ports[env.n // 2]
    everyone = set(range(env.n))
    cases = [
        (make_icr(0x21, shorthand=Shorthand.SELF, dest=0x55), {port.index}),
        (make_icr(0x22, shorthand=Shorthand.ALL_INCLUDING_SELF), everyone),
        (make_icr(0x23, shorthand=Shorthand.ALL_EXCLUDING_SELF), everyone - {port.index}),
        (make_icr(0, NMI, shorthand=Shorthand.ALL_EXCLUDING_SELF), everyone - {port.index}),
        (make_icr(0, INIT, shorthand=Shorthand.ALL_EXCLUDING_SELF), everyone - {port.index}),
        (make_icr(0x9A, SIPI, shorthand=Shorthand.ALL_EXCLUDING_SELF), everyone - {port.index}),
    ]
    for icr, expected in cases:
        start = len(env.monitor.cycles)
        await port.send_ipi(icr)
        await port.wait_idle()
        if not expected:   # N = 1, all-excluding-self: nobody to accept
            assert await read_esr(port) == SEND_ACCEPT
            continue
        await env.monitor.wait_for(start + 1)
        cycle = env.monitor.cycles[start]
        assert cycle.accept == expected, f"ICR {icr:#x}: accepted by {sorted(cycle.accept)}"
    for p in env.ports:
        if p is not port:
            assert p.init.value and p.nmi.value and p.sipi.value, f"{p.name}: broadcast lost"
            assert int(p.sipi_vector.value) == 0x9A
    assert not port.init.value, "all-excluding-self INIT reached the sender"


def _states(env, *, x2apic=False, ldr=None, dfr=0xFFFF_FFFF):
    return [ApicState(apic_id=p.apic_id, mode="x2apic" if x2apic else "xapic", sw_enabled=True,
                      ldr=(ldr(p) if ldr else 0), dfr=dfr) for p in env.ports]


async def _check_destinations(env, states, icrs, sender):
    for icr in icrs:
        cycle = await send_and_trace(env, sender, icr)
        expected = expected_acceptors(cycle.msg, sender.index, states)
        assert cycle.accept == expected, (
            f"ICR {icr:#x} from {sender.name}: hardware accepted on ports {sorted(cycle.accept)}, "
            f"reference model says {sorted(expected)}")
        if not expected:
            assert await read_esr(sender) == SEND_ACCEPT, "unaccepted IPI left no ESR trace"


@cocotb.test(**TIMEOUT)
async def test_logical_flat_and_cluster(dut):
    """xAPIC logical destinations in the flat and cluster models, physical broadcast and
    physical IDs nobody has, checked against the reference model."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    sender = env.ports[0]
    # the last APIC keeps LDR = 0 in the flat model: it must match nothing, broadcast included
    flat = lambda p: 0 if p.index == env.n - 1 and env.n > 1 else (1 << (p.index % 8)) << 24
    cluster = lambda p: (((p.index // 4) % 15) << 4 | 1 << (p.index % 4)) << 24
    for model, ldr, dfr in (("flat", flat, 0xFFFF_FFFF), ("cluster", cluster, 0x0FFF_FFFF)):
        await gather(*(p.write("LDR", ldr(p)) for p in env.ports))
        await gather(*(p.write("DFR", dfr) for p in env.ports))
        states = _states(env, ldr=ldr, dfr=dfr)
        if model == "flat":
            dests = [0x01, 0x02, 0x81, 0x0F, XAPIC_BROADCAST, 0x00]
        else:
            dests = [0x01, 0x13, 0x2F, 0x0F, 0xE1, XAPIC_BROADCAST, 0x00]
        icrs = [make_icr(0x30 + i, dest=d, dest_mode=LOGICAL) for i, d in enumerate(dests)]
        await _check_destinations(env, states, icrs, sender)
    missing = next(i for i in range(0xFF) if i not in env.config.apic_ids)
    icrs = [make_icr(0x3A, dest=XAPIC_BROADCAST), make_icr(0x3B, dest=missing)]
    await _check_destinations(env, _states(env), icrs, sender)


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_x2apic_destinations(dut):
    """x2APIC: 32-bit physical IDs, 0xFFFF_FFFF broadcast, 0xFF not a broadcast, logical
    destinations against the derived LDR."""
    env = await FabricEnv.start(dut)
    await enable_all(env, x2apic=True)
    sender = env.ports[-1]
    states = _states(env, x2apic=True)
    ids = [p.apic_id for p in sample(env, 4)]
    dests = [(d, DestMode.PHYSICAL) for d in ids + [X2APIC_BROADCAST, 0xFF, 0x1_0000 | ids[0]]]
    dests += [((id_ >> 4) << 16 | 1 << (id_ & 0xF), LOGICAL) for id_ in ids]
    dests += [(0x0000_FFFF, LOGICAL), (0x0001_0001, LOGICAL), (X2APIC_BROADCAST, LOGICAL)]
    icrs = [make_icr(0x20 + i, dest=d, dest_mode=m, x2apic=True) for i, (d, m) in enumerate(dests)]
    await _check_destinations(env, states, icrs, sender)


@cocotb.test(**TIMEOUT)
@at_least(2)
async def test_lowest_priority(dut):
    """Lowest priority goes to the one candidate with the lowest PPR class (ties: lowest
    port); software-disabled APICs are no candidates."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    group = sample(env, 4)
    for p in env.ports:
        await p.write("DFR", 0xFFFF_FFFF)
        await p.write("LDR", (0x01 if p in group else 0x02) << 24)
    sender = env.ports[-1]
    for k, p in enumerate(group):
        await p.write("TPR", 0x90 - 0x10 * k)        # the last of the group has the lowest
    cycle = await send_and_trace(env, sender, make_icr(0x31, LP, dest=0x01, dest_mode=LOGICAL))
    assert cycle.accept == {group[-1].index}, f"lowest priority went to {sorted(cycle.accept)}"
    assert await irr_has(group[-1], 0x31)
    for p in group:
        await p.write("TPR", 0x20)
    cycle = await send_and_trace(env, sender, make_icr(0x32, LP, dest=0x01, dest_mode=LOGICAL))
    assert cycle.accept == {group[0].index}, f"tie did not go to the lowest port: {sorted(cycle.accept)}"
    await group[0].write("SVR", 0xFF)                  # software-disable the tie winner
    cycle = await send_and_trace(env, sender, make_icr(0x33, LP, dest=0x01, dest_mode=LOGICAL))
    expected = {group[1].index} if len(group) > 1 else set()
    assert cycle.accept == expected, f"disabled APIC took a lowest-priority IPI: {sorted(cycle.accept)}"


@cocotb.test(**TIMEOUT)
@at_least(2)
@needs_x2apic
async def test_init_sipi(dut):
    """INIT resets the target APIC (ID, mode, BSP kept) and raises INIT; SIPI carries its
    vector; a later INIT clears a pending SIPI; INIT de-assert changes nothing."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    bsp, ap = env.ports[env.config.bsp_index], env.ports[(env.config.bsp_index + 1) % env.n]
    await ap.write("TPR", 0x40)
    await ap.write("LDR", 0x0F00_0000)
    await send_and_trace(env, bsp, make_icr(0, INIT, dest=ap.apic_id, trigger=Trigger.LEVEL))
    await ap.wait_init(timeout_cycles=10)
    # the APIC keeps its state until the CPU takes the INIT (a CPU in SMM holds it)
    assert await ap.read("TPR") == 0x40, "the APIC reset before its CPU took the INIT"
    await ap.acknowledge("init")
    assert not ap.init.value, "init stayed pending after init_ack"
    assert await ap.read("TPR") == 0 and await ap.read("LDR") == 0, "INIT did not reset the APIC"
    assert await ap.read("SVR") == BY_NAME["SVR"].reset, "INIT left the APIC software-enabled"
    assert (await ap.read("ID")) >> 24 == ap.apic_id, "INIT changed the APIC ID"

    await ap.write("TPR", 0x40)
    deassert = make_icr(0, INIT, dest=ap.apic_id, level=Level.DEASSERT, trigger=Trigger.LEVEL)
    cycle = await send_and_trace(env, bsp, deassert)
    assert cycle.accept == set(range(env.n)), "INIT de-assert is not a broadcast to every APIC"
    assert await ap.read("TPR") == 0x40 and not ap.init.value, "INIT de-assert reset a CPU"

    everyone = make_icr(0, INIT, shorthand=Shorthand.ALL_INCLUDING_SELF, level=Level.DEASSERT,
                        trigger=Trigger.LEVEL)
    cycle = await send_and_trace(env, bsp, everyone)
    assert cycle.accept == set(range(env.n)), "INIT de-assert to all-including-self refused"
    assert await read_esr(bsp) == 0 and not bsp.init.value and not ap.init.value

    cycle = await send_and_trace(env, bsp, make_icr(0x9A, SIPI, dest=ap.apic_id))
    assert cycle.accept == {ap.index}
    assert await ap.wait_sipi(timeout_cycles=10) == 0x9A
    await send_and_trace(env, bsp, make_icr(0, INIT, dest=ap.apic_id))
    await ap.wait_init(timeout_cycles=10)
    assert not ap.sipi.value, "INIT did not clear the pending SIPI"
    await ap.acknowledge("init")

    # x2APIC mode survives INIT
    await ap.enter_x2apic()
    await send_and_trace(env, bsp, make_icr(0, INIT, dest=ap.apic_id))
    await ap.wait_init(timeout_cycles=10)
    assert await ap.read("ID") == ap.apic_id, "x2APIC mode lost across INIT"
    assert await bsp.read("ESR") == 0


@cocotb.test(**TIMEOUT)
async def test_nmi_smi_and_software_disabled(dut):
    """A software-disabled APIC accepts INIT, NMI, SMI and SIPI but not Fixed; the sender of a
    Fixed IPI nobody accepted sees ESR send-accept."""
    env = await FabricEnv.start(dut)   # every APIC is software-disabled after reset
    sender = env.ports[0]
    target = env.ports[-1]
    for mode, vector, event in ((NMI, 0, "nmi"), (SMI, 0, "smi"), (INIT, 0, "init"),
                                (SIPI, 0x10, "sipi")):
        cycle = await send_and_trace(env, sender, make_icr(vector, mode, dest=target.apic_id))
        assert cycle.accept == {target.index}, f"{mode.name} to a disabled APIC not accepted"
        await getattr(target, f"wait_{event}")(timeout_cycles=5)
        await target.acknowledge(event)
        assert not getattr(target, event).value, f"{target.name}: {event}_ack did not clear it"
    assert await read_esr(sender) == 0
    cycle = await send_and_trace(env, sender, make_icr(0x35, dest=target.apic_id))
    assert cycle.accept == set(), "Fixed IPI accepted by a software-disabled APIC"
    assert not await irr_has(target, 0x35)
    assert await read_esr(sender) == SEND_ACCEPT, "lost IPI not reported in the sender's ESR"


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_illegal_vectors(dut):
    """Fixed/lowest-priority vectors 0-15: send-illegal at the sender, receive-illegal at each
    receiver, no IRR bit (docs/spec/lapic.md §8 #12); also for the x2APIC SELF IPI."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    sender, target = env.ports[0], env.ports[-1]
    for mode in (F, LP):
        cycle = await send_and_trace(env, sender, make_icr(0x05, mode, dest=target.apic_id))
        assert cycle.accept == {target.index}
        assert await read_esr(sender) == SEND_ILLEGAL | (RECEIVE_ILLEGAL if target is sender else 0)
        if target is not sender:
            assert await read_esr(target) == RECEIVE_ILLEGAL
        assert not await irr_has(target, 0x05) and not target.intr.value
    await target.enter_x2apic()
    await target.write("ESR", 0)
    await target.write("SELF_IPI", 0x0E)
    await env.monitor.wait_for(len(env.monitor.cycles) + 1)
    await target.write("ESR", 0)
    assert await target.read("ESR") == SEND_ILLEGAL | RECEIVE_ILLEGAL


@cocotb.test(**TIMEOUT)
async def test_refused_icr_values(dut):
    """Reserved delivery modes and non-Fixed modes with shorthand self/all-including-self are
    not sent and set send-accept (defined behaviour, LocalApic docstring); the ICR keeps the
    written value; nothing reaches the bus."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    port = env.ports[-1]
    refused = [
        make_icr(0x20, DeliveryMode.RESERVED_3, dest=port.apic_id),
        make_icr(0x20, DeliveryMode.EXTINT, dest=port.apic_id),
        make_icr(0x9A, SIPI, shorthand=Shorthand.SELF),
        make_icr(0, INIT, shorthand=Shorthand.ALL_INCLUDING_SELF),
        make_icr(0, NMI, shorthand=Shorthand.SELF),
        make_icr(0x30, LP, shorthand=Shorthand.ALL_INCLUDING_SELF),
    ]
    for icr in refused:
        start = len(env.monitor.cycles)
        await port.send_ipi(icr)
        assert await port.read("ICR") == icr & 0xFFFF_FFFF, "refused ICR did not read back"
        assert await read_esr(port) == SEND_ACCEPT, f"ICR {icr:#x} refused without ESR"
        # a legal marker IPI from the same port: nothing may come before it
        await port.send_ipi(make_icr(0x3F, shorthand=Shorthand.SELF))
        await env.monitor.wait_for(start + 1)
        cycle = env.monitor.cycles[start]
        assert cycle.msg["vector"] == 0x3F, f"refused ICR {icr:#x} reached the bus: {cycle.msg}"
        await service(port, 0x3F)
    assert not port.init.value and not port.nmi.value and not port.sipi.value


@cocotb.test(**TIMEOUT)
async def test_level_trigger_sent_as_edge(dut):
    """A level-triggered Fixed IPI is sent as edge/assert (docs/spec/lapic.md §8 #20): TMR stays 0."""
    env = await FabricEnv.start(dut)
    await enable_all(env)
    port = env.ports[0]
    icr = make_icr(0x26, shorthand=Shorthand.SELF, trigger=Trigger.LEVEL, level=Level.DEASSERT)
    cycle = await send_and_trace(env, port, icr)
    assert cycle.msg["trigger"] is Trigger.EDGE and cycle.msg["level"] is Level.ASSERT
    assert await irr_has(port, 0x26)
    assert await port.read("TMR1") == 0
    await service(port, 0x26)


@cocotb.test(**TIMEOUT)
@full_vectors
async def test_priority_tpr_eoi(dut):
    """Interrupts are delivered highest class first, only above PPR; INTA nests; EOI clears the
    highest ISR bit; INTA with nothing deliverable returns the spurious vector (docs/spec/lapic.md §5)."""
    env = await FabricEnv.start(dut)
    port = env.ports[-1]
    await port.software_enable(spurious_vector=0xEF)
    vectors = [0x31, 0x45, 0x47, 0x80, 0x2F, 0xFE, 0x5A]
    await port.write("TPR", 0xFF)                    # block everything while they arrive
    for v in vectors:
        await send_and_trace(env, port, make_icr(v, shorthand=Shorthand.SELF))
    for v in vectors:
        assert await irr_has(port, v), f"vector {v:#x} not pending"
    assert not port.intr.value, "INTR raised although TPR blocks every class"
    await port.write("TPR", 0x50)
    assert await port.read("PPR") == 0x50
    taken = []
    while port.intr.value:                           # nest: each INTA raises PPR
        vector, _ = await port.inta()
        taken.append(vector)
        assert await port.read("PPR") == vector & 0xF0, f"PPR after INTA of {vector:#x}"
    assert taken == [0xFE], f"nested INTA order {taken}"
    await port.write("EOI", 0)
    assert await port.read("PPR") == 0x50
    while port.intr.value:
        vector, _ = await port.inta()
        taken.append(vector)
        await port.write("EOI", 0)
    assert taken == [0xFE, 0x80], f"delivery order above TPR 0x50: {[hex(v) for v in taken]}"
    assert await irr_has(port, 0x5A), "class 5 (not above TPR 0x50) was delivered"
    vector, _ = await port.inta()
    assert vector == 0xEF, f"INTA with nothing deliverable gave {vector:#x}, not the spurious vector"
    assert await port.read("PPR") == 0x50, "spurious INTA changed ISR"
    await port.write("TPR", 0)
    for v in [v for v in sorted(vectors, reverse=True) if v not in taken]:
        await service(port, v)
    await port.write("EOI", 0)                        # EOI with an empty ISR: no effect
    assert await read_esr(port) == 0


@cocotb.test(**TIMEOUT)
async def test_apr(dut):
    """APR per the SDM: TPR while it covers the pending and in-service classes, else
    max(TPR & ISRV, IRRV) classes."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    await port.software_enable()
    await port.write("TPR", 0x3F)               # blocks 0x25 (class 2 <= 3)
    await send_and_trace(env, port, make_icr(0x25, shorthand=Shorthand.SELF))
    assert await port.read("APR") == 0x3F, "APR is not TPR while TPR covers every class"
    await port.write("TPR", 0x10)
    vector, _ = await port.inta()                # 0x25 in service, nothing pending
    assert vector == 0x25
    await port.write("TPR", 0x3F)
    assert await port.read("APR") == 0x3F        # TPR class 3 > ISRV class 2
    await port.write("TPR", 0x20)
    assert await port.read("APR") == 0x20        # max(2 & 2, 0) << 4
    await port.write("TPR", 0x10)
    assert await port.read("APR") == 0x00        # max(1 & 2, 0) << 4
    await port.write("EOI", 0)


@cocotb.test(**TIMEOUT)
async def test_same_vector_merges(dut):
    """Two Fixed IPIs of one vector before service: one in IRR, then one in IRR + one in ISR
    (docs/spec/lapic.md §8 #19)."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    await port.software_enable()
    for _ in range(2):
        await send_and_trace(env, port, make_icr(0x37, shorthand=Shorthand.SELF))
    vector, _ = await port.inta()
    assert vector == 0x37 and not await irr_has(port, 0x37)
    await send_and_trace(env, port, make_icr(0x37, shorthand=Shorthand.SELF))
    assert await irr_has(port, 0x37), "a second 0x37 while one is in service was lost"
    assert not port.intr.value, "same class delivered while in service"
    await port.write("EOI", 0)
    await service(port, 0x37)


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_x2apic_back_to_back(dut):
    """x2APIC ICR writes without polling (no delivery status): back-pressure keeps every one,
    in order."""
    env = await FabricEnv.start(dut)
    await enable_all(env, x2apic=True)
    port = env.ports[-1]
    start = len(env.monitor.cycles)
    dests = [env.ports[i % env.n].apic_id for i in range(24)]
    for i, d in enumerate(dests):
        await port.write("ICR", make_icr(0x20 + i, dest=d, x2apic=True))
    await env.monitor.wait_for(start + len(dests))
    got = [c.msg["vector"] for c in env.monitor.since(start)]
    assert got == [0x20 + i for i in range(len(dests))], f"x2APIC IPIs lost or reordered: {got}"


@cocotb.test(**TIMEOUT)
@needs_x2apic
async def test_all_send_in_the_same_cycle(dut):
    """Every APIC sends at once: each message is on the bus exactly once, round-robin."""
    env = await FabricEnv.start(dut)
    await enable_all(env, x2apic=True)
    for port in env.ports:
        port.set_exact_timing()        # one cycle for all, whatever --jitter/--stall say
    start = len(env.monitor.cycles)
    icrs = [make_icr(0x20 + p.index % 0x20, dest=env.ports[(p.index + 1) % env.n].apic_id,
                     x2apic=True) for p in env.ports]
    await gather(*(p.write("ICR", icr) for p, icr in zip(env.ports, icrs)))
    await env.monitor.wait_for(start + env.n)
    cycles = env.monitor.since(start)
    assert sorted(c.source for c in cycles) == list(range(env.n)), "a message was lost or duplicated"
    for c in cycles:
        assert c.accept == {(c.source + 1) % env.n}
    edges = [c.edge_ns for c in cycles]
    assert edges == sorted(edges) and len(set(edges)) == len(edges)
    # edge times are float ns with a few ps of offset: compare whole nanoseconds
    assert round(edges[-1] - edges[0]) == (env.n - 1) * 10, "the bus idled while messages waited"


@cocotb.test(**TIMEOUT)
@at_least(2)
@needs_x2apic
async def test_fair_arbitration(dut):
    """With every APIC sending continuously, no sender waits more than N-1 other grants."""
    env = await FabricEnv.start(dut)
    await enable_all(env, x2apic=True)
    per_port = 6
    start = len(env.monitor.cycles)
    requested = {p.index: [] for p in env.ports}

    async def flood(port):
        for i in range(per_port):
            await port.write("ICR", make_icr(0x30 + i, shorthand=Shorthand.SELF, x2apic=True))
            requested[port.index].append(port.last_access_ns)   # tx_valid rises at this edge

    await gather(*(flood(p) for p in env.ports))
    await env.monitor.wait_for(start + per_port * env.n)
    cycles = env.monitor.since(start)
    period = 10
    for port in env.ports:
        own = [c for c in cycles if c.source == port.index]
        assert len(own) == per_port, f"{port.name}: {len(own)} of {per_port} delivered"
        for request_ns, mine in zip(requested[port.index], own):
            # grants between this request and its own grant (bus edges are grant edge + 1)
            others = [c for c in cycles if c.source != port.index
                      and request_ns + 2 * period <= c.edge_ns < mine.edge_ns]
            assert len(others) <= env.n - 1, (
                f"{port.name} waited {len(others)} other grants (> N-1 = {env.n - 1})")


@cocotb.test(**TIMEOUT)
@applies_to(lambda config: config.n_vectors < 256)
async def test_unimplemented_vectors(dut):
    """With fewer vectors implemented, a vector beyond them is refused with receive-illegal."""
    env = await FabricEnv.start(dut)
    port = env.ports[0]
    await port.software_enable()
    n = env.config.n_vectors
    await send_and_trace(env, port, make_icr(n + 1, shorthand=Shorthand.SELF))
    assert await read_esr(port) == RECEIVE_ILLEGAL
    assert not port.intr.value
    for v in (0x20, n - 1, 0x1F):
        await send_and_trace(env, port, make_icr(v, shorthand=Shorthand.SELF))
    for v in (n - 1, 0x20, 0x1F):
        await service(port, v)
    assert await read_esr(port) == 0
