"""The soft-SoC's parts in Amaranth's simulator (no Verilator): the AP start logic (with the
START window), the interconnect and the cores' windows."""

import functools
import re

import pytest
from amaranth import ClockDomain, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth_sim import simulate

from apwake.rtl.mpwk_mailbox.layouts import OFFSETS, Command
from apwake.rtl.soc.ap_start import ApStart
from apwake.rtl.soc.core_windows import CoreWindows
from apwake.rtl.soc.interconnect import Interconnect
from apwake.rtl.soc.window_bus import WindowBus
from apwake.rtl.ghcb_msr.layouts import MSR_GHCB
from apwake.rtl.lapic.signatures import Space
from apwake.rtl.soc.memory_map import (CONTROL, CONTROL_BASE, LED_BASE, LOCK_BASE, MAILBOX_BASE, MSR_BASE, MSR_WINDOW,
                                       START_BASE, START_MAP, START_WINDOW, UART_STATUS, UART_TX, UNDECODED_BASE)
from apwake.rtl.soc.cores import core_choice
from apwake.rtl.soc.serv import Serv
from apwake.rtl.soc.serv_bus import ServBusAdapter
from apwake.rtl.soc.signatures import CoreWindow
from apwake.firmware.build import build_firmware
from apwake.rtl.start_context.layouts import LaunchKind, StartOp, StartStatus, StateField
from apwake.sim.vip.start_context.model import descriptor, encode_vmi_ap_state


def test_sipi_start_holds_and_releases_aps(simulate):
    dut = ApStart(apic_ids=[0, 4, 8], bsp_index=0, ap_start="sipi")
    seen = {}

    async def bench(ctx):
        seen["reset"] = ctx.get(dut.run)
        ctx.set(dut.apic[1].sipi, 1)
        ctx.set(dut.apic[1].sipi_vector, 0x12)
        seen["sipi_ack"] = ctx.get(dut.apic[1].sipi_ack)
        await ctx.tick()
        seen["after_sipi"] = (ctx.get(dut.run), ctx.get(dut.start_addr[1]))
        ctx.set(dut.apic[1].sipi_vector, 0x34)          # a second SIPI while running: ignored
        await ctx.tick()
        seen["second_sipi"] = (ctx.get(dut.run), ctx.get(dut.start_addr[1]))
        ctx.set(dut.apic[1].sipi, 0)
        for core in (0, 1):                            # INIT: the AP is held, the BSP is not
            ctx.set(dut.apic[core].init, 1)
        seen["init_ack"] = (ctx.get(dut.apic[0].init_ack), ctx.get(dut.apic[1].init_ack))
        await ctx.tick()
        seen["after_init"] = ctx.get(dut.run)

    simulate(dut, bench)
    assert seen == {"reset": 0b001, "sipi_ack": 1, "after_sipi": (0b011, 0x12000),
                    "second_sipi": (0b011, 0x12000), "init_ack": (1, 1), "after_init": 0b001}


def test_mailbox_start_wakes_and_parks_an_ap(simulate):
    dut = ApStart(apic_ids=[0, 4, 8], bsp_index=0, ap_start="mailbox")
    seen = {}

    async def store(ctx, offset, value):
        bus = dut.mailbox_bus
        ctx.set(bus.req_valid, 1)
        ctx.set(bus.addr, MAILBOX_BASE + offset)
        ctx.set(bus.write, 1)
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, 0xF)
        await ctx.tick().until(bus.req_ready)
        ctx.set(bus.req_valid, 0)

    async def bench(ctx):
        await store(ctx, OFFSETS["apic_id"], 8)
        await store(ctx, OFFSETS["wakeup_vector"], 0x3000)
        await store(ctx, OFFSETS["command"], Command.WAKEUP.value)
        await ctx.tick().until(dut.run[2])
        seen["woken"] = (ctx.get(dut.run), ctx.get(dut.start_addr[2]))
        ctx.set(dut.back_to_firmware, 0b100)          # jmp ResetVector
        await ctx.tick()
        ctx.set(dut.back_to_firmware, 0)
        seen["parked"] = ctx.get(dut.run)

    simulate(dut, bench)
    assert seen == {"woken": (0b101, 0x3000), "parked": 0b001}


def _context_memory(address, *, eip, esp, gdt_base):
    """RAM words (``{byte address: word}``) holding a valid ``struct vmi_ap_state`` at ``address``
    and its flat GDT (code 0x08, data 0x10) at ``gdt_base``, as the firmware builds them."""
    words = {}
    state = encode_vmi_ap_state(cr0=1, eip=eip, esp=esp, cs=0x08, ss=0x10, ds=0x10, es=0x10,
                                gdtr_limit=23, gdtr_base=gdt_base)
    for k in range(0, len(state), 4):
        words[address + k] = int.from_bytes(state[k:k + 4], "little")
    for index, value in ((1, descriptor(0, 0xFFFFF, 0xA)), (2, descriptor(0, 0xFFFFF, 0x2))):
        words[gdt_base + 8 * index], words[gdt_base + 8 * index + 4] = value & 0xFFFF_FFFF, value >> 32
    return words


def test_context_start_launches_cores_at_the_carried_eip_and_esp():
    """START and SET_INITIAL_AP_STATE + SIPI through the START window, the unit reading the
    struct and the GDT from memory: each AP runs at the state's EIP with its ESP; a second SIPI is
    DROPPED, INIT holds the AP again and a SIPI without a context is REAL_MODE (vector << 12, no
    stack); an unknown APIC ID is refused; a store while busy is ignored and shows in CALL_STATUS.dropped;
    LAUNCHES counts."""
    dut = ApStart(apic_ids=[0, 4, 8], bsp_index=0, ap_start="context")
    words = {**_context_memory(0x800, eip=0x1234, esp=0x1EE0, gdt_base=0x1EE8),
             **_context_memory(0x900, eip=0x1238, esp=0x1DE0, gdt_base=0x1DE8)}
    seen, records = {}, []

    async def access(ctx, name, value=None):
        bus = dut.start_bus
        ctx.set(bus.req_valid, 1)
        ctx.set(bus.addr, START_BASE + START_WINDOW[name])
        ctx.set(bus.write, value is not None)
        ctx.set(bus.wdata, value or 0)
        await ctx.tick().until(bus.req_ready)
        ctx.set(bus.req_valid, 0)
        (rdata,) = await ctx.tick().sample(bus.rdata).until(bus.resp_valid)
        return rdata

    async def call(ctx, op, address, apic_id):
        await access(ctx, "CALL_ADDRESS", address)
        await access(ctx, "CALL_APIC_ID", apic_id)
        await access(ctx, "CALL_OP", op.value)
        await access(ctx, "CALL_ADDRESS", 0x4444)                 # while busy: ignored
        status = await access(ctx, "CALL_STATUS")
        if op is StartOp.START and apic_id == 8:                  # reading memory: busy a while
            seen["busy"] = (status >> 8 & 1, await access(ctx, "CALL_ADDRESS"))
        while status >> 8 & 1:
            status = await access(ctx, "CALL_STATUS")
        seen.setdefault("dropped", []).append(status >> 9 & 1)     # the store while busy, seen
        return StartStatus(status & 0xF), StateField(status >> 4 & 0xF)

    async def sipi(ctx, core, vector):
        ctx.set(dut.apic[core].sipi, 1)
        ctx.set(dut.apic[core].sipi_vector, vector)
        await ctx.tick().until(dut.apic[core].sipi_ack)
        ctx.set(dut.apic[core].sipi, 0)
        await ctx.tick()

    async def bench(ctx):
        seen["unknown"] = await call(ctx, StartOp.START, 0x800, 5)
        seen["start"] = await call(ctx, StartOp.START, 0x800, 8)
        seen["after start"] = (ctx.get(dut.run), ctx.get(dut.start_addr[2]), ctx.get(dut.start_sp[2]))
        seen["set"] = await call(ctx, StartOp.SET_INITIAL_AP_STATE, 0x900, 4)
        seen["armed"] = ctx.get(dut.run)
        await sipi(ctx, 1, 0x01)
        seen["after sipi"] = (ctx.get(dut.run), ctx.get(dut.start_addr[1]), ctx.get(dut.start_sp[1]))
        await sipi(ctx, 1, 0x01)                                   # running: DROPPED
        ctx.set(dut.apic[1].init, 1)
        seen["init_ack"] = ctx.get(dut.apic[1].init_ack)
        await ctx.tick()
        ctx.set(dut.apic[1].init, 0)
        seen["after init"] = ctx.get(dut.run)
        await sipi(ctx, 1, 0x02)                                   # no context: REAL_MODE
        seen["real mode"] = (ctx.get(dut.run), ctx.get(dut.start_addr[1]), ctx.get(dut.start_sp[1]))
        counts = await access(ctx, "LAUNCHES")
        seen["launches"] = {kind.name: counts >> 8 * kind.value & 0xFF for kind in LaunchKind}

    async def memory(ctx):
        bus = dut.memory
        ctx.set(bus.req_ready, 1)
        async for _, _, valid, addr, write in ctx.tick().sample(bus.req_valid, bus.addr, bus.write):
            assert not (valid and write), "the unit only reads"
            ctx.set(bus.resp_valid, valid)
            ctx.set(bus.rdata, words.get(addr, 0) if valid else 0)

    async def trace(ctx):
        t = dut.trace
        async for _, _, valid, vcpu, kind, via_sipi, eip, esp in ctx.tick().sample(
                t.valid, t.vcpu, t.kind, t.via_sipi, t.eip, t.esp):
            if valid:
                records.append((vcpu, LaunchKind(kind), via_sipi, eip, esp))

    simulate(dut, bench, background=[memory, trace])
    assert seen == {
        "busy": (1, 0x800), "unknown": (StartStatus.UNKNOWN_APIC_ID, StateField.NONE),
        "start": (StartStatus.OK, StateField.NONE), "after start": (0b101, 0x1234, 0x1EE0),
        "set": (StartStatus.OK, StateField.NONE), "armed": 0b101,
        "after sipi": (0b111, 0x1238, 0x1DE0), "init_ack": 1, "after init": 0b101,
        "real mode": (0b111, 0x2000, 0),
        "launches": {"REAL_MODE": 1, "CONTEXT": 2, "REFUSED": 0, "DROPPED": 1},
        "dropped": [1, 1, 1]}
    assert records == [(2, LaunchKind.CONTEXT, 0, 0x1234, 0x1EE0), (1, LaunchKind.CONTEXT, 1, 0x1238, 0x1DE0),
                       (1, LaunchKind.DROPPED, 1, 0, 0), (1, LaunchKind.REAL_MODE, 1, 0, 0)]


def test_start_window_is_in_the_address_map():
    assert START_MAP.base == START_BASE and START_WINDOW == {
        "CALL_ADDRESS": 0x0, "CALL_APIC_ID": 0x4, "CALL_OP": 0x8, "CALL_STATUS": 0xC, "LAUNCHES": 0x10}


@pytest.mark.parametrize("kwargs, message", [
    (dict(apic_ids=[0, 1], bsp_index=0, ap_start="tdx"),
     r"ap_start must be one of \('sipi', 'mailbox', 'ghcb', 'context'\)"),
    (dict(apic_ids=[0, 1], bsp_index=2, ap_start="sipi"), r"bsp_index must be a core index below 2, not 2"),
])
def test_ap_start_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ApStart(**kwargs)



# --- the interconnect ------------------------------------------------------------------------------

class _InterconnectWithRam(Elaboratable):
    """The interconnect with a RAM on its ports, as :class:`apwake.rtl.soc.Soc` connects them."""

    def __init__(self, *, n_cores=3, init=(), **kwargs):
        self.ic = Interconnect(n_cores=n_cores, ram_bytes=8192, uart_divisor=4, **kwargs)
        self.init = list(init)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ic = self.ic
        m.submodules.ram = ram = Memory(shape=32, depth=8192 // 4, init=self.init)
        wiring.connect(m, self.ic.ram_read, ram.read_port())
        wiring.connect(m, self.ic.ram_write, ram.write_port(granularity=8))
        return m


async def _core_access(ctx, bus, addr, wdata=None, wstrb=0xF, *, cycles=None):
    """One PicoRV32-style access: ``valid`` held until ``ready``; returns the read data, and
    appends to ``cycles`` (a list) how many clock edges it took, its ``ready`` edge included."""
    ctx.set(bus.valid, 1)
    ctx.set(bus.addr, addr)
    ctx.set(bus.wdata, wdata or 0)
    ctx.set(bus.wstrb, 0 if wdata is None else wstrb)
    edges = 0
    async for _, _, ready, rdata in ctx.tick().sample(bus.ready, bus.rdata):
        edges += 1
        if ready:
            break
    ctx.set(bus.valid, 0)
    if cycles is not None:
        cycles.append(edges)
    return rdata


@pytest.mark.parametrize("registered_requests", [False, True])
def test_interconnect_grants_one_core_at_a_time_round_robin(registered_requests):
    """Three cores reading the RAM are served in turn, four cycles an access, with the cores'
    requests taken from flip-flops too (each access then starts a cycle later and the granted
    request is copied in a cycle of its own, LATCH, which the queue hides: the next grant is
    made as the previous access is answered)."""
    top = _InterconnectWithRam(init=range(0, 64), registered_requests=registered_requests)
    ic = top.ic
    done = []          # (cycle, core, data), in completion order
    cycle = [0]

    def reader(i):
        async def bench(ctx):
            for k in range(3):
                data = await _core_access(ctx, ic.cores[i], 4 * (8 * i + k))
                done.append((cycle[0], i, data))
        return bench

    async def clock(ctx):
        while True:
            _, _, *ready = await ctx.tick().sample(*(c.ready for c in ic.cores))
            assert sum(ready) <= 1, f"two cores answered at once: {ready}"
            cycle[0] += 1

    simulate(top, *(reader(i) for i in range(3)), background=[clock])
    assert [(core, data) for _, core, data in done] == [(0, 0), (1, 8), (2, 16), (0, 1), (1, 9), (2, 17),
                                                        (0, 2), (1, 10), (2, 18)]
    cycles = [c for c, _, _ in done]
    # IDLE, DECODE, RAM, DONE; registered: DONE (the next grant), LATCH, DECODE, RAM
    assert [b - a for a, b in zip(cycles, cycles[1:])] == [4] * 8


@pytest.mark.parametrize("registered_requests", [False, True])
def test_interconnect_io_and_boot_rom(registered_requests):
    """Each access of a core alone on the bus is done once (a store to the UART taken twice
    would send its byte twice), in four cycles, or six when its request is registered (its
    copy, and the granted request's copy in LATCH)."""
    top = _InterconnectWithRam(n_cores=1, msr_window=False, init=[0x1111, 0x2222] + [0] * 62,
                               registered_requests=registered_requests)
    ic, core = top.ic, top.ic.cores[0]
    seen = {"uart": []}

    async def bench(ctx):
        seen["cycles"] = []
        await _core_access(ctx, core, 0x8, cycles=seen["cycles"])         # a RAM read, counted
        await _core_access(ctx, core, 0x4, wdata=0x5555)                   # boot ROM: dropped
        await _core_access(ctx, core, 0x100, wdata=0xABCD)                 # RAM above it
        seen["ram"] = (await _core_access(ctx, core, 0x4), await _core_access(ctx, core, 0x100))
        seen["lock"] = [await _core_access(ctx, core, LOCK_BASE) for _ in range(2)]
        await _core_access(ctx, core, LOCK_BASE, wdata=0)
        seen["lock"].append(await _core_access(ctx, core, LOCK_BASE))
        await _core_access(ctx, core, LED_BASE, wdata=0x1A5)
        await ctx.tick().repeat(6)          # the bus idle, the core's request fields still held
        seen["leds"] = (ctx.get(ic.leds), await _core_access(ctx, core, LED_BASE))
        for byte in b"ok":
            await _core_access(ctx, core, UART_TX, wdata=byte)             # the second one waits
        seen["busy"] = await _core_access(ctx, core, UART_STATUS)
        seen["unmapped"] = await _core_access(ctx, core, MAILBOX_BASE)     # no mailbox here: 0
        seen["msr"] = await _core_access(ctx, core, MSR_BASE)              # no MSR window here: 0

    async def uart(ctx):
        async for _, _, valid, data, requested, ready in ctx.tick().sample(
                ic.uart_valid, ic.uart_data, core.valid, core.ready):
            assert requested or not ready, "an answer while the core requested nothing"
            if valid:
                seen["uart"].append(data)

    simulate(top, bench, background=[uart])
    assert seen == {"ram": (0x2222, 0xABCD), "lock": [0, 1, 0], "leds": (0xA5, 0xA5), "uart": list(b"ok"),
                    "busy": 1, "unmapped": 0, "msr": 0, "cycles": [6 if registered_requests else 4]}


async def _reset_mid_access(ctx, bus, first, then, *, after, low, answers):
    """A core that requests ``first``, is reset after ``after`` clock edges (``after`` at least
    1: the bus sees the request; ``valid`` low for ``low`` cycles, before any answer) and then
    requests ``then``: returns the data its second request is answered with.  ``answers`` (a
    list) gets ``"while reset"`` for each ``ready`` while ``valid`` is low."""
    ctx.set(bus.valid, 1)
    ctx.set(bus.addr, first)
    ctx.set(bus.wstrb, 0)
    for _ in range(after):
        _, _, ready = await ctx.tick().sample(bus.ready)
        assert not ready, "answered before the reset: choose a shorter `after`"
    ctx.set(bus.valid, 0)              # the reset: a core drops its request
    for _ in range(low):
        _, _, ready = await ctx.tick().sample(bus.ready)
        if ready:
            answers.append("while reset")
    return await _core_access(ctx, bus, then)


def _count_readys(bus, answers):
    """A background process: appends ``"ready"`` to ``answers`` for every cycle with ``bus.ready``."""
    async def watch(ctx):
        async for _, _, ready in ctx.tick().sample(bus.ready):
            if ready:
                answers.append("ready")
    return watch


@pytest.mark.parametrize("registered_requests", [False, True])
@pytest.mark.parametrize("after, low", [(1, 1), (2, 1), (3, 1), (1, 2), (2, 3)])
def test_interconnect_does_not_answer_a_request_withdrawn_by_a_reset(registered_requests, after, low):
    """A core reset in the middle of its RAM read, which requests another word straight after,
    gets that word, in one answer of its own: the withdrawn read still ends on the bus, but its
    answer is not given to the new request (before, the new request took the old word).  Core 1
    keeps reading meanwhile and gets its words; every ``ready`` is counted."""
    top = _InterconnectWithRam(n_cores=2, init=range(0, 64), registered_requests=registered_requests)
    ic, got, answers = top.ic, {}, []

    async def core0(ctx):
        got[0] = await _reset_mid_access(ctx, ic.cores[0], 4 * 5, 4 * 9, after=after, low=low,
                                         answers=answers)

    async def core1(ctx):
        got[1] = [await _core_access(ctx, ic.cores[1], 4 * k) for k in (20, 21, 22)]

    simulate(top, core0, core1, background=[_count_readys(ic.cores[0], answers)])
    assert got == {0: 9, 1: [20, 21, 22]}
    assert answers == ["ready"], "core 0 is answered once, for its second request"


def test_interconnect_flags_the_core_whose_access_nothing_answers():
    """An access to a window the SoC was built without (here the MSR window) or to no window
    reads 0 and sets that core's ``bus_error``, which stays set; the other core's accesses, to
    the RAM and the I/O window, set nothing."""
    top = _InterconnectWithRam(n_cores=2, msr_window=False, init=range(64))
    ic = top.ic
    seen = []

    async def bench(ctx):
        await _core_access(ctx, ic.cores[0], 0x8)
        await _core_access(ctx, ic.cores[0], LED_BASE, wdata=1)
        seen.append(ctx.get(ic.bus_error))
        seen.append(await _core_access(ctx, ic.cores[1], MSR_BASE))
        seen.append(ctx.get(ic.bus_error))
        await _core_access(ctx, ic.cores[1], 0x8)                  # a good access clears nothing
        seen.append(ctx.get(ic.bus_error))
        seen.append(await _core_access(ctx, ic.cores[0], UNDECODED_BASE, wdata=0x1234))    # no window
        seen.append(ctx.get(ic.bus_error))

    simulate(top, bench)
    assert seen == [0b00, 0, 0b10, 0b10, 0, 0b11]


@pytest.mark.parametrize("registered_requests", [False, True])
def test_interconnect_dma_reads_the_ram_only_beside_the_cores(registered_requests):
    """The DMA initiator (the start-context unit's reads) takes its turn after the cores, is
    answered the cycle after its request is taken, reads the RAM, and reads 0 elsewhere without
    side effects (the lock stays free); the START window reaches ``start_bus``.  The same with
    the cores' requests in flip-flops (the DMA initiator's is not)."""
    top = _InterconnectWithRam(n_cores=2, dma=True, start=True, init=range(100, 164),
                               registered_requests=registered_requests)
    ic, dma = top.ic, top.ic.dma
    seen = {"dma": [], "core": [], "start": []}

    async def dma_read(ctx, addr):
        ctx.set(dma.req_valid, 1)
        ctx.set(dma.addr, addr)
        await ctx.tick().until(dma.req_ready)
        ctx.set(dma.req_valid, 0)
        _, _, resp, rdata = await ctx.tick().sample(dma.resp_valid, dma.rdata)
        assert resp, "the response is the cycle after the request is taken"
        return rdata

    async def dma_bench(ctx):
        for addr in (0x0, 0x8, 0x10):
            seen["dma"].append(await dma_read(ctx, addr))
        seen["dma"].append(await dma_read(ctx, LOCK_BASE))
        seen["dma"].append(await dma_read(ctx, START_BASE))
        seen["dma"].append(await dma_read(ctx, UNDECODED_BASE))           # no window: 0, no core's error

    async def core_bench(ctx):
        for addr in (0x40, 0x44):
            seen["core"].append(await _core_access(ctx, ic.cores[0], addr))
        while len(seen["dma"]) < 6:                                 # after the DMA's reads
            await ctx.tick()
        seen["core"].append(await _core_access(ctx, ic.cores[0], LOCK_BASE))        # still free
        seen["core"].append(await _core_access(ctx, ic.cores[1], START_BASE + 0xC))
        seen["bus_error"] = ctx.get(ic.bus_error)     # the DMA's reads outside the RAM are no core's

    async def start_window(ctx):
        bus = ic.start_bus
        ctx.set(bus.req_ready, 1)
        async for _, _, valid, addr in ctx.tick().sample(bus.req_valid, bus.addr):
            if valid:
                seen["start"].append(addr)
            ctx.set(bus.resp_valid, valid)
            ctx.set(bus.rdata, 0x77 if valid else 0)

    simulate(top, dma_bench, core_bench, background=[start_window])
    assert seen == {"dma": [100, 102, 104, 0, 0, 0], "core": [116, 117, 0, 0x77], "start": [START_BASE + 0xC],
                    "bus_error": 0}


@pytest.mark.parametrize("dma", [False, True])
@pytest.mark.parametrize("registered_requests", [False, True])
def test_interconnect_window_access_waits_and_a_parked_core_resumes(registered_requests, dma):
    """Core 0's control-window access waits 3 cycles in its windows while core 1 queues for the
    RAM; core 0's VMGEXIT store parks (core 1 is served meanwhile) and completes on its resume;
    core 1's window access reaches the windows as core 1's; the same beside an idle DMA
    initiator (whose port the parked core's request must not reach either)."""
    top = _InterconnectWithRam(n_cores=2, init=[7] * 64, dma=dma, registered_requests=registered_requests)
    ic = top.ic
    port = ic.windows
    log = []

    async def core0(ctx):
        log.append(("core0 read", await _core_access(ctx, ic.cores[0], CONTROL_BASE + 0x4)))
        await _core_access(ctx, ic.cores[0], MSR_BASE + 0xC, wdata=1)
        log.append(("core0 resumed",))

    async def core1(ctx):
        await ctx.tick()                   # after core 0 is granted
        log.append(("core1 read", await _core_access(ctx, ic.cores[1], 0x40)))
        for _ in range(2):
            await ctx.tick().until(port.parked)
            log.append(("core1 read", await _core_access(ctx, ic.cores[1], 0x44)))
        log.append(("core1 window", await _core_access(ctx, ic.cores[1], CONTROL_BASE + 0x8)))

    async def valid(ctx):
        """Wait for the access (in the cycle it starts, as a component answering at once)."""
        while not ctx.get(port.valid):
            await ctx.tick()

    async def windows0(ctx):
        await valid(ctx)
        log.append(("windows", ctx.get(port.core), ctx.get(port.window), ctx.get(port.addr)))
        for _ in range(3):                 # the access stays valid while the windows work
            await ctx.tick()
            assert ctx.get(port.valid)
        ctx.set(port.done, 1)
        ctx.set(port.rdata, 0x42)
        await ctx.tick()
        ctx.set(port.done, 0)
        await valid(ctx)
        log.append(("windows", ctx.get(port.core), ctx.get(port.window), ctx.get(port.write)))
        ctx.set(port.park, 1)
        await ctx.tick()
        ctx.set(port.park, 0)
        ctx.set(port.parked, 0b01)          # core 0's bit
        await ctx.tick().until(ic.cores[1].ready)
        await ctx.tick().until(ic.cores[1].ready)     # core 0's request stays parked meanwhile
        assert not ctx.get(ic.cores[0].ready) and not ctx.get(port.valid)
        ctx.set(port.parked, 0)
        ctx.set(port.resume, 0b01)          # core 0's bit
        assert ctx.get(ic.cores[0].ready)
        await ctx.tick()
        ctx.set(port.resume, 0)
        await valid(ctx)                   # core 1's own window access names core 1
        log.append(("windows", ctx.get(port.core), ctx.get(port.window), ctx.get(port.addr)))
        ctx.set(port.done, 1)
        ctx.set(port.rdata, 0x43)
        await ctx.tick()
        ctx.set(port.done, 0)

    simulate(top, core0, core1, windows0)
    assert log[:3] == [("windows", 0, CoreWindow.CONTROL, 0x4), ("core0 read", 0x42), ("core1 read", 7)]
    assert log[3] == ("windows", 0, CoreWindow.MSR, 1)
    assert log[4:6] == [("core1 read", 7)] * 2
    assert sorted(log[6:], key=str) == sorted([("core0 resumed",), ("windows", 1, CoreWindow.CONTROL, 0x8),
                                               ("core1 window", 0x43)], key=str)
    assert log.index(("windows", 1, CoreWindow.CONTROL, 0x8)) < log.index(("core1 window", 0x43))


# --- a group's window bus (a large build's) --------------------------------------------------------

class _WindowBusBeforeInterconnect(Elaboratable):
    """A :class:`WindowBus` for ``n_cores`` cores before the shared bus (without core windows)
    and its RAM, as :class:`apwake.rtl.soc.Soc` connects them in a large build; the test plays
    the windows engine on ``window_bus.windows``."""

    def __init__(self, *, n_cores=3, msr_window=True, registered_requests=False):
        self.window_bus = WindowBus(n_cores=n_cores, msr_window=msr_window, registered_requests=registered_requests)
        self.ram = _InterconnectWithRam(n_cores=n_cores, init=range(100, 164), msr_window=msr_window,
                                        core_windows=False, registered_requests=registered_requests)

    def elaborate(self, platform):
        m = Module()
        m.submodules.window_bus, m.submodules.ram = self.window_bus, self.ram
        for shared, core in zip(self.window_bus.shared, self.ram.ic.cores):
            wiring.connect(m, shared, core)
        return m


def _windows_engine(port, log, *, hold, parks=(), check_fields=True):
    """A windows engine on ``port`` (a :class:`WindowAccessSignature`, engine's end): logs each
    access in its first cycle as ``(core, window, addr, write, wdata)``, answers it ``hold[core]``
    cycles later with ``0x40 + core`` (checking, with ``check_fields``, that its fields hold
    until then), or parks it when ``(core, addr)`` is in ``parks`` (the
    core's ``parked`` bit until ``log`` holds ``"resume"``, then its ``resume`` for a cycle)."""
    async def engine(ctx):
        parked = 0
        while True:
            _, _, valid, core, window, addr, write, wdata = await ctx.tick().sample(
                port.valid, port.core, port.window, port.addr, port.write, port.wdata)
            if parked and "resume" in log:
                ctx.set(port.parked, 0)
                ctx.set(port.resume, parked)
                parked = 0
                continue
            ctx.set(port.resume, 0)
            if not valid:
                continue
            log.append((core, window, addr, write, wdata))
            if (core, addr) in parks:
                ctx.set(port.park, 1)
                await ctx.tick()
                ctx.set(port.park, 0)
                parked = 1 << core
                ctx.set(port.parked, parked)
                continue
            for _ in range(hold[core]):
                await ctx.tick()
                assert ctx.get(port.valid) and ctx.get(port.core) == core, "the access did not wait for its answer"
                fields = (ctx.get(port.window), ctx.get(port.addr), ctx.get(port.write), ctx.get(port.wdata))
                assert not check_fields or fields == (window, addr, write, wdata), "the access changed"
            ctx.set(port.done, 1)
            ctx.set(port.rdata, 0x40 + core)
            await ctx.tick()
            ctx.set(port.done, 0)
    return engine


def _never_shared(top):
    """A background process: the shared bus never sees a request to a core's own window."""
    own = (0x2, 0x3, 0x5) if top.window_bus.msr_window else (0x2, 0x3)

    async def watch(ctx):
        cores = top.ram.ic.cores
        async for _, _, *requests in ctx.tick().sample(*(c.valid for c in cores), *(c.addr for c in cores)):
            for valid, addr in zip(requests[:len(cores)], requests[len(cores):]):
                assert not (valid and addr >> 28 in own), f"the shared bus saw {addr:#x}"
    return watch


@pytest.mark.parametrize("registered_requests", [False, True])
def test_window_bus_serves_the_windows_beside_the_shared_bus(registered_requests):
    """Core 0's control-window read waits 20 cycles in its windows while core 1's three RAM
    reads go through the shared bus (which never sees a window access); core 2's APIC store
    waits for core 0's access and is then served as core 2's; each access reaches the windows
    once (a duplicate or a loss fails the log), with the answer to its own core."""
    top = _WindowBusBeforeInterconnect(registered_requests=registered_requests)
    bus = top.window_bus
    log, done = [], []

    async def core0(ctx):
        done.append(("core0", await _core_access(ctx, bus.cores[0], CONTROL_BASE + 0x4)))

    async def core1(ctx):
        for addr in (0x40, 0x44, 0x48):
            done.append(("core1", await _core_access(ctx, bus.cores[1], addr)))

    async def core2(ctx):
        await ctx.tick().repeat(2)              # after core 0's window access is granted
        done.append(("core2", await _core_access(ctx, bus.cores[2], 0x2000_0300, wdata=0xC4500)))
        done.append(("core2", await _core_access(ctx, bus.cores[2], CONTROL_BASE)))

    simulate(top, core0, core1, core2,
             background=[_windows_engine(bus.windows, log, hold={0: 20, 1: 0, 2: 1}), _never_shared(top)])
    assert log == [(0, CoreWindow.CONTROL, 0x4, 0, 0), (2, CoreWindow.APIC, 0x300, 1, 0xC4500),
                   (2, CoreWindow.CONTROL, 0x0, 0, 0)]
    assert done == [("core1", 116), ("core1", 117), ("core1", 118), ("core0", 0x40), ("core2", 0x42),
                    ("core2", 0x42)]


@pytest.mark.parametrize("registered_requests", [False, True])
@pytest.mark.parametrize("after, low", [(1, 1), (3, 1), (2, 2), (4, 1)])
def test_window_bus_does_not_answer_a_window_access_withdrawn_by_a_reset(registered_requests, after, low):
    """Core 0's control-window read (answered by the windows 6 cycles after it starts) is
    withdrawn by a reset; the APIC-window read the core makes next reaches the windows as an
    access of its own and is the one answered: once, after it reached them.  Core 1's window
    read, queued meanwhile, is granted as the withdrawn access ends (in DONE, with the request
    copies), reaches the windows once and is answered.  Without the copies the windows see the
    withdrawn access's fields follow the core's new request (the engine does not check them)."""
    top = _WindowBusBeforeInterconnect(n_cores=2, registered_requests=registered_requests)
    bus, log, answers, got = top.window_bus, [], [], {}

    async def core0(ctx):
        got[0] = await _reset_mid_access(ctx, bus.cores[0], CONTROL_BASE + 0x4, 0x2000_0300,
                                         after=after, low=low, answers=answers), len(log)

    async def core1(ctx):
        await ctx.tick()
        got[1] = await _core_access(ctx, bus.cores[1], CONTROL_BASE + 0x8)

    simulate(top, core0, core1,
             background=[_windows_engine(bus.windows, log, hold={0: 6, 1: 0}, check_fields=registered_requests),
                         _count_readys(bus.cores[0], answers)])
    assert log == [(0, CoreWindow.CONTROL, 0x4, 0, 0), (1, CoreWindow.CONTROL, 0x8, 0, 0),
                   (0, CoreWindow.APIC, 0x300, 0, 0)]
    assert got == {0: (0x40, 3), 1: 0x41}, "answered after its own access reached the windows"
    assert answers == ["ready"]


def test_window_bus_cycles_with_and_without_registered_requests():
    """Two cores' window accesses raised in the same cycle (the engine answers each in its
    second cycle): four cycles apart on either bus; with ``registered_requests`` each starts a
    cycle later (the cores' request copies) and the granted request is copied in a cycle of its
    own (LATCH), which the second access does not pay again (it is granted in DONE)."""
    cycles = {}
    for registered in (False, True):
        top = _WindowBusBeforeInterconnect(n_cores=2, registered_requests=registered)
        bus, log, edges = top.window_bus, [], []

        async def core(ctx, i, bus=bus, edges=edges):
            await _core_access(ctx, bus.cores[i], CONTROL_BASE + 4 * i, cycles=edges)

        simulate(top, functools.partial(core, i=0), functools.partial(core, i=1),
                 background=[_windows_engine(bus.windows, log, hold={0: 0, 1: 0})])
        assert [entry[:3] for entry in log] == [(0, CoreWindow.CONTROL, 0), (1, CoreWindow.CONTROL, 4)]
        cycles[registered] = sorted(edges)
    assert cycles == {False: [4, 8], True: [6, 10]}


@pytest.mark.parametrize("registered_requests", [False, True])
def test_window_bus_parks_a_vmgexit_and_passes_what_is_not_its_own(registered_requests):
    """Core 0's VMGEXIT store parks (core 1's window accesses are served meanwhile, core 0's
    held request never reaches the windows again) and completes on its resume.  Without the
    MSR window, core 1's access there goes to the shared bus, which reads 0 and flags that core
    alone; with it, the same access reaches core 1's windows."""
    seen = {}
    for msr_window in (True, False):
        top = _WindowBusBeforeInterconnect(n_cores=2, msr_window=msr_window, registered_requests=registered_requests)
        bus = top.window_bus
        log, done, errors = [], [], []

        async def core0(ctx):
            await _core_access(ctx, bus.cores[0], MSR_BASE + 0xC, wdata=1)
            done.append("core0 resumed")

        async def core1(ctx):
            await ctx.tick().repeat(3)
            for _ in range(2):
                done.append(("core1", await _core_access(ctx, bus.cores[1], CONTROL_BASE)))
            done.append(("core1 msr", await _core_access(ctx, bus.cores[1], MSR_BASE + 0x4)))
            await ctx.tick().repeat(10)         # core 0 stays parked meanwhile
            log.append("resume")
            await ctx.tick().until(bus.cores[0].ready | ~bus.cores[0].valid)
            await ctx.tick()
            errors.append(ctx.get(top.ram.ic.bus_error))

        engine = _windows_engine(bus.windows, log, hold={0: 0, 1: 2}, parks={(0, 0xC)})
        simulate(top, core0, core1, background=[engine, _never_shared(top)])
        seen[msr_window] = log, done, *errors
    vmgexit, control = (0, CoreWindow.MSR, 0xC, 1, 1), (1, CoreWindow.CONTROL, 0, 0, 0)
    assert seen[True] == ([vmgexit, control, control, (1, CoreWindow.MSR, 0x4, 0, 0), "resume"],
                          [("core1", 0x41), ("core1", 0x41), ("core1 msr", 0x41), "core0 resumed"], 0)
    # without the MSR window, core 0's VMGEXIT store is not a window access either: the shared
    # bus drops it and flags core 0
    assert seen[False] == ([control, control, "resume"],
                           ["core0 resumed", ("core1", 0x41), ("core1", 0x41), ("core1 msr", 0)], 0b11)


def test_window_bus_parameters():
    with pytest.raises(ValueError, match=r"n_cores must be an integer from 1 to 256, not 0"):
        WindowBus(n_cores=0)
    with pytest.raises(TypeError, match=r"registered_requests must be a bool, not 1"):
        WindowBus(n_cores=2, registered_requests=1)


# --- the cores' windows ----------------------------------------------------------------------------

class _WindowsWithApics(Elaboratable):
    """The windows of ``len(apic_ids)`` cores with APIC register buses that take each request
    ``delay`` cycles after it is raised and answer one cycle later, core i's with
    ``rdata + (i << 32) + i`` (each core's halves differ) and 0 outside the answer, as
    :class:`~apwake.rtl.lapic.signatures.RegisterBusSignature` asks; the sync domain's reset is
    ``rst``."""

    def __init__(self, rdata=0, *, delay=2, **kwargs):
        self.windows, self.rdata, self.delay = CoreWindows(**kwargs), rdata, delay
        self.rst = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.rst.eq(self.rst)
        m.submodules.windows = windows = self.windows
        for i, reg in enumerate(windows.apic):
            waited = Signal(range(self.delay + 1))
            m.d.comb += [reg.req_ready.eq(waited == self.delay),
                         reg.rdata.eq(Mux(reg.resp_valid, self.rdata + (i << 32) + i, 0))]
            m.d.sync += [waited.eq(Mux(reg.req_valid & ~reg.req_ready, waited + 1, 0)),
                         reg.resp_valid.eq(reg.req_valid & reg.req_ready)]
        return m


async def _window_access(ctx, dut, core, window, offset, wdata=None, requests=None):
    """Core ``core``'s decoded access, held until done or parked: ``(rdata, cycles, parked)``;
    the APIC requests it makes are added to ``requests`` as ``(core, space, addr, write,
    wdata)`` when they are taken, the core whose bus carries it, and its GHCB MSR writes as ``(core, "GHCB",
    wdata)``."""
    acc = dut.access
    for member, value in ((acc.valid, 1), (acc.core, core), (acc.window, window), (acc.addr, offset),
                          (acc.write, wdata is not None), (acc.wdata, wdata or 0)):
        ctx.set(member, value)
    cycles = 1
    while True:
        for i, reg in enumerate(dut.apic):
            if ctx.get(reg.req_valid) and ctx.get(reg.req_ready):
                requests.append((i, ctx.get(reg.space), ctx.get(reg.addr), ctx.get(reg.write), ctx.get(reg.wdata)))
        for i, vcpu in enumerate(getattr(dut, "vcpu", ())):
            if ctx.get(vcpu.msr_write):
                requests.append((i, "GHCB", ctx.get(vcpu.msr_wdata)))
        if ctx.get(acc.done) or ctx.get(acc.park):
            break
        assert cycles < 16, "the windows did not end the access"
        await ctx.tick()
        cycles += 1
    result = (ctx.get(acc.rdata), cycles, ctx.get(acc.park))
    await ctx.tick()
    ctx.set(acc.valid, 0)
    return result


def test_control_window_reads_the_core_and_sends_an_ap_back(simulate):
    """One engine answers each core with its own index, APIC ID, start address and stack; an
    AP's RESET_VECTOR store pulses its own bit (the BSP's none)."""
    seen = {}
    for x2apic in (True, False):
        dut = CoreWindows(apic_ids=(0x10, 0x11, 0x12), bsp_index=0, ap_start="mailbox", msr_window=False,
                          x2apic=x2apic, ram_bytes=0x4000, stack_bytes=0x100)

        async def bench(ctx):
            for core, (addr, sp) in enumerate(((0x3000, 0), (0x5000, 0x1EE0), (0x7000, 0x1DE0))):
                ctx.set(dut.start_addr[core], addr)
                ctx.set(dut.start_sp[core], sp)
            for core in (0, 2):
                values = [await _window_access(ctx, dut, core, CoreWindow.CONTROL, CONTROL[name])
                          for name in ("CORE_ID", "APIC_ID", "START_ADDR", "N_CORES", "AP_START", "FEATURES",
                                       "START_SP", "RAM_BYTES", "STACK_BYTES")]
                acc = dut.access
                for member, value in ((acc.valid, 1), (acc.core, core), (acc.window, CoreWindow.CONTROL),
                                      (acc.addr, CONTROL["RESET_VECTOR"]), (acc.write, 1)):
                    ctx.set(member, value)
                seen[x2apic, core] = values, ctx.get(dut.back_to_firmware)
                await ctx.tick()
                ctx.set(acc.valid, 0)

        simulate(dut, bench)
    answer = lambda v: (v, 1, 0)      # noqa: E731 (done in the access's first cycle)
    from apwake.rtl.soc.memory_map import FEATURES
    assert FEATURES == {"MSR_WINDOW": 1, "X2APIC": 2}
    for x2apic in (True, False):
        features = answer(2 if x2apic else 0)
        assert seen[x2apic, 0] == ([answer(0), answer(0x10), answer(0x3000), answer(3), answer(1), features,
                                    answer(0), answer(0x4000), answer(0x100)], 0)
        assert seen[x2apic, 2] == ([answer(2), answer(0x12), answer(0x7000), answer(3), answer(1), features,
                                    answer(0x1DE0), answer(0x4000), answer(0x100)], 0b100)


def test_a_group_engine_answers_with_the_socs_core_indices(simulate):
    """An engine for cores 1 and 2 of three (a large build's group): its local core 0 reads
    CORE_ID 1 and core 1's APIC ID, N_CORES counts the SoC's three; the BSP (core 1, local 0)
    ignores RESET_VECTOR, core 2 (local 1) pulses its own bit."""
    dut = CoreWindows(apic_ids=(0x10, 0x11, 0x12), bsp_index=1, cores=range(1, 3), ap_start="mailbox",
                      msr_window=False)
    seen = {}

    async def bench(ctx):
        acc = dut.access
        for local in (0, 1):
            seen[local] = [(await _window_access(ctx, dut, local, CoreWindow.CONTROL, CONTROL[name]))[0]
                           for name in ("CORE_ID", "APIC_ID", "N_CORES")]
            for member, value in ((acc.valid, 1), (acc.core, local), (acc.window, CoreWindow.CONTROL),
                                  (acc.addr, CONTROL["RESET_VECTOR"]), (acc.write, 1)):
                ctx.set(member, value)
            seen[local].append(ctx.get(dut.back_to_firmware))
            await ctx.tick()
            ctx.set(acc.valid, 0)

    simulate(dut, bench)
    assert seen == {0: [1, 0x11, 3, 0], 1: [2, 0x12, 3, 0b10]}


@pytest.mark.parametrize("registered_request", [False, True])
def test_msr_window_wrmsr_rdmsr_and_the_apic_window(simulate, registered_request):
    """Each core's SELECT, DATA_LO and DATA_HI are its own (kept in the engine's memory): core 1's
    WRMSR goes to its APIC with its DATA_LO while core 0 selected another MSR in between, and
    with it while the APIC keeps the request waiting; each core's DATA_HI is its own APIC's
    answer; after a reset the three read 0 again.  The same requests in the same cycles with
    the request's fields in flip-flops (``registered_request``)."""
    top = _WindowsWithApics(0xAAAA_BBBB_CCCC_DD00, apic_ids=(0, 1), bsp_index=0,
                            registered_request=registered_request)
    dut = top.windows
    requests, seen = [], {}

    async def bench(ctx):
        access = functools.partial(_window_access, ctx, dut, requests=requests)
        seen["after reset"] = [await access(1, CoreWindow.MSR, MSR_WINDOW[name]) for name in ("SELECT", "DATA_HI")]
        await access(1, CoreWindow.MSR, MSR_WINDOW["SELECT"], 0x830)
        await access(0, CoreWindow.MSR, MSR_WINDOW["SELECT"], 0x1B)
        await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_LO"], 0x0004_4500)
        await access(0, CoreWindow.MSR, MSR_WINDOW["DATA_LO"], 0x0000_0900)
        seen["no request yet"] = list(requests)
        seen["wrmsr"] = await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_HI"], 0x0000_0003)
        seen["select"] = [await access(core, CoreWindow.MSR, MSR_WINDOW["SELECT"]) for core in (0, 1)]
        seen["rdmsr"] = await access(0, CoreWindow.MSR, MSR_WINDOW["DATA_LO"])
        seen["data_hi"] = [await access(core, CoreWindow.MSR, MSR_WINDOW["DATA_HI"]) for core in (0, 1)]
        seen["vmgexit reads 0"] = await access(1, CoreWindow.MSR, MSR_WINDOW["VMGEXIT"])
        seen["mmio"] = await access(1, CoreWindow.APIC, 0x0F0)
        ctx.set(top.rst, 1)
        await ctx.tick()
        ctx.set(top.rst, 0)
        seen["reset again"] = [await access(core, CoreWindow.MSR, MSR_WINDOW[name])
                               for core in (0, 1) for name in ("SELECT", "DATA_HI")]

    simulate(top, bench)
    # cycles: read SELECT (and DATA_LO), the request waits 2 cycles and is answered the next
    assert seen == {"after reset": [(0, 2, 0)] * 2, "no request yet": [],
                    "wrmsr": (0xCCCC_DD01, 7, 0),
                    "select": [(0x1B, 2, 0), (0x830, 2, 0)],
                    "rdmsr": (0xCCCC_DD00, 6, 0),
                    "data_hi": [(0xAAAA_BBBB, 2, 0), (0xAAAA_BBBC, 2, 0)], "vmgexit reads 0": (0, 1, 0),
                    "mmio": (0xCCCC_DD01, 5, 0), "reset again": [(0, 2, 0)] * 4}
    assert [r[:4] for r in requests] == [(1, Space.MSR, 0x830, 1), (0, Space.MSR, 0x1B, 0), (1, Space.MMIO, 0x0F0, 0)]
    assert requests[0][4] == 0x3_0004_4500            # one WRMSR with both halves
    assert requests[2][4] == 0


@pytest.mark.parametrize("delay", [0, 2])
def test_request_copies_reach_each_group_of_apics(simulate, delay):
    """With the request in flip-flops, each group of APICS_PER_REQUEST_COPY APICs has its own
    copy, loaded only for its cores: accesses alternating between cores of two groups (an
    APIC window read, a WRMSR through the MSR window) reach each core's APIC with its own
    fields, in the same cycles and with the same answers as without the flip-flops, whether
    the APICs take a request at once (``req_ready`` high while idle, as the APIC's is) or
    after ``delay`` cycles; an access cut by the domain's reset while its APIC holds it off
    leaves no request behind."""
    from apwake.rtl.soc.core_windows import APICS_PER_REQUEST_COPY
    n = APICS_PER_REQUEST_COPY + 2
    cores = (n - 1, 1, n - 2, 0, n - 1)         # alternating between the two groups
    results = {}
    for registered in (False, True):
        top = _WindowsWithApics(0x1000_0000_2000_0000, apic_ids=tuple(range(n)), bsp_index=0, delay=delay,
                                registered_request=registered)
        dut, requests, answers = top.windows, [], []

        async def bench(ctx):
            access = functools.partial(_window_access, ctx, dut, requests=requests)
            for core in cores:
                answers.append(await access(core, CoreWindow.APIC, 0x0F0))
                await access(core, CoreWindow.MSR, MSR_WINDOW["SELECT"], 0x800 + core)
                await access(core, CoreWindow.MSR, MSR_WINDOW["DATA_LO"], 0x100 + core)
                answers.append(await access(core, CoreWindow.MSR, MSR_WINDOW["DATA_HI"], core))
            # core 1's APIC read, reset while it waits for its APIC (or just after it was taken)
            acc = dut.access
            for member, value in ((acc.valid, 1), (acc.core, 1), (acc.window, CoreWindow.APIC),
                                  (acc.addr, 0x0F0), (acc.write, 0)):
                ctx.set(member, value)
            await ctx.tick()
            ctx.set(top.rst, 1)
            ctx.set(acc.valid, 0)
            await ctx.tick()
            ctx.set(top.rst, 0)
            for _ in range(6):
                await ctx.tick()
                answers.append(("after reset", [ctx.get(reg.req_valid) for reg in dut.apic]))

        simulate(top, bench)
        results[registered] = requests, answers
    requests, answers = results[True]
    assert results[True] == results[False]
    assert requests == [request for core in cores
                        for request in ((core, Space.MMIO, 0x0F0, 0, 0),
                                        (core, Space.MSR, 0x800 + core, 1, (core << 32) | 0x100 + core))]
    # two answers a core, then the cycles after the reset; each APIC read's answer is its own
    # core's APIC's: rdata + (i << 32) + i (the low half)
    reads, after_reset = answers[:2 * len(cores)], answers[2 * len(cores):]
    assert [rdata for rdata, _, _ in reads[::2]] == [0x2000_0000 + core for core in cores]
    assert after_reset == [("after reset", [0] * n)] * 6


@pytest.mark.parametrize("registered_request", [False, True])
def test_ghcb_msr_and_a_vmgexit_that_waits_for_the_resume(simulate, registered_request):
    """Core 1's GHCB MSR is read and written on its vCPU port (never the APIC, also when each
    APIC's ``req_valid`` is a flip-flop); its VMGEXIT parks core 1 alone until its exit_done,
    while core 0's accesses go on."""
    top = _WindowsWithApics(0, apic_ids=(0, 1), bsp_index=0, ap_start="ghcb", registered_request=registered_request)
    dut = top.windows
    vcpu, acc = dut.vcpu[1], dut.access
    requests, seen = [], {}

    async def bench(ctx):
        access = functools.partial(_window_access, ctx, dut, requests=requests)
        ctx.set(vcpu.msr_rdata, 0x1234_5678_9ABC_DEF0)
        await access(1, CoreWindow.MSR, MSR_WINDOW["SELECT"], MSR_GHCB)
        await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_LO"], 0x0000_0004)
        seen["wrmsr"] = await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_HI"], 0x8000_0000)
        seen["rdmsr"] = await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_LO"])
        seen["data_hi"] = await access(1, CoreWindow.MSR, MSR_WINDOW["DATA_HI"])
        for member, value in ((acc.valid, 1), (acc.core, 1), (acc.window, CoreWindow.MSR),
                              (acc.addr, MSR_WINDOW["VMGEXIT"]), (acc.write, 1)):
            ctx.set(member, value)
        seen["vmgexit"] = (ctx.get(acc.park), ctx.get(acc.done), ctx.get(vcpu.vmgexit), ctx.get(dut.vcpu[0].vmgexit))
        await ctx.tick()
        ctx.set(acc.valid, 0)
        held = []
        for _ in range(3):                     # the hypervisor keeps the vCPU; core 0 goes on
            held.append((ctx.get(acc.parked), ctx.get(acc.resume), ctx.get(vcpu.vmgexit)))
            seen.setdefault("core 0", []).append(await access(0, CoreWindow.CONTROL, CONTROL["CORE_ID"]))
        seen["held"] = held
        ctx.set(vcpu.exit_done, 1)
        await ctx.tick()
        ctx.set(vcpu.exit_done, 0)
        seen["resumed"] = [(ctx.get(acc.parked), ctx.get(acc.resume))]
        await ctx.tick()
        seen["resumed"].append((ctx.get(acc.parked), ctx.get(acc.resume)))

    simulate(top, bench)
    assert seen["wrmsr"] == (0, 3, 0) and seen["rdmsr"] == (0x9ABC_DEF0, 2, 0)
    assert seen["data_hi"] == (0x1234_5678, 2, 0)
    assert seen["vmgexit"] == (1, 0, 1, 0)
    assert seen["held"] == [(0b10, 0, 0)] * 3 and seen["core 0"] == [(0, 1, 0)] * 3
    assert seen["resumed"] == [(0, 0b10), (0, 0)]
    # one WRMSR of both halves on core 1's vCPU port; the GHCB MSR never goes to the APIC
    assert requests == [(1, "GHCB", 0x8000_0000_0000_0004)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(apic_ids=()), r"apic_ids must name 1 to 256 cores, not 0"),
    (dict(apic_ids=(0, 1), bsp_index=2), r"bsp_index must be a core index below 2, not 2"),
    (dict(apic_ids=(0, 1), bsp_index=-1), r"bsp_index must be a core index below 2, not -1"),
    (dict(apic_ids=(0, 1 << 32)), r"apic_ids\[1\] must be a 32-bit integer, not 4294967296"),
    (dict(apic_ids=(0, 1), ap_start="tdx"), r"ap_start must be one of"),
    (dict(apic_ids=(0, 1), ap_start="ghcb", msr_window=False), r"ap_start='ghcb' needs the MSR window"),
    (dict(apic_ids=(0, 1), stack_bytes=-1), r"stack_bytes must be a 32-bit integer"),
    (dict(apic_ids=(0, 1), registered_request=1), r"registered_request must be a bool, not 1"),
    (dict(apic_ids=(0, 1), cores=range(1, 3)), r"cores must be a non-empty range of step 1 inside range\(2\), "
                                               r"not range\(1, 3\)"),
    (dict(apic_ids=(0, 1), cores=range(1, 1)), r"cores must be a non-empty range"),
    (dict(apic_ids=(0, 1, 2), cores=range(0, 3, 2)), r"cores must be a non-empty range of step 1"),
    (dict(apic_ids=(0, 1), cores=[0, 1]), r"not \[0, 1\]"),
])
def test_core_windows_parameters(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CoreWindows(**{"bsp_index": 0, **kwargs})


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n_cores=0, ram_bytes=8192, uart_divisor=4), ValueError, r"n_cores must be an integer from 1 to 256, not 0"),
    (dict(n_cores=2, ram_bytes=8190, uart_divisor=4), ValueError,
     r"ram_bytes must be a multiple of 4 from 8, not 8190"),
    (dict(n_cores=2, ram_bytes=8192, uart_divisor=0), ValueError,
     r"UART divisor must be 1 to 65535 clocks per bit, not 0"),
    (dict(n_cores=2, ram_bytes=8192, uart_divisor=4, registered_requests=1), TypeError,
     r"registered_requests must be a bool, not 1"),
    (dict(n_cores=2, ram_bytes=8192, uart_divisor=4, core_windows=None), TypeError,
     r"core_windows must be a bool, not None"),
])
def test_interconnect_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        Interconnect(**kwargs)


# --- SERV as a core (issue 16) ---------------------------------------------------------------------

async def _serv_access(ctx, serv_bus, *, watchdog_cycles=64, **request):
    """One SERV-style access (``doc/interface.rst``): ``cyc`` with the request held until
    ``ack``, dropped the cycle after; returns ``(rdt at ack, cycles waited)``.  No ``ack``
    within ``watchdog_cycles`` fails the test, naming the request."""
    for name, value in request.items():
        ctx.set(getattr(serv_bus, name), value)
    ctx.set(serv_bus.cyc, 1)
    for cycles in range(1, watchdog_cycles + 1):
        _, _, ack, rdt = await ctx.tick().sample(serv_bus.ack, serv_bus.rdt)
        if ack:
            break
    else:
        raise AssertionError(f"no ack within {watchdog_cycles} cycles for {request}")
    ctx.set(serv_bus.cyc, 0)
    return rdt, cycles


def test_serv_buses_reach_ram_and_uart_through_the_interconnect():
    """SERV's fetch, a byte store in lane 2 (``sel`` 0b0100, data already in its lane), a load
    and a UART store, through :class:`ServBusAdapter` onto a core port of the interconnect: the
    fetch reads the RAM word, the store changes that byte only, the UART sends the byte once,
    and each access is answered on the bus that asked, never on the other."""
    data = 0x100                                  # above the boot ROM, which ignores stores
    top = _InterconnectWithRam(n_cores=2, init=[0x11111111, 0x22222222] + [0] * 62 + [0x44332211])
    ic = top.ic
    adapter = ServBusAdapter()

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.top, m.submodules.adapter = top, adapter
            wiring.connect(m, adapter.bus, ic.cores[1])
            return m

    seen, wrong_acks, uart = {}, [], []

    async def bench(ctx):
        seen["fetch"] = await _serv_access(ctx, adapter.ibus, adr=4)
        seen["store"] = await _serv_access(ctx, adapter.dbus, adr=data, dat=0x00AB0000, sel=0b0100, we=1)
        seen["load"] = await _serv_access(ctx, adapter.dbus, adr=data, sel=0b1111, we=0)
        await _serv_access(ctx, adapter.dbus, adr=UART_TX, dat=0x41, sel=0b0001, we=1)
        for _ in range(4 * 12):                   # the byte on the line, and no second one
            await ctx.tick()

    async def watch(ctx):
        async for _, _, iack, dack, icyc, dcyc, valid, data in ctx.tick().sample(
                adapter.ibus.ack, adapter.dbus.ack, adapter.ibus.cyc, adapter.dbus.cyc,
                ic.uart_valid, ic.uart_data):
            if (iack and not icyc) or (dack and not dcyc):
                wrong_acks.append((iack, dack, icyc, dcyc))
            if valid:
                uart.append(data)

    simulate(Top(), bench, background=[watch])
    assert seen["fetch"][0] == 0x22222222
    assert seen["load"][0] == 0x44AB2211
    assert uart == [0x41] and wrong_acks == []


def test_serv_bus_adapter_requests(simulate):
    """The native request for each SERV bus: a fetch is ``instr`` with no byte lanes; a load has
    no lanes either, a store its ``sel``; ``ready`` goes back to the bus that asked, and to
    neither when neither asks."""
    dut = ServBusAdapter()
    seen = {}

    async def bench(ctx):
        def request():
            b = dut.bus
            return tuple(ctx.get(s) for s in (b.valid, b.instr, b.addr, b.wstrb))

        seen["idle"] = request()
        ctx.set(dut.ibus.cyc, 1)
        ctx.set(dut.ibus.adr, 0x40)
        ctx.set(dut.bus.ready, 1)
        seen["fetch"] = request() + (ctx.get(dut.ibus.ack), ctx.get(dut.dbus.ack))
        ctx.set(dut.ibus.cyc, 0)
        ctx.set(dut.dbus.cyc, 1)
        ctx.set(dut.dbus.adr, 0x1000_0000)
        ctx.set(dut.dbus.sel, 0b0011)
        seen["load"] = request() + (ctx.get(dut.ibus.ack), ctx.get(dut.dbus.ack))
        ctx.set(dut.dbus.we, 1)
        seen["store"] = request()
        ctx.set(dut.reset, 1)           # a load's dbus.cyc through a reset: no request, no ack
        ctx.set(dut.dbus.we, 0)
        seen["load in reset"] = request() + (ctx.get(dut.ibus.ack), ctx.get(dut.dbus.ack))
        ctx.set(dut.dbus.cyc, 0)
        ctx.set(dut.ibus.cyc, 1)        # the fetch SERV raises as its reset ends
        seen["fetch in reset"] = request()[:1] + (ctx.get(dut.ibus.ack),)
        ctx.set(dut.reset, 0)
        seen["fetch after reset"] = request()[:1] + (ctx.get(dut.ibus.ack),)
        ctx.set(dut.ibus.cyc, 0)        # neither bus asks: a late ready reaches neither
        seen["late ready"] = (ctx.get(dut.ibus.ack), ctx.get(dut.dbus.ack))

    simulate(dut, bench, clocked=False)
    assert seen == {"idle": (0, 1, 0, 0), "fetch": (1, 1, 0x40, 0, 1, 0),
                    "load": (1, 0, 0x1000_0000, 0, 0, 1), "store": (1, 0, 0x1000_0000, 0b0011),
                    "load in reset": (0, 0, 0x1000_0000, 0, 0, 0), "fetch in reset": (0, 0),
                    "fetch after reset": (1, 1), "late ready": (0, 0)}


def test_serv_core_instantiates_serv_rf_top_at_its_reset_address():
    """A SoC of SERV cores instantiates ``serv_rf_top`` once per core with RESET_PC 0 for the
    BSP and AP_BOOT for the APs, and the package's Verilog defines every SERV module it uses."""
    from amaranth.back import verilog
    from apwake.rtl.lapic import ApicFabric
    from apwake.rtl.soc import Soc
    from apwake.rtl.soc.memory_map import AP_BOOT
    from apwake.rtl.soc.serv import verilog_sources

    soc = Soc(ApicFabric([0, 1, 2], n_vectors=32, local_interrupts=False), firmware=[0] * 16,
              msr_window=False, core="serv")
    text = verilog.convert(soc, name="soc")
    # a pipelined (large) build's cores take their reset from their own flip-flop (core_reset)
    pipelined = verilog.convert(Soc(ApicFabric([0, 1, 2], n_vectors=32, local_interrupts=False, pipelined=True),
                                    firmware=[0] * 16, msr_window=False, core="serv"), name="soc")
    def registered_resets(verilog_text):
        """How many cores' ``i_rst`` is a register of their own module."""
        count = 0
        for module in verilog_text.split("endmodule"):
            for net in re.findall(r"\.i_rst\(([^)]*)\)", module):
                count += bool(re.search(rf"^\s*reg (\[[^]]*\] )?{re.escape(net.strip())}( =|;)", module, re.M))
        return count

    assert registered_resets(text) == 0 and registered_resets(pipelined) == 3
    # and the shared bus takes their requests from flip-flops (Interconnect(registered_requests))
    assert "core2_request_valid" not in text and "core2_request_valid" in pipelined
    resets = re.findall(r"serv_rf_top #\([^;]*?\.RESET_PC\(\d+'([dh])([0-9a-f]+)\)", text)
    assert text.count("serv_rf_top #(") == 3
    assert sorted(int(value, 16 if base == "h" else 10) for base, value in resets) == [0, AP_BOOT, AP_BOOT], resets
    sources = "".join(verilog_sources().values())
    # instances, with parameters or without: "serv_alu\n    alu\n    (" or "serv_ctrl\n    #(..."
    used = set(re.findall(r"^\s*(serv_\w+)\s*(?:#|\w+\s*\()", sources, re.M))
    defined = set(re.findall(r"^module\s+(serv_\w+)", sources, re.M))
    assert {"serv_rf_top", "serv_top", "serv_rf_ram", "serv_rf_ram_if"} <= defined and used <= defined, used - defined
    assert {"serv_alu", "serv_immdec", "serv_bufreg2", "serv_ctrl", "serv_state"} <= used, used


@pytest.mark.parametrize("registered", [False, True])
def test_serv_core_reset_follows_run_and_the_domain_reset(registered):
    """SERV's reset (rtl/soc/serv.py ``core_reset``): high while the domain resets and while
    ``run`` is low; registered (large builds), one cycle after each change of ``run`` and of
    the domain's reset."""
    from apwake.rtl.soc.serv import core_reset
    m = Module()
    run, rst = Signal(), Signal()
    m.domains.sync = sync = ClockDomain("sync")
    m.d.comb += sync.rst.eq(rst)
    reset = Signal()
    m.d.comb += reset.eq(core_reset(m, run, registered=registered))
    seen = []

    async def bench(ctx):
        # (run, domain reset) per cycle: reset held, run set, run dropped, domain reset, run on
        for run_value, rst_value in [(0, 1), (1, 1), (1, 0), (1, 0), (0, 0), (0, 0), (1, 0), (1, 1), (1, 0)]:
            ctx.set(run, run_value)
            ctx.set(rst, rst_value)
            seen.append(ctx.get(reset))
            await ctx.tick()

    simulate(m, bench)
    if registered:     # the flip-flop shows the previous cycle's ~run, 1 after a domain reset
        assert seen == [1, 1, 1, 0, 0, 1, 1, 0, 1], seen
    else:
        assert seen == [1, 1, 0, 0, 1, 1, 0, 1, 0], seen


@pytest.mark.parametrize("make", [lambda: Serv(reset_address=0, registered_reset=1),
                                  lambda: core_choice("picorv32").make(reset_address=0, registered_reset=1)])
def test_registered_reset_is_a_bool_for_either_core(make):
    with pytest.raises(TypeError, match=r"registered_reset must be a bool, not 1"):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: core_choice("vexriscv"), r"core must be one of \('picorv32', 'serv'\), not 'vexriscv'"),
    (lambda: core_choice(["serv"]), r"core must be one of \('picorv32', 'serv'\), not \['serv'\]"),
    (lambda: Serv(reset_address=0x42), r"reset_address must be a multiple of 4 from 0 to 0xFFFFFFFC, not 66"),
    (lambda: Serv(reset_address=1 << 32), r"reset_address must be a multiple of 4 .*not 4294967296"),
    (lambda: build_firmware([0, 1], isa="rv32e"), r"isa must be 'rv32i' with optional 'm' and 'c' .*not 'rv32e'"),
    (lambda: build_firmware([0, 1], isa="rv32ci"), r"isa must be .*not 'rv32ci'"),
])
def test_core_choice_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("core", ["picorv32", "serv"])
def test_eight_core_firmware_fits_the_smallest_ram(core):
    """`apwake run soc-demo` gives 8 cores 8 KiB of RAM (sim/cli.py) and 256-byte stacks: the
    firmware for each core's ISA, its .bss included, must fit below the stacks (the SoC checks
    image and .bss; 208 bytes were left for RV32I on 2026-12-02).  Built with the bus_error probe it
    fits too, and its code below the trampoline page is as long as the default one's."""
    from apwake.rtl.lapic import ApicFabric
    from apwake.rtl.soc import Soc
    isa = core_choice(core).isa
    image, probed = (build_firmware(list(range(8)), isa=isa, probe_bus_error=p) for p in (False, True))
    for firmware in (image, probed):
        assert 4 * len(firmware.words) <= firmware.ram_end <= 8192 - 8 * 256, (core, firmware.ram_end)
        Soc(ApicFabric(list(range(8)), n_vectors=32), firmware=firmware.words, firmware_bytes=firmware.ram_end,
            ram_bytes=8192, core=core)
    from elftools.elf.elffile import ELFFile
    text_end = []
    for firmware in (image, probed):
        with open(firmware.elf, "rb") as f:
            text = ELFFile(f).get_section_by_name(".text")
            text_end.append(text["sh_addr"] + text["sh_size"])
    assert text_end[0] == text_end[1] < 0x1000, text_end     # the probe adds nothing below the trampoline
    with pytest.raises(ValueError, match=r"firmware of 6145 bytes \(image and .bss\) does not fit below the 8 "
                                         r"stacks of 256 bytes in 8192 bytes of RAM"):
        Soc(ApicFabric(list(range(8)), n_vectors=32), firmware=image.words, firmware_bytes=6145, ram_bytes=8192)


def test_soc_config_probe_is_an_init_sipi_ending():
    """``probe_bus_error`` ends an INIT-SIPI run (the firmware's probe follows its summary
    there); another start mode is refused by name before any build."""
    from apwake.sim.vip.lapic.design import FabricConfig
    from apwake.sim.vip.soc.design import SocConfig
    fabric = FabricConfig.contiguous(2, n_vectors=32)
    assert SocConfig(fabric, probe_bus_error=True).label.endswith("-probe")
    with pytest.raises(ValueError, match=r"probe_bus_error is an INIT-SIPI run's ending, not 'mailbox''s"):
        SocConfig(fabric, ap_start="mailbox", probe_bus_error=True)


def test_soc_refuses_an_unknown_core():
    from apwake.rtl.lapic import ApicFabric
    from apwake.rtl.soc import Soc
    with pytest.raises(ValueError, match=r"core must be one of \('picorv32', 'serv'\), not 'rocket'"):
        Soc(ApicFabric([0, 1], n_vectors=32), firmware=[0] * 16, core="rocket")
