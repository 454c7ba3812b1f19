"""The start-context unit's call port as a register window on the soft-SoC's shared bus
(ap_start="context"; the registers are :data:`apwake.rtl.soc.memory_map.START_MAP`)."""

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.lib.registers import RegisterDecoder
from apwake.rtl.start_context.layouts import LaunchKind
from apwake.rtl.start_context.signatures import StartCallSignature
from .memory_map import START_MAP

__all__ = ["StartCallWindow"]


class StartCallWindow(wiring.Component):
    """CALL_ADDRESS and CALL_APIC_ID hold the next call's arguments; a store to CALL_OP starts
    it: ``busy`` rises, ``call.valid`` is held until the unit takes the call, and ``busy`` falls
    with ``call.done``, when CALL_STATUS shows the unit's ``status`` and ``field``.  While busy,
    stores to the three are ignored (one caller at a time: the firmware holds its lock, or is
    the only caller), and set CALL_STATUS.dropped, cleared when the next call starts: a lost
    store is refused visibly.  LAUNCHES counts the launch records taken, per :class:`LaunchKind`
    (8 bits each, wrapping).

    A store never waits for the unit: the unit reads the struct from RAM over the same shared
    bus, so a store held until the call is taken or done could deadlock it.  Every access is
    answered the cycle after it is taken; registers are stored whole (``wstrb`` is not looked
    at).

    Attributes
    ----------
    bus : In(MemoryBusSignature())
        The window's accesses (the interconnect's ``start_bus``).
    call : Out(StartCallSignature())
        To :class:`apwake.rtl.start_context.StartContextUnit`'s ``call``.
    launch_taken : In(1)
        A launch record is taken this cycle.
    launch_kind : In(LaunchKind)
        Its kind.
    """

    def __init__(self):
        super().__init__({"bus": In(MemoryBusSignature()), "call": Out(StartCallSignature()),
                          "launch_taken": In(1), "launch_kind": In(LaunchKind)})

    def elaborate(self, platform):
        m = Module()
        bus, call = self.bus, self.call
        regs = RegisterDecoder(START_MAP, bus.addr)
        busy, waiting = Signal(), Signal()          # a call started; not yet taken by the unit
        dropped = Signal()                          # a store came while busy: refused visibly
        counts = [Signal(8, name=f"launches_{kind.name.lower()}") for kind in LaunchKind]

        m.d.comb += [call.valid.eq(waiting), bus.req_ready.eq(1)]
        with m.If(call.valid & call.ready):
            m.d.sync += waiting.eq(0)
        with m.If(call.done):
            m.d.sync += busy.eq(0)

        m.d.sync += bus.resp_valid.eq(bus.req_valid)
        with m.If(bus.req_valid):
            m.d.sync += bus.rdata.eq(regs.read({
                "CALL_ADDRESS": call.address, "CALL_APIC_ID": call.apic_id,
                "CALL_STATUS": Cat(call.status, call.field, busy, dropped), "LAUNCHES": Cat(*counts)}))
            with m.If(bus.write & ~busy):
                with m.If(regs["CALL_ADDRESS"]):
                    m.d.sync += call.address.eq(bus.wdata)
                with m.If(regs["CALL_APIC_ID"]):
                    m.d.sync += call.apic_id.eq(bus.wdata)
                with m.If(regs["CALL_OP"]):
                    m.d.sync += [call.op.as_value().eq(bus.wdata[0:2]), busy.eq(1), waiting.eq(1),
                                 dropped.eq(0)]
            with m.If(bus.write & busy & (regs["CALL_ADDRESS"] | regs["CALL_APIC_ID"] | regs["CALL_OP"])):
                m.d.sync += dropped.eq(1)

        with m.If(self.launch_taken):
            for kind, count in zip(LaunchKind, counts):
                with m.If(self.launch_kind == kind):
                    m.d.sync += count.eq(count + 1)
        return m
