"""The request/response handshake shared by apwake's buses (register bus, memory bus).

A request is held with ``req_valid`` until a clock edge samples ``req_ready`` high; the response
(``resp_valid`` and its fields) is read one cycle later.  Returns in a writable phase, right
after a clock edge.
"""

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["bus_access", "SimTimeout"]


class SimTimeout(AssertionError):
    """A wait ran past its watchdog."""


async def bus_access(clk, req_valid, req_ready, resp_valid, request, response, *, what,
                     timeout_cycles=1000):
    """Drive ``request`` (``{handle: value}``), complete the handshake and return
    ``(edge_ns, cycles, {name: int})`` read from ``response`` (``{name: handle}``).
    ``edge_ns`` is the clock edge at which the request was taken."""
    for handle, value in request.items():
        handle.value = value
    req_valid.value = 1
    try:
        for cycle in range(timeout_cycles):
            await ReadOnly()
            ready = bool(req_ready.value)
            await RisingEdge(clk)
            if ready:
                break
        else:
            raise SimTimeout(f"{what} not taken within {timeout_cycles} cycles (req_ready stayed low)")
    finally:
        req_valid.value = 0       # also when the caller is cancelled (a CPU reset mid-access)
    edge_ns = cocotb.utils.get_sim_time("ns")
    await ReadOnly()
    if not resp_valid.value:
        raise AssertionError(f"no resp_valid the cycle after {what}")
    values = {name: int(handle.value) for name, handle in response.items()}
    await RisingEdge(clk)
    return edge_ns, cycle + 1, values
