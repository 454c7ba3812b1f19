"""The soft-SoC's parts in Amaranth's simulator (no Verilator): the AP start logic."""

import pytest

from apwake.rtl.mpwk_mailbox.layouts import OFFSETS, Command
from apwake.rtl.soc.ap_start import ApStart
from apwake.rtl.soc.memory_map import MAILBOX_BASE


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


@pytest.mark.parametrize("kwargs, message", [
    (dict(apic_ids=[0, 1], bsp_index=0, ap_start="tdx"), r"ap_start must be one of \('sipi', 'mailbox', 'ghcb'\)"),
    (dict(apic_ids=[0, 1], bsp_index=2, ap_start="sipi"), r"bsp_index must be a core index below 2, not 2"),
])
def test_ap_start_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ApStart(**kwargs)

