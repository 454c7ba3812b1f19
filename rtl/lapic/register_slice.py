"""A register slice on an APIC's register port: the request and the response each through
flip-flops, for large FPGA builds where one CPU side serves many APICs across the device.

The soft-SoC's windows engine (:class:`apwake.rtl.soc.core_windows.CoreWindows`) drives every
APIC's register port from one place; on the 32-core ECP5-85F build the path from the engine
across the device into an APIC's register decode was the critical one (33.0 ns, 29.4 ns of it
routing; synth/REPORT.md "ulx3s-timing").  A slice per APIC holds the request in flip-flops the
placer can put beside the APIC, and the answer in flip-flops on the way back.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .signatures import RegisterBusSignature, Space

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """One request at a time, held for the APIC until it takes it; its answer one cycle after
    the APIC's.

    The CPU side's request is taken when ``cpu.req_valid`` and ``cpu.req_ready`` (the slice is
    empty); from the next cycle the slice offers it to the APIC, with every field from its
    flip-flops, until ``apic.req_ready``; the APIC's answer (``resp_valid``, ``rdata``, ``gp``)
    reaches the CPU side one cycle after the APIC gives it.  So an access answers three cycles
    after the CPU side's take when the APIC is ready, instead of one (the CPU side must wait for
    ``resp_valid``, as the windows engine does, rather than count cycles), and later by as many
    cycles as the APIC stalls.  Nothing else changes: each request reaches the APIC once, in
    order, and ``cpu.rdata`` is 0 except with ``resp_valid`` (:class:`RegisterBusSignature`), so
    a CPU side may still OR the answers of several slices.

    Attributes
    ----------
    cpu : In(RegisterBusSignature())
        The port the CPU side (the windows engine) drives, as it would an APIC's.
    apic : Out(RegisterBusSignature())
        To the APIC's register port (``LocalApic.cpu.reg``).
    """

    def __init__(self):
        super().__init__({"cpu": In(RegisterBusSignature()), "apic": Out(RegisterBusSignature())})

    def elaborate(self, platform):
        m = Module()
        cpu, apic = self.cpu, self.apic
        full = Signal()                     # a request waits for the APIC
        space, addr, write, wdata = Signal(Space), Signal(32), Signal(), Signal(64)
        m.d.comb += [cpu.req_ready.eq(~full), apic.req_valid.eq(full), apic.space.eq(space),
                     apic.addr.eq(addr), apic.write.eq(write), apic.wdata.eq(wdata)]
        with m.If(~full):
            # the fields load in every empty cycle (they count only while full), so that the
            # CPU side's req_valid, which crosses the device, enables one flip-flop, not 98
            m.d.sync += [full.eq(cpu.req_valid), space.eq(cpu.space), addr.eq(cpu.addr), write.eq(cpu.write),
                         wdata.eq(cpu.wdata)]
        with m.Elif(apic.req_ready):
            m.d.sync += full.eq(0)
        m.d.sync += [cpu.resp_valid.eq(apic.resp_valid), cpu.rdata.eq(apic.rdata), cpu.gp.eq(apic.gp)]
        return m
