"""A small memory-mapped bus shared by peripherals (the MPWK mailbox, later the SoC's windows).

Same handshake as :class:`rtl.lapic.signatures.RegisterBusSignature`: a request is taken when
``req_valid`` and ``req_ready`` are high; one cycle later ``resp_valid`` pulses with ``rdata``.
Data is 32 bits, little-endian, with a byte strobe per byte lane.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemoryBusSignature"]


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
