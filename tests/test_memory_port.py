"""rtl/lib/memory.py: the registered read port reads as Amaranth's synchronous read port does,
and Yosys maps it to iCE40 block RAM without the read-first logic it adds to the other."""

import random

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib.memory import Memory

from apwake.rtl.lib.memory import registered_read_port


class _Pair(Elaboratable):
    """Two memories written alike, one read by ``read_port()``, one by ``registered_read_port``."""

    def __init__(self):
        self.addr, self.en = Signal(4), Signal(init=1)
        self.waddr, self.wdata, self.wen = Signal(4), Signal(16), Signal()
        self.plain_data, self.registered_data = Signal(16), Signal(16)

    def elaborate(self, platform):
        m = Module()
        mems = []
        for name in ("plain", "registered"):
            m.submodules[name] = mem = Memory(shape=16, depth=16, init=range(16))
            write = mem.write_port()
            m.d.comb += [write.addr.eq(self.waddr), write.data.eq(self.wdata), write.en.eq(self.wen)]
            mems.append(mem)
        plain = mems[0].read_port()
        registered = registered_read_port(m, mems[1], name="reg")
        for port, out in ((plain, self.plain_data), (registered, self.registered_data)):
            m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en), out.eq(port.data)]
        return m


def test_registered_read_port_reads_as_the_synchronous_port(simulate):
    """Random reads, read enables and writes, a third of them to the word being read: both
    ports give the same data every cycle (the old word on a collision, the held word while the
    enable is low)."""
    dut = _Pair()
    rng = random.Random(16)
    seen = []

    async def bench(ctx):
        collisions = 0
        for _ in range(400):
            addr = rng.randrange(16)
            ctx.set(dut.addr, addr)
            ctx.set(dut.en, rng.random() < 0.8)
            same = rng.random() < 0.33
            ctx.set(dut.waddr, addr if same else rng.randrange(16))
            ctx.set(dut.wdata, rng.randrange(1 << 16))
            ctx.set(dut.wen, rng.random() < 0.5)
            collisions += same and ctx.get(dut.wen) and ctx.get(dut.en)
            await ctx.tick()
            seen.append((ctx.get(dut.plain_data), ctx.get(dut.registered_data)))
        assert collisions > 50

    simulate(dut, bench)
    assert len(seen) == 400
    assert [plain for plain, _ in seen] == [registered for _, registered in seen]
    assert len({plain for plain, _ in seen}) > 100         # the data did change


def test_registered_read_port_refuses_the_comb_domain():
    with pytest.raises(ValueError, match="domain must be a clock domain, not 'comb'"):
        registered_read_port(Module(), Memory(shape=8, depth=4, init=[]), domain="comb")


@pytest.mark.synth
def test_ice40_block_ram_without_read_first_logic():
    """A 256 x 16 memory with a write port and a read port, as the APIC's register memory and
    the SoC's RAM use one, in Yosys's iCE40 mapping: with ``read_port()`` Yosys adds flip-flops
    to delay the write (its read-first emulation); with ``registered_read_port`` one flip-flop
    is left, which with a LUT a data bit gives the read data its initial 0 until the first
    read."""
    from apwake.synth.cores import unit_utilisation
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Ram(wiring.Component):
        def __init__(self, registered):
            self.registered = registered
            super().__init__({"addr": In(8), "waddr": In(8), "wdata": In(16), "wen": In(1), "data": Out(16)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=16, depth=256, init=[])
            write = mem.write_port()
            read = registered_read_port(m, mem) if self.registered else mem.read_port()
            m.d.comb += [write.addr.eq(self.waddr), write.data.eq(self.wdata), write.en.eq(self.wen),
                         read.addr.eq(self.addr), self.data.eq(read.data)]
            return m

    plain, registered = (unit_utilisation(Ram(r), "ice40") for r in (False, True))
    assert plain["BRAM"] == registered["BRAM"] == 1, (plain, registered)
    assert registered["FF"] <= 1 and plain["FF"] >= 16 + 8, (plain, registered)
    assert registered["LUT"] <= 16 + 1 < plain["LUT"], (plain, registered)
