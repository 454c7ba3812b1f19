"""Each part of the local APIC alone, in Amaranth's simulator (issue 11 part 4).

The cocotb tests (cocotb_tests/lapic) check the whole APIC on the fabric under Verilator; these
check what each part does at its own ports, in milliseconds.
"""

import pytest
from amaranth.lib.data import Layout

from apwake.rtl.lapic.esr import ErrorStatus
from apwake.rtl.lapic.events import PendingEvents
from apwake.rtl.lapic.icr_sender import IcrSender
from apwake.rtl.lapic.interrupt_state import InterruptState
from apwake.rtl.lapic.layouts import (ICR_X2APIC_RESERVED, MSR_IA32_APIC_BASE, MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE,
                                      XAPIC_MAX_ID, ApicBase, DeliveryMode, DestMode, Icr, Level, Lvt, Shorthand,
                                      TimerMode,
                                      Trigger, FabricMessage, TIMER_DIVIDE_VALUES, XAPIC_DEFAULT_BASE)
from apwake.rtl.lapic.local_sources import LocalSources
from apwake.rtl.lapic.receiver import ACCEPT_DELAYS, Receiver
from apwake.rtl.lapic.register_file import RegisterFile, VERSION
from apwake.rtl.lapic.registers import BY_NAME
from apwake.rtl.lapic.signatures import Space
from apwake.rtl.lapic.timer import ApicTimer
from apwake.sim.harness.codec import pack, unpack
from amaranth_sim import simulate

NV = 32   # small vector count: fast to simulate, the logic is the same at 256




async def pulse_write(ctx, write, name, data):
    """One taken register write of ``name`` on a RegisterWriteSignature input."""
    ctx.set(write.valid, 1)
    ctx.set(write.index, BY_NAME[name].index)
    ctx.set(write.data, data)
    await ctx.tick()
    ctx.set(write.valid, 0)


def message(**fields):
    """A fabric message as senders make them: asserted unless said otherwise."""
    return pack(FabricMessage, **{"level": Level.ASSERT, **fields})


# --- register file ----------------------------------------------------------------------------

async def access(ctx, bus, *, space, addr, write=0, wdata=0):
    """One register access; returns (rdata, gp) of its response."""
    ctx.set(bus.req_valid, 1)
    ctx.set(bus.space, space)
    ctx.set(bus.addr, addr)
    ctx.set(bus.write, write)
    ctx.set(bus.wdata, wdata)
    assert ctx.get(bus.req_ready)
    await ctx.tick()
    ctx.set(bus.req_valid, 0)
    assert ctx.get(bus.resp_valid)
    return ctx.get(bus.rdata), ctx.get(bus.gp)


def test_register_file_reads_reset_values_and_decodes_modes():
    dut = RegisterFile(n_vectors=NV, local_interrupts=True)

    async def bench(ctx):
        ctx.set(dut.apic_id, 0x23)
        ctx.set(dut.ppr, 0x40)
        read = lambda space, addr: access(ctx, dut.bus, space=space, addr=addr)
        assert await read(Space.MMIO, BY_NAME["ID"].offset) == (0x23 << 24, 0)
        assert await read(Space.MMIO, BY_NAME["VERSION"].offset) == (BY_NAME["VERSION"].reset, 0)
        assert VERSION == BY_NAME["VERSION"].reset & 0xFF
        for name in ("SVR", "DFR", "LVT_TIMER", "TPR"):
            assert await read(Space.MMIO, BY_NAME[name].offset) == (BY_NAME[name].reset, 0)
        assert await read(Space.MMIO, BY_NAME["PPR"].offset) == (0x40, 0)
        # an x2APIC MSR in xAPIC mode is #GP; an unaligned MMIO offset is an illegal address
        assert (await read(Space.MSR, BY_NAME["TPR"].msr))[1] == 1
        ctx.set(dut.bus.req_valid, 1)
        ctx.set(dut.bus.space, Space.MMIO)
        ctx.set(dut.bus.addr, 0x84)
        ctx.set(dut.bus.write, 0)
        assert ctx.get(dut.illegal_address)
        await ctx.tick()
        ctx.set(dut.bus.req_valid, 0)
        # into x2APIC mode: LDR is derived from the ID, the MMIO page reads all-ones
        _, gp = await access(ctx, dut.bus, space=Space.MSR, addr=0x1B, write=1,
                             wdata=XAPIC_DEFAULT_BASE | 0xC00)
        assert not gp and ctx.get(dut.x2apic)
        assert await read(Space.MSR, BY_NAME["LDR"].msr) == ((0x2 << 16) | (1 << 3), 0)
        assert await read(Space.MMIO, BY_NAME["TPR"].offset) == (0xFFFF_FFFF, 0)
        # x2APIC: reserved bits and read-only registers are #GP
        assert (await access(ctx, dut.bus, space=Space.MSR, addr=BY_NAME["TPR"].msr, write=1,
                             wdata=0x100))[1] == 1
        assert (await access(ctx, dut.bus, space=Space.MSR, addr=BY_NAME["PPR"].msr, write=1))[1] == 1

    simulate(dut, bench)


@pytest.mark.parametrize("apic_id", [0xFF, 0x100, 0x123_4567])
def test_register_file_an_id_above_0xfe_is_x2apic_only(apic_id):
    """From reset in x2APIC mode (IA32_APIC_BASE reads EXTD = 1), the ID MSR gives the 32-bit
    ID, and every IA32_APIC_BASE write that would leave x2APIC mode is #GP; 0xFE stays xAPIC."""
    dut = RegisterFile(n_vectors=NV, local_interrupts=False)

    async def bench(ctx):
        ctx.set(dut.apic_id, apic_id)
        await ctx.tick()
        assert ctx.get(dut.x2apic)
        base, gp = await access(ctx, dut.bus, space=Space.MSR, addr=MSR_IA32_APIC_BASE)
        assert not gp and unpack(ApicBase, base)["extd"] == 1 and unpack(ApicBase, base)["enable"] == 1
        assert await access(ctx, dut.bus, space=Space.MSR, addr=BY_NAME["ID"].msr) == (apic_id, 0)
        xapic = base & ~pack(ApicBase, extd=1)
        for value in (xapic, xapic & ~pack(ApicBase, enable=1)):
            assert (await access(ctx, dut.bus, space=Space.MSR, addr=MSR_IA32_APIC_BASE, write=1,
                                 wdata=value))[1] == 1, hex(value)
        assert ctx.get(dut.x2apic)
        ctx.set(dut.apic_id, XAPIC_MAX_ID)
        await ctx.tick()
        assert not ctx.get(dut.x2apic)

    simulate(dut, bench)


def test_register_file_hands_writes_on_and_holds_icr_writes_while_busy():
    dut = RegisterFile(n_vectors=NV, local_interrupts=False)

    async def bench(ctx):
        bus = dut.bus
        ctx.set(bus.req_valid, 1)
        ctx.set(bus.space, Space.MMIO)
        ctx.set(bus.addr, BY_NAME["ICR"].offset)
        ctx.set(bus.write, 1)
        ctx.set(bus.wdata, 0x4030)
        ctx.set(dut.tx_busy, 1)
        assert not ctx.get(bus.req_ready) and not ctx.get(dut.write.valid)
        ctx.set(dut.tx_busy, 0)
        assert ctx.get(bus.req_ready) and ctx.get(dut.write.valid)
        assert ctx.get(dut.write.index) == BY_NAME["ICR"].index and ctx.get(dut.write.data) == 0x4030
        # a TPR write lands in storage through the write mask
        ctx.set(bus.addr, BY_NAME["TPR"].offset)
        ctx.set(bus.wdata, 0x1234)
        await ctx.tick()
        ctx.set(bus.req_valid, 0)
        await ctx.tick()
        assert ctx.get(dut.tpr) == 0x34
        # clearing IA32_APIC_BASE.EN pulses `disabling`; soft reset restores the storage
        ctx.set(bus.req_valid, 1)
        ctx.set(bus.space, Space.MSR)
        ctx.set(bus.addr, 0x1B)
        ctx.set(bus.wdata, XAPIC_DEFAULT_BASE)
        assert ctx.get(dut.disabling)
        ctx.set(dut.soft_reset, 1)
        await ctx.tick()
        ctx.set(bus.req_valid, 0)
        ctx.set(dut.soft_reset, 0)
        assert ctx.get(dut.tpr) == 0 and not ctx.get(dut.enabled)

    simulate(dut, bench)


# --- ICR sender -------------------------------------------------------------------------------

def test_icr_sender_holds_the_message_until_done():
    dut = IcrSender()

    async def bench(ctx):
        await pulse_write(ctx, dut.write, "ICR_HI", 0x0300_0000)
        assert ctx.get(dut.icr.destination) == 0x0300_0000
        ctx.set(dut.write.valid, 1)
        ctx.set(dut.write.index, BY_NAME["ICR"].index)
        ctx.set(dut.write.data, pack(Icr, vector=0x40, delivery_mode=DeliveryMode.FIXED))
        assert not ctx.get(dut.send_accept) and not ctx.get(dut.send_illegal)
        await ctx.tick()
        ctx.set(dut.write.valid, 0)
        assert ctx.get(dut.tx_valid)                     # delivery status: in flight
        msg = ctx.get(dut.tx_msg)
        assert (msg.vector, msg.destination, msg.x2apic) == (0x40, 0x03, 0)
        assert msg.trigger == Trigger.EDGE and msg.level == Level.ASSERT
        await ctx.tick().repeat(3)
        assert ctx.get(dut.tx_valid)                     # held until the fabric is done
        ctx.set(dut.tx_done, 1)
        ctx.set(dut.tx_accepted, 0)
        assert ctx.get(dut.send_accept)                  # nobody accepted it
        await ctx.tick()
        ctx.set(dut.tx_done, 0)
        assert not ctx.get(dut.tx_valid)                 # idle again

    simulate(dut, bench)


@pytest.mark.parametrize(("icr", "sent", "send_accept", "send_illegal"), [
    (dict(vector=0x30, delivery_mode=DeliveryMode.NMI, shorthand=Shorthand.SELF), False, 1, 0),
    (dict(vector=0x30, delivery_mode=DeliveryMode.RESERVED_3), False, 1, 0),
    (dict(vector=0x05, delivery_mode=DeliveryMode.FIXED), True, 0, 1),
    (dict(delivery_mode=DeliveryMode.INIT, trigger=Trigger.LEVEL, level=Level.DEASSERT,
          shorthand=Shorthand.ALL_INCLUDING_SELF), True, 0, 0),
])
def test_icr_sender_checks(icr, sent, send_accept, send_illegal):
    dut = IcrSender()

    async def bench(ctx):
        ctx.set(dut.write.valid, 1)
        ctx.set(dut.write.index, BY_NAME["ICR"].index)
        ctx.set(dut.write.data, pack(Icr, **icr))
        assert (ctx.get(dut.send_accept), ctx.get(dut.send_illegal)) == (send_accept, send_illegal)
        await ctx.tick()
        assert ctx.get(dut.tx_valid) == sent
        if icr.get("level") == Level.DEASSERT:
            assert ctx.get(dut.tx_msg.level) == Level.DEASSERT

    simulate(dut, bench)


# --- receiver ---------------------------------------------------------------------------------

def test_receiver_matches_destinations_and_accepts():
    dut = Receiver(n_vectors=NV)

    async def bench(ctx):
        ctx.set(dut.apic_id, 0x03)
        ctx.set(dut.enabled, 1)
        ctx.set(dut.sw_enabled, 1)
        ctx.set(dut.dfr, 0xFFFF_FFFF)
        ctx.set(dut.ldr, 0x0400_0000)
        ctx.set(dut.priority, 0x2)

        def send(**fields):
            ctx.set(dut.rx_msg.as_value(), message(**fields))

        def matched():
            return ctx.get(dut.rx_match)

        send(vector=0x11, destination=0x03)
        assert matched() and ctx.get(dut.rx_priority) == 0x2
        assert ctx.get(dut.irr_set) == 0                  # no bus cycle yet
        ctx.set(dut.rx_valid, 1)
        assert ctx.get(dut.irr_set) == 1 << 0x11
        send(vector=0x11, destination=0x04)
        assert not matched()
        send(vector=0x11, destination=0xFF)              # xAPIC broadcast
        assert matched()
        send(vector=0x11, destination=0xFF, x2apic=1)    # an x2APIC sender's ID 0xFF
        assert not matched()
        send(vector=0x11, destination=0x0103, x2apic=1)  # no aliasing onto xAPIC ID 3
        assert not matched()
        send(vector=0x11, dest_mode=DestMode.LOGICAL, destination=0x06)   # flat model
        assert matched()
        ctx.set(dut.ldr, 0)                               # LDR 0 matches no logical destination
        send(vector=0x11, dest_mode=DestMode.LOGICAL, destination=0xFF)
        assert not matched()
        send(vector=0x11, shorthand=Shorthand.ALL_EXCLUDING_SELF)
        ctx.set(dut.rx_self, 1)
        assert not matched()
        ctx.set(dut.rx_self, 0)
        send(vector=0x05, destination=0x03)              # illegal vector: ESR, no IRR bit
        assert ctx.get(dut.illegal_vector) and ctx.get(dut.irr_set) == 0
        send(vector=0x40, destination=0x03)              # at or above n_vectors
        assert ctx.get(dut.illegal_vector)
        send(vector=0x11, delivery_mode=DeliveryMode.LOWEST_PRIORITY, destination=0x03)
        assert matched() and ctx.get(dut.irr_set) == 0   # a candidate, not granted
        ctx.set(dut.lp_grant, 1)
        assert ctx.get(dut.irr_set) == 1 << 0x11
        ctx.set(dut.sw_enabled, 0)                       # software-disabled: Fixed no, NMI yes
        send(vector=0x11, destination=0x03)
        assert not matched()
        send(delivery_mode=DeliveryMode.NMI, destination=0x03)
        assert matched() and ctx.get(dut.nmi)
        send(vector=0x9A, delivery_mode=DeliveryMode.STARTUP, destination=0x03)
        assert ctx.get(dut.sipi) and ctx.get(dut.sipi_vector) == 0x9A
        send(delivery_mode=DeliveryMode.INIT, destination=0x03)
        assert ctx.get(dut.init)
        send(delivery_mode=DeliveryMode.INIT, level=Level.DEASSERT, trigger=Trigger.LEVEL,
             destination=0x77)                           # reaches everyone, raises nothing
        assert matched() and not ctx.get(dut.init)
        ctx.set(dut.enabled, 0)
        assert not matched()

    simulate(dut, bench, clocked=False)


#: the pipelined fabric's delay from the match (cycle 0) to the acceptance (cycle ``_D``)
_D = ACCEPT_DELAYS[-1]


@pytest.mark.parametrize("fields, changes, accepted", [
    # the match is the bus cycle's: software-disabled after it, the message still arrives
    (dict(vector=0x11), {1: {"sw_enabled": 0}}, True),
    # a reset from the bus cycle to the cycle before the acceptance drops a Fixed or
    # lowest-priority message (the reset clears its IRR bit), not a SIPI or an NMI
    (dict(vector=0x11), {0: {"soft_reset": 1}}, False),
    (dict(vector=0x11), {1: {"soft_reset": 1}, 2: {"soft_reset": 0}}, False),
    (dict(vector=0x11), {_D - 1: {"soft_reset": 1}}, False),
    (dict(vector=0x11, delivery_mode=DeliveryMode.LOWEST_PRIORITY), {1: {"soft_reset": 1}, _D: {"lp_grant": 1}},
     False),
    (dict(vector=0x9A, delivery_mode=DeliveryMode.STARTUP), {1: {"soft_reset": 1}}, True),
    (dict(delivery_mode=DeliveryMode.NMI), {0: {"soft_reset": 1}}, True),
    # in the acceptance cycle itself it meets the acceptance, as on the one-cycle fabric
    (dict(vector=0x11), {_D: {"soft_reset": 1}}, True),
    # disabling drops every mode
    (dict(vector=0x9A, delivery_mode=DeliveryMode.STARTUP), {1: {"disabling": 1}}, False),
    (dict(vector=0x9A, delivery_mode=DeliveryMode.STARTUP), {_D - 1: {"disabling": 1}}, False),
    (dict(vector=0x11), {0: {"disabling": 1}}, False),
    # lowest priority: accepted with the grant of the acceptance cycle, not one before
    (dict(vector=0x12, delivery_mode=DeliveryMode.LOWEST_PRIORITY), {_D: {"lp_grant": 1}}, True),
    (dict(vector=0x12, delivery_mode=DeliveryMode.LOWEST_PRIORITY),
     {_D - 1: {"lp_grant": 1}, _D: {"lp_grant": 0}}, False),
])
def test_receiver_with_a_delay_accepts_what_it_matched_later(fields, changes, accepted):
    """The pipelined fabric's receiver (rtl/lapic/receiver.py "Delay"): matched against the
    registers of the bus cycle (cycle 0), accepted in cycle ``ACCEPT_DELAYS[-1]`` exactly, with
    ``lp_grant`` of that cycle; a reset before then drops what it clears, disabling drops
    everything.  ``changes`` are inputs set from a cycle on."""
    dut = Receiver(n_vectors=NV, delay=_D)
    mode = fields.get("delivery_mode", DeliveryMode.FIXED)

    async def bench(ctx):
        for name, value in (("apic_id", 0x03), ("enabled", 1), ("sw_enabled", 1), ("dfr", 0xFFFF_FFFF)):
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.rx_msg.as_value(), message(destination=0x03, **fields))
        ctx.set(dut.rx_valid, 1)
        assert ctx.get(dut.rx_match)
        raised, in_flight = [], []
        for cycle in range(_D + 2):
            if cycle == 1:
                ctx.set(dut.rx_valid, 0)
                ctx.set(dut.rx_msg.as_value(), 0)          # the bus moves on
            for name, value in changes.get(cycle, {}).items():
                ctx.set(getattr(dut, name), value)
            raised.append({DeliveryMode.STARTUP: ctx.get(dut.sipi) and ctx.get(dut.sipi_vector) == 0x9A,
                           DeliveryMode.NMI: ctx.get(dut.nmi)}.get(mode, ctx.get(dut.irr_set) == 1 << fields.get(
                               "vector", 0)))
            in_flight.append(ctx.get(dut.in_flight))
            await ctx.tick()
        assert raised == [cycle == _D and accepted for cycle in range(_D + 2)]
        assert in_flight[0] == 0 and in_flight[-1] == 0
        if not any(name in ("soft_reset", "disabling") for change in changes.values() for name in change):
            assert in_flight == [0] + [1] * _D + [0]        # on its way from the match to the acceptance

    simulate(dut, bench)


# --- interrupt state --------------------------------------------------------------------------

def test_interrupt_state_priorities_inta_and_eoi():
    dut = InterruptState(n_vectors=NV, trigger_modes=True)

    async def bench(ctx):
        ctx.set(dut.enabled, 1)
        ctx.set(dut.svr.as_value(), 0x1FF)
        ctx.set(dut.tpr, 0x10)
        ctx.set(dut.set_edge, (1 << 0x15) | (1 << 0x1A))
        await ctx.tick()
        ctx.set(dut.set_edge, 0)
        assert ctx.get(dut.ppr) == 0x10 and ctx.get(dut.intr) == 0   # class 1 is not above TPR
        ctx.set(dut.tpr, 0x00)
        assert ctx.get(dut.intr) and ctx.get(dut.apr) == 0x10
        ctx.set(dut.inta, 1)
        await ctx.tick()
        ctx.set(dut.inta, 0)
        assert ctx.get(dut.inta_done) and ctx.get(dut.inta_vector) == 0x1A
        assert ctx.get(dut.isr) == 1 << 0x1A and ctx.get(dut.irr) == 1 << 0x15
        assert ctx.get(dut.ppr) == 0x10 and not ctx.get(dut.intr)   # PPR from ISR
        ctx.set(dut.tpr, 0x25)
        assert ctx.get(dut.ppr) == 0x25                              # TPR above ISR class
        ctx.set(dut.tpr, 0)
        ctx.set(dut.write.valid, 1)
        ctx.set(dut.write.index, BY_NAME["EOI"].index)
        assert ctx.get(dut.eoi) and ctx.get(dut.eoi_vector) == 0x1A and not ctx.get(dut.eoi_level)
        await ctx.tick()
        ctx.set(dut.write.valid, 0)
        assert ctx.get(dut.isr) == 0 and ctx.get(dut.ppr) == 0
        ctx.set(dut.svr.as_value(), 0x0F7)                                      # software-disabled
        assert not ctx.get(dut.intr)
        ctx.set(dut.inta, 1)
        await ctx.tick()
        ctx.set(dut.inta, 0)
        assert ctx.get(dut.inta_vector) == 0xF7                      # the spurious vector
        ctx.set(dut.set_level, 1 << 0x1F)
        await ctx.tick()
        ctx.set(dut.set_level, 0)
        assert ctx.get(dut.tmr) == 1 << 0x1F
        ctx.set(dut.soft_reset, 1)
        await ctx.tick()
        assert (ctx.get(dut.irr), ctx.get(dut.isr), ctx.get(dut.tmr)) == (0, 0, 0)

    simulate(dut, bench)


# --- pending events ---------------------------------------------------------------------------

def test_pending_events_first_sipi_wins_and_init_clears_sipi():
    dut = PendingEvents()

    async def bench(ctx):
        for vector in (0x10, 0x20):          # the second SIPI before the acknowledge is dropped
            ctx.set(dut.raise_sipi, 1)
            ctx.set(dut.raise_sipi_vector, vector)
            await ctx.tick()
        ctx.set(dut.raise_sipi, 0)
        assert ctx.get(dut.sipi) and ctx.get(dut.sipi_vector) == 0x10
        ctx.set(dut.sipi_ack, 1)             # a SIPI in the cycle of the acknowledge is latched
        ctx.set(dut.raise_sipi, 1)
        ctx.set(dut.raise_sipi_vector, 0x30)
        await ctx.tick()
        ctx.set(dut.sipi_ack, 0)
        ctx.set(dut.raise_sipi, 0)
        assert ctx.get(dut.sipi) and ctx.get(dut.sipi_vector) == 0x30
        ctx.set(dut.raise_init, 1)
        ctx.set(dut.raise_nmi, 1)
        await ctx.tick()
        ctx.set(dut.raise_init, 0)
        ctx.set(dut.raise_nmi, 0)
        assert ctx.get(dut.init) and ctx.get(dut.nmi) and not ctx.get(dut.sipi)
        ctx.set(dut.init_ack, 1)
        assert ctx.get(dut.init_taken)
        await ctx.tick()
        ctx.set(dut.init_ack, 0)
        assert not ctx.get(dut.init) and not ctx.get(dut.init_taken) and ctx.get(dut.nmi)
        ctx.set(dut.raise_smi, 1)
        ctx.set(dut.drop, 1)                 # a disabled APIC keeps nothing pending
        await ctx.tick()
        assert not (ctx.get(dut.nmi) or ctx.get(dut.smi))

    simulate(dut, bench)


# --- timer ------------------------------------------------------------------------------------

async def fire_cycles(ctx, dut, limit):
    """Cycles until ``fire``, up to ``limit``."""
    for cycle in range(limit):
        if ctx.get(dut.fire):
            return cycle
        await ctx.tick()
    return None


def test_timer_one_shot_periodic_and_deadline():
    dut = ApicTimer()

    async def bench(ctx):
        ctx.set(dut.divide, TIMER_DIVIDE_VALUES[1])
        await pulse_write(ctx, dut.write, "TIMER_INITIAL", 5)
        assert ctx.get(dut.current) == 5
        assert await fire_cycles(ctx, dut, 20) == 4     # 5, 4, 3, 2, 1 -> fires on the last tick
        await ctx.tick()
        assert ctx.get(dut.current) == 0 and await fire_cycles(ctx, dut, 20) is None   # one-shot
        ctx.set(dut.mode, TimerMode.PERIODIC)
        ctx.set(dut.initial, 3)
        await pulse_write(ctx, dut.write, "TIMER_INITIAL", 3)
        assert await fire_cycles(ctx, dut, 20) == 2
        await ctx.tick()
        assert ctx.get(dut.current) == 3                # reloaded
        ctx.set(dut.divide, TIMER_DIVIDE_VALUES[4])
        assert await fire_cycles(ctx, dut, 20) in range(8, 13)    # 3 ticks of 4 cycles
        # into TSC-deadline mode: disarmed; then fires once the TSC reaches the deadline
        await pulse_write(ctx, dut.write, "LVT_TIMER", pack(Lvt, timer_mode=TimerMode.TSC_DEADLINE))
        ctx.set(dut.mode, TimerMode.TSC_DEADLINE)
        assert ctx.get(dut.current) == 0 and ctx.get(dut.deadline) == 0
        ctx.set(dut.tsc, 100)
        ctx.set(dut.deadline_write, 1)
        ctx.set(dut.write.data, 103)
        await ctx.tick()
        ctx.set(dut.deadline_write, 0)
        assert ctx.get(dut.deadline) == 103 and not ctx.get(dut.fire)
        ctx.set(dut.tsc, 103)
        assert ctx.get(dut.fire)
        await ctx.tick()
        assert ctx.get(dut.deadline) == 0 and not ctx.get(dut.fire)

    simulate(dut, bench)


# --- local sources ----------------------------------------------------------------------------

def test_local_sources_lint_edge_level_nmi_and_mask():
    dut = LocalSources(n_vectors=NV)

    async def bench(ctx):
        ctx.set(dut.enabled, 1)
        ctx.set(dut.lvt_timer.as_value(), pack(Lvt, vector=0x12))
        ctx.set(dut.timer_fire, 1)
        assert ctx.get(dut.irr_edge) == 1 << 0x12
        ctx.set(dut.lvt_timer.as_value(), pack(Lvt, vector=0x12, mask=1))          # masked: nothing
        assert ctx.get(dut.irr_edge) == 0
        ctx.set(dut.lvt_timer.as_value(), pack(Lvt, vector=0x02))                  # illegal vector
        assert ctx.get(dut.illegal_vector) and ctx.get(dut.irr_edge) == 0
        ctx.set(dut.timer_fire, 0)
        # LINT0 edge-triggered Fixed: only the rising edge
        ctx.set(dut.lvt_lint0.as_value(), pack(Lvt, vector=0x13))
        ctx.set(dut.lint, 0b01)
        assert ctx.get(dut.irr_edge) == 1 << 0x13
        await ctx.tick()
        assert ctx.get(dut.irr_edge) == 0
        # LINT1 level-triggered Fixed: remote IRR until the EOI of its vector
        ctx.set(dut.lvt_lint1.as_value(), pack(Lvt, vector=0x14, trigger=Trigger.LEVEL))
        ctx.set(dut.lint, 0b11)
        assert ctx.get(dut.irr_level) == 1 << 0x14
        await ctx.tick()
        assert ctx.get(dut.lint_rirr) == 0b10 and ctx.get(dut.irr_level) == 0
        ctx.set(dut.eoi, 1)
        ctx.set(dut.eoi_level, 1)
        ctx.set(dut.eoi_vector, 0x14)
        await ctx.tick()
        ctx.set(dut.eoi, 0)
        assert ctx.get(dut.lint_rirr) == 0 and ctx.get(dut.irr_level) == 1 << 0x14   # still active
        # LINT0 as NMI, active low
        ctx.set(dut.lvt_lint0.as_value(), pack(Lvt, delivery_mode=DeliveryMode.NMI, polarity=1))
        await ctx.tick()                                                # LINT0 high: inactive
        assert not ctx.get(dut.nmi)
        ctx.set(dut.lint, 0b10)
        assert ctx.get(dut.nmi) and not ctx.get(dut.smi) and not ctx.get(dut.init)

    simulate(dut, bench)


# --- ESR --------------------------------------------------------------------------------------

def test_error_status_write_then_read_and_fire():
    dut = ErrorStatus(error_interrupt=True)

    async def bench(ctx):
        ctx.set(dut.send_illegal, 1)
        await ctx.tick()
        ctx.set(dut.send_illegal, 0)
        assert ctx.get(dut.value) == 0 and ctx.get(dut.fire)        # pending, not yet visible
        ctx.set(dut.illegal_address, 1)
        await ctx.tick()
        ctx.set(dut.illegal_address, 0)
        assert not ctx.get(dut.fire)                                 # not empty before
        await pulse_write(ctx, dut.write, "ESR", 0)
        assert ctx.get(dut.value) == 0xA0                            # bits 5 and 7
        await pulse_write(ctx, dut.write, "ESR", 0)
        assert ctx.get(dut.value) == 0
        ctx.set(dut.receive_illegal, 1)
        ctx.set(dut.soft_reset, 1)
        await ctx.tick()
        assert ctx.get(dut.value) == 0

    simulate(dut, bench)


class _RandomRequests:
    """Random register requests for the register file's differential tests: reads and writes
    of every storage register in the current mode (xAPIC MMIO or x2APIC MSRs), one in twenty
    in the other mode's form, a tenth of the MMIO ones unaligned or off the page, SVR's
    software enable off or on, and IA32_APIC_BASE round trips xAPIC -> x2APIC -> disabled ->
    xAPIC, each step legal from the one before."""

    def __init__(self, rng):
        from apwake.rtl.lapic.registers import Kind, REGISTERS
        self.rng = rng
        self.storage = [r for r in REGISTERS if r.kind is Kind.STORAGE]
        base = XAPIC_DEFAULT_BASE | pack(ApicBase, enable=1)
        self.round_trip = [base | pack(ApicBase, extd=1), XAPIC_DEFAULT_BASE, base]
        self.trip = 0

    def next(self, ctx, dut):
        """``(register, (space, addr, write, wdata))``, for ``dut``'s current mode; the register
        is a random storage register, the one accessed unless the request is SVR's or
        IA32_APIC_BASE's."""
        rng = self.rng
        r = rng.choice(self.storage)
        roll = rng.random()
        if roll < 0.03:      # SVR's software enable off or on (forces every LVT mask bit)
            svr = BY_NAME["SVR"]
            return r, ((Space.MSR, svr.msr) if ctx.get(dut.x2apic) else (Space.MMIO, svr.offset)) + (
                1, rng.choice([0xFF, 0x1FF]))
        if roll < 0.045:     # the next step of xAPIC -> x2APIC -> disabled -> xAPIC
            self.trip += 1
            return r, (Space.MSR, MSR_IA32_APIC_BASE, 1, self.round_trip[(self.trip - 1) % 3])
        x2apic = ctx.get(dut.x2apic)
        space = Space.MSR if x2apic else Space.MMIO
        addr = r.msr if x2apic else r.offset
        if addr is None or not ctx.get(dut.enabled):
            space, addr = Space.MMIO, r.offset     # a disabled APIC's page reads all-ones
        elif r.msr is not None and rng.random() < 0.05:   # the other mode's access: #GP, or all-ones
            space, addr = (Space.MMIO, r.offset) if x2apic else (Space.MSR, r.msr)
        if space == Space.MMIO and rng.random() < 0.1:
            addr |= rng.choice([0x4, 0x8, 0x1000])  # unaligned or off the page: illegal address
        write = rng.random() < 0.5
        wdata = rng.getrandbits(32) & (r.write_mask if rng.random() < 0.8 else 0xFFFF_FFFF)
        return r, (space, addr, int(write), wdata)


@pytest.mark.parametrize("local_interrupts", [False, True])
def test_register_file_in_ram_behaves_as_in_flops(local_interrupts):
    """``storage="ram"`` (issue 16's smaller APIC) answers every access as ``"flops"`` does,
    cycle for cycle: the same random reads and writes go to both at once (every storage
    register, xAPIC MMIO and x2APIC MSRs, SVR's software disable, IA32_APIC_BASE round trips
    xAPIC -> x2APIC -> disabled -> xAPIC with the disable's reset wired as LocalApic wires it,
    INIT's soft reset at random cycles, with or without a request in them, unaligned and
    off-page MMIO offsets).  Their responses,
    ``req_ready``, the outputs the other parts read and the pulses of the request's own cycle
    must agree, and in idle cycles between requests both answer nothing with ``rdata`` 0.  The
    run must have read memory words written, memory words at their reset value, in both modes."""
    import random
    from amaranth import Module
    from apwake.rtl.lapic.register_file import ram_registers
    from apwake.rtl.lapic.registers import Kind, REGISTERS

    flops = RegisterFile(n_vectors=NV, local_interrupts=local_interrupts, storage="flops")
    ram = RegisterFile(n_vectors=NV, local_interrupts=local_interrupts, storage="ram")
    m = Module()
    m.submodules.flops, m.submodules.ram = flops, ram
    in_ram = {r.name for r in ram_registers(local_interrupts)}
    assert in_ram and in_ram <= {r.name for r in REGISTERS if r.kind is Kind.STORAGE}
    storage = [r for r in REGISTERS if r.kind is Kind.STORAGE]
    outputs = ["enabled", "x2apic", "tpr", "svr", "ldr", "dfr"] + (
        ["lvt_timer", "lvt_error", "lvt_lint0", "lvt_lint1", "timer_divide", "timer_initial"]
        if local_interrupts else [])
    pulses = ["illegal_address", "x2apic_entry", "disabling"] + (
        ["lvt_write_illegal", "deadline_write"] if local_interrupts else [])
    rng = random.Random(16)
    requests = _RandomRequests(rng)
    seen = {"ram_value": 0, "reset_read": 0, "x2apic_reads": 0, "xapic_reads": 0, "disables": 0, "idle": 0}

    async def bench(ctx):
        for dut in (flops, ram):
            ctx.set(dut.apic_id, 0x05)
        for step in range(2000):
            r, req = requests.next(ctx, flops)
            init = rng.random() < 0.02          # INIT taken, whatever else happens this cycle
            for dut in (flops, ram):
                bus = dut.bus
                ctx.set(bus.req_valid, 1)
                ctx.set(bus.space, req[0])
                ctx.set(bus.addr, req[1])
                ctx.set(bus.write, req[2])
                ctx.set(bus.wdata, req[3])
            assert ctx.get(flops.bus.req_ready) == ctx.get(ram.bus.req_ready)
            for name in pulses:
                assert ctx.get(getattr(flops, name)) == ctx.get(getattr(ram, name)), (step, name)
            for port in ("valid", "index", "data"):
                assert ctx.get(getattr(flops.write, port)) == ctx.get(getattr(ram.write, port)), (step, port)
            disabling = ctx.get(flops.disabling)
            seen["disables"] += disabling
            # (a pipelined APIC: disabling one cycle later, rtl/lapic/local_apic.py)
            for dut in (flops, ram):              # LocalApic: soft_reset = disabling | INIT taken
                ctx.set(dut.soft_reset, int(init or disabling))
            mode = "x2apic_reads" if ctx.get(flops.x2apic) else "xapic_reads"
            await ctx.tick()
            # the response cycle: no request, and fields of another access on the port (a part
            # that answered from the request's fields instead of its own copy would be caught)
            other, other_write = rng.choice(storage), rng.random() < 0.5
            for dut in (flops, ram):
                ctx.set(dut.bus.req_valid, 0)
                ctx.set(dut.soft_reset, 0)
                ctx.set(dut.bus.space, Space.MMIO)
                ctx.set(dut.bus.addr, other.offset)
                ctx.set(dut.bus.write, other_write)
            for port in ("resp_valid", "rdata", "gp"):
                assert ctx.get(getattr(flops.bus, port)) == ctx.get(getattr(ram.bus, port)), (step, r.name, port)
            for name in outputs:
                assert ctx.get(getattr(flops, name)) == ctx.get(getattr(ram, name)), (step, name)
            # count the answer before an idle cycle clears it
            if not req[2] and req[1] in (r.offset, r.msr) and r.name in in_ram and not ctx.get(ram.bus.gp):
                value = ctx.get(ram.bus.rdata)
                if value != 0xFFFF_FFFF:
                    seen["reset_read" if value == r.reset else "ram_value"] += 1
                    seen[mode] += 1
            if rng.random() < 0.1:       # an idle cycle: no answer, rdata 0 (RegisterBusSignature)
                await ctx.tick()
                for dut in (flops, ram):
                    assert (ctx.get(dut.bus.resp_valid), ctx.get(dut.bus.rdata)) == (0, 0), (step, dut.storage)
                seen["idle"] += 1
        # the comparison covered words read from memory and words at their reset value, in both
        # modes, and the disable's reset
        assert min(seen.values()) > 3 and seen["ram_value"] > 20 and seen["reset_read"] > 20, seen

    simulate(m, bench)


def test_register_file_without_x2apic_support_refuses_x2apic_mode():
    """``x2apic_support=False`` (a processor whose CPUID.01H:ECX[21] is 0, SDM vol. 3A §11.12.1):
    IA32_APIC_BASE reads EXTD = 0, a write setting EXTD is #GP and changes nothing, the x2APIC
    MSRs are #GP, and the xAPIC page works as before (TPR written and read back)."""
    dut = RegisterFile(n_vectors=NV, local_interrupts=False, x2apic_support=False)

    async def bench(ctx):
        ctx.set(dut.apic_id, 0x07)
        base, gp = await access(ctx, dut.bus, space=Space.MSR, addr=MSR_IA32_APIC_BASE)
        assert not gp and unpack(ApicBase, base)["extd"] == 0 and unpack(ApicBase, base)["enable"] == 1
        _, gp = await access(ctx, dut.bus, space=Space.MSR, addr=MSR_IA32_APIC_BASE, write=1,
                             wdata=base | pack(ApicBase, extd=1))
        assert gp == 1 and not ctx.get(dut.x2apic)
        assert await access(ctx, dut.bus, space=Space.MSR, addr=MSR_IA32_APIC_BASE) == (base, 0)
        assert (await access(ctx, dut.bus, space=Space.MSR, addr=BY_NAME["ID"].msr))[1] == 1
        await access(ctx, dut.bus, space=Space.MMIO, addr=BY_NAME["TPR"].offset, write=1, wdata=0x35)
        assert await access(ctx, dut.bus, space=Space.MMIO, addr=BY_NAME["TPR"].offset) == (0x35, 0)
        assert await access(ctx, dut.bus, space=Space.MMIO, addr=BY_NAME["ID"].offset) == (0x07 << 24, 0)

    simulate(dut, bench)


@pytest.mark.parametrize("storage, apic_id", [("flops", 0x05), ("ram", 0x05), ("ram", 0x123)])
def test_register_file_registered_decode_answers_as_unregistered(storage, apic_id):
    """``registered_decode`` (a large FPGA build's APIC) takes every request exactly one cycle
    later than the plain register file and otherwise answers it the same.  Each runs in a
    testbench of its own, at the same time, through the same random accesses (those of the
    storage test, IPIs held back by ``tx_busy`` for 0 to 2 cycles, the TSC and TSC deadline
    MSRs, IA32_APIC_BASE writes with a reserved bit), half of them offered in the previous
    access's response cycle and half after an idle cycle.  Per access the two must agree on what
    the take hands on (``write``, the pulses), the response and the outputs after it.  INIT's
    soft reset comes between the registered one's first offer and its take (its decode is older
    than the state it is taken in) and just before the plain one's offer, also on purpose while
    the timer is in TSC-deadline mode under a TIMER_INITIAL write or a TSC_DEADLINE read (INIT
    leaves deadline mode, which those look at).  APIC ID 0x123 is x2APIC-only (its mode
    transitions out of x2APIC are #GP)."""
    import random
    from amaranth import Module

    plain = RegisterFile(n_vectors=NV, local_interrupts=True, storage=storage)
    registered = RegisterFile(n_vectors=NV, local_interrupts=True, storage=storage, registered_decode=True)
    m = Module()
    m.submodules.plain, m.submodules.registered = plain, registered
    rng = random.Random(12)
    requests = _RandomRequests(rng)
    outputs = ["enabled", "x2apic", "tpr", "svr", "ldr", "dfr", "lvt_timer", "lvt_error", "lvt_lint0",
               "lvt_lint1", "timer_divide", "timer_initial"]
    pulses = ["illegal_address", "x2apic_entry", "disabling", "lvt_write_illegal", "deadline_write"]
    # every reserved bit of IA32_APIC_BASE, from its layout
    base_fields = Layout.cast(ApicBase)
    reserved_base_bits = [base_fields[name].offset + k for name in ("rsvd0", "rsvd9", "rsvd36")
                          for k in range(base_fields[name].width)]
    steps = 1500
    plan = []       # (request, busy, gap, init_between, deadline_case), made by the plain one
    results = {plain: [], registered: []}   # (take, answer, outputs after, cycles waited) per access

    def next_step(ctx):
        """The next access, for the mode the plain register file is in after the last one."""
        _, req = requests.next(ctx, plain)
        roll = rng.random()
        if roll < 0.1 and ctx.get(plain.enabled):     # an IPI: held back while busy
            icr = BY_NAME["ICR"]
            x2apic = ctx.get(plain.x2apic)
            req = ((Space.MSR, icr.msr) if x2apic else (Space.MMIO, icr.offset)) + (
                1, rng.getrandbits(64 if x2apic else 32) & ~ICR_X2APIC_RESERVED)
        elif roll < 0.16:   # the TSC (a write is #GP) and TSC deadline MSRs, read or written
            req = (Space.MSR, rng.choice([MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE]), rng.randrange(2),
                   rng.getrandbits(64))
        elif roll < 0.18:   # IA32_APIC_BASE with a reserved bit: #GP, nothing changes
            base = XAPIC_DEFAULT_BASE | pack(ApicBase, enable=1, extd=ctx.get(plain.x2apic))
            req = (Space.MSR, MSR_IA32_APIC_BASE, 1, base | 1 << rng.choice(reserved_base_bits))
        elif roll < 0.21 and ctx.get(plain.enabled):    # the timer into TSC-deadline mode
            lvt = BY_NAME["LVT_TIMER"]
            req = _in_mode(ctx, lvt, 1, pack(Lvt, vector=0x40, timer_mode=TimerMode.TSC_DEADLINE))
        elif roll < 0.26 and in_deadline_mode(ctx):     # INIT between, and what deadline mode decides
            initial = BY_NAME["TIMER_INITIAL"]
            req = rng.choice([_in_mode(ctx, initial, 1, rng.getrandbits(32)),
                              (Space.MSR, MSR_IA32_TSC_DEADLINE, 0, 0)])
            return req, 0, rng.random() < 0.5, True, True
        return req, rng.choice([0, 0, 1, 2]), rng.random() < 0.5, rng.random() < 0.03, False

    def _in_mode(ctx, r, write, wdata):
        """A request for register ``r`` in the plain register file's current mode."""
        return ((Space.MSR, r.msr) if ctx.get(plain.x2apic) else (Space.MMIO, r.offset)) + (write, wdata)

    def in_deadline_mode(ctx):
        return ctx.get(plain.enabled) and ctx.get(plain.lvt_timer).timer_mode == TimerMode.TSC_DEADLINE

    def bench(dut):
        async def run(ctx):
            bus = dut.bus
            ctx.set(dut.apic_id, apic_id)
            ctx.set(dut.tsc, 0x1234_5678_9ABC)
            ctx.set(dut.tsc_deadline, 0x42_0000_0000)
            for step in range(steps):
                if dut is plain:
                    plan.append(next_step(ctx))
                while len(plan) <= step:    # (the plain one is ahead: it never waits here)
                    await ctx.tick()
                req, busy, gap, init_between, _ = plan[step]
                if init_between and dut is plain:      # INIT just before the offer
                    ctx.set(dut.soft_reset, 1)
                    await ctx.tick()
                    ctx.set(dut.soft_reset, 0)
                for port, value in zip(("space", "addr", "write", "wdata"), req):
                    ctx.set(getattr(bus, port), value)
                ctx.set(bus.req_valid, 1)
                waited = 0
                while True:
                    ctx.set(dut.tx_busy, int(waited < busy))
                    # INIT between the registered one's decode and its take
                    ctx.set(dut.soft_reset, int(init_between and waited == 0 and dut is registered))
                    if ctx.get(bus.req_ready):
                        break
                    await ctx.tick()
                    waited += 1
                    assert waited < 5, (step, req, "never taken")
                taken = {**{name: ctx.get(getattr(dut, name)) for name in pulses},
                         **{f"write.{port}": ctx.get(getattr(dut.write, port)) for port in ("valid", "index", "data")}}
                ctx.set(dut.soft_reset, ctx.get(dut.disabling))     # as LocalApic wires it (unpipelined)
                await ctx.tick()
                ctx.set(bus.req_valid, 0)
                ctx.set(dut.soft_reset, 0)
                ctx.set(dut.tx_busy, 0)
                answer = {port: ctx.get(getattr(bus, port)) for port in ("resp_valid", "rdata", "gp")}
                after = {name: ctx.get(getattr(dut, name)) for name in outputs}
                results[dut].append((taken, answer, after, waited))
                if gap:     # an idle cycle: nothing is taken without a request
                    await ctx.tick()
                    assert not ctx.get(bus.resp_valid)
        return run

    simulate(m, bench(plain), bench(registered))
    seen = {"held_back": 0, "init_between": 0, "gp": 0, "writes": 0, "x2apic": 0, "deadline_writes": 0,
            "back_to_back": 0, "init_in_deadline_mode": 0}
    for step, ((req, busy, gap, init_between, deadline_case), a, b) in enumerate(
            zip(plan, results[plain], results[registered])):
        assert a[:3] == b[:3], (step, req)
        assert b[3] == max(a[3], 1), (step, req, a[3], b[3])
        seen["held_back"] += a[3] > 0
        seen["init_between"] += init_between
        seen["gp"] += a[1]["gp"]
        seen["writes"] += a[0]["write.valid"]
        seen["x2apic"] += a[2]["x2apic"]
        seen["deadline_writes"] += a[0]["deadline_write"]
        seen["back_to_back"] += not gap
        seen["init_in_deadline_mode"] += deadline_case
    assert len(results[plain]) == len(results[registered]) == steps
    assert min(seen.values()) > 10, seen
