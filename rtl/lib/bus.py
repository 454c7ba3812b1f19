"""A small memory-mapped bus: the MPWK mailbox's target port and the GHCB unit's page accesses.

Same handshake as :class:`rtl.lapic.signatures.RegisterBusSignature`: a request is taken when
``req_valid`` and ``req_ready`` are high; one cycle later ``resp_valid`` pulses with ``rdata``.
Data is 32 bits, little-endian, with a byte strobe per byte lane.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemoryBusSignature", "access_states"]


class MemoryBusSignature(wiring.Signature):
    """Initiator view.  ``addr`` is a byte address (bits 1:0 are ignored: accesses are to the
    32-bit word, lanes chosen by ``wstrb``)."""

    def __init__(self):
        super().__init__({
            "req_valid": Out(1),
            "req_ready": In(1),
            "addr": Out(32),
            "write": Out(1),
            "wdata": Out(32),
            "wstrb": Out(4),
            "resp_valid": In(1),
            "rdata": In(32),
        })


def access_states(m, bus, state, *, then, addr, write=0, wdata=0, wstrb=0, capture=None):
    """Two FSM states (``state`` and ``state + "_RESP"``, inside ``with m.FSM()``) that make one
    access on initiator ``bus``: request until taken, then wait for the response, store
    ``rdata`` into ``capture`` (a signal, or None), go to ``then``."""
    with m.State(state):
        m.d.comb += [bus.req_valid.eq(1), bus.addr.eq(addr), bus.write.eq(write),
                     bus.wdata.eq(wdata), bus.wstrb.eq(wstrb)]
        with m.If(bus.req_ready):
            m.next = f"{state}_RESP"
    with m.State(f"{state}_RESP"):
        with m.If(bus.resp_valid):
            if capture is not None:
                m.d.sync += capture.eq(bus.rdata)
            m.next = then
