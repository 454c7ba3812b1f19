"""SERV's two Wishbone-like buses (instruction and data) onto the SoC's per-core bus, PicoRV32's
native memory interface (:class:`~.picorv32.NativeBusSignature`), which the interconnect
arbitrates (issue 16)."""

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .picorv32 import NativeBusSignature

__all__ = ["ServIbusSignature", "ServDbusSignature", "ServBusAdapter"]


class ServIbusSignature(wiring.Signature):
    """SERV's instruction bus, core view (SERV documentation, ``doc/interface.rst``, "Signals"):
    ``adr`` Out(32) (the instruction's address), ``cyc`` Out(1) (a fetch is under way; held
    until ``ack``), ``ack`` In(1) (one cycle: ``rdt`` In(32) holds the instruction)."""

    def __init__(self):
        super().__init__({"adr": Out(32), "cyc": Out(1), "rdt": In(32), "ack": In(1)})


class ServDbusSignature(wiring.Signature):
    """SERV's data bus, core view (``doc/interface.rst``): ``adr`` Out(32) (word aligned),
    ``dat`` Out(32) (store data, already shifted into its byte lanes), ``sel`` Out(4) (the byte
    lanes), ``we`` Out(1) (a store), ``cyc`` Out(1) (held until ``ack``), ``ack`` In(1) (one
    cycle: ``rdt`` In(32) holds a load's word; SERV picks the lanes itself)."""

    def __init__(self):
        super().__init__({"adr": Out(32), "dat": Out(32), "sel": Out(4), "we": Out(1), "cyc": Out(1),
                          "rdt": In(32), "ack": In(1)})


class ServBusAdapter(wiring.Component):
    """One native request from SERV's two buses: combinational, no state.

    SERV is bit-serial and never has both buses active at once: it fetches (``ibus.cyc``, set
    when the previous instruction is done), then executes, raising ``dbus.cyc`` only for a load
    or store (``rtl/serv_state.v``).  So the data bus wins when it is active (it never is during
    a fetch), ``instr`` says which bus asked, a load has ``wstrb`` 0 and a store its ``sel``.
    Both of SERV's ``cyc`` fall the cycle after their ``ack`` (``ibus_cyc`` is registered on
    ``ack``; ``dbus_cyc`` falls when the register file write that ``ack`` requests starts the bit
    counter), as PicoRV32's ``valid`` falls after ``ready``, so an access is never taken twice.

    While the core is in reset, ``valid`` is low and no ``ack`` is given: SERV's ``dbus.cyc``
    is not gated by its reset and ``ibus.cyc`` rises as the reset ends (``rtl/serv_state.v``),
    so a one-cycle reset during a load or store would otherwise keep ``valid`` high from the
    withdrawn access into the fetch after it, and the SoC's buses, which tell a withdrawn
    request by its ``valid`` falling, would give the fetch the load's answer
    (:func:`~.window_bus.answers_to_held_requests`).

    Attributes
    ----------
    ibus : In(ServIbusSignature())
    dbus : In(ServDbusSignature())
        SERV's buses (``serv_rf_top``'s ``o_ibus_*``/``i_ibus_*`` and ``o_dbus_*``/``i_dbus_*``).
    reset : In(1)
        The core's reset (:func:`~.serv.core_reset`).
    bus : Out(NativeBusSignature())
        The per-core bus towards the interconnect: ``valid`` = ``(ibus.cyc | dbus.cyc) &
        ~reset``; ``ready`` is routed to the ``ack`` of the bus that asked (none when neither
        asks, none in reset), ``rdata`` to both ``rdt``.
    """

    ibus: In(ServIbusSignature())
    dbus: In(ServDbusSignature())
    reset: In(1)
    bus: Out(NativeBusSignature())

    def elaborate(self, platform):
        m = Module()
        ibus, dbus, bus = self.ibus, self.dbus, self.bus
        data = dbus.cyc
        asking = ~self.reset            # (the class docstring: a reset shows on valid)
        m.d.comb += [
            bus.valid.eq((ibus.cyc | dbus.cyc) & asking),
            bus.instr.eq(~data),
            bus.addr.eq(Mux(data, dbus.adr, ibus.adr)),
            bus.wdata.eq(dbus.dat),
            bus.wstrb.eq(Mux(data & dbus.we, dbus.sel, 0)),
            # an ack only to a bus that is asking: a late ``ready`` (a parked access answered
            # after the core moved on) must not load an instruction mid-execution
            ibus.ack.eq(bus.ready & asking & ibus.cyc & ~data),
            dbus.ack.eq(bus.ready & asking & data),
            ibus.rdt.eq(bus.rdata),
            dbus.rdt.eq(bus.rdata),
        ]
        return m
