"""The guest memory a block's memory initiator (:class:`apwake.rtl.lib.bus.MemoryBusSignature`)
reads and writes, served from :class:`apwake.sim.vip.memory.Memory`: shared by every block's
verification IP (the GHCB MSR unit's page protocol, the start-context unit's struct and GDT
reads), which may not import one another's.
"""

from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from apwake.sim.harness.handshake import Driver
from apwake.sim.harness.pins import port
from apwake.sim.vip.memory import Owner

__all__ = ["GuestMemoryResponder"]


class GuestMemoryResponder(Driver):
    """Serves a unit's memory initiator (``prefix``: ``memory__*``, ``ghcb_memory__*``) from a
    :class:`apwake.sim.vip.memory.Memory`; every write is ``writer``'s (default the hypervisor,
    ``Owner.HYPERVISOR``), so a write into a page a kernel owns is recorded as a corruption.
    Event-driven: sleeps while idle.

    With a pause generator it draws one decision per cycle while a request is up or a response
    is due: True holds ``req_ready`` low (the request waits) or delays ``resp_valid``.

    Attributes
    ----------
    accesses : list of (int, bool, int)
        (address, write, value) of every request taken, in order: each exactly once.
    stalled : dict
        Cycles the unit waited: ``"request"`` (its request up, ``req_ready`` low) and
        ``"response"`` (a response held back).
    """

    def __init__(self, dut, memory, prefix="memory__", writer=Owner.HYPERVISOR):
        super().__init__(dut.clk, f"guest memory {prefix.rstrip('_')}")
        sig = lambda name: port(dut, prefix + name)
        self.memory, self.writer = memory, writer
        self._valid, self._ready = sig("req_valid"), sig("req_ready")
        self._addr, self._write, self._wdata, self._wstrb = sig("addr"), sig("write"), sig("wdata"), sig("wstrb")
        self._resp_valid, self._rdata = sig("resp_valid"), sig("rdata")
        self._ready.value = 1
        self._resp_valid.value = 0
        self._rdata.value = 0
        self.accesses = []
        self.stalled = {"request": 0, "response": 0}

    async def _wait_stalls(self, what):
        """Wait out this run of stalled cycles (drawn at once, then one trigger for all of
        them, so Python is not woken on every stalled cycle); count them under ``what``."""
        cycles = 0
        while self._stalled():
            cycles += 1
        if cycles:
            self.stalled[what] += cycles
            await ClockCycles(self.clk, cycles)

    async def run(self):
        clk = self.clk
        self._ready.value = int(not self._stalled())
        while True:
            await ReadOnly()
            if not self._valid.value:
                await RisingEdge(self._valid)
                continue
            # req_ready was set before this cycle (right after an edge): it is what this edge sees
            taken = bool(self._ready.value)
            addr = int(self._addr.value) & ~3
            write, wdata, wstrb = bool(self._write.value), int(self._wdata.value), int(self._wstrb.value)
            await RisingEdge(clk)
            if not taken:
                self.stalled["request"] += 1
                await self._wait_stalls("request")     # ready stays low, then rises
                self._ready.value = 1
                continue
            # taken at this edge; no second request before the response (apwake.rtl.lib.bus.access_states)
            self._ready.value = 0
            if write:
                lanes = [lane for lane in range(4) if wstrb >> lane & 1]
                if lanes:   # one store: one corruption record at most
                    data = wdata.to_bytes(4, "little")[lanes[0]:lanes[-1] + 1]
                    self.memory.write(addr + lanes[0], data, writer=self.writer)
                self.accesses.append((addr, True, wdata))
                value = 0
            else:
                value = self.memory.read_int(addr, 4)
                self.accesses.append((addr, False, value))
            await self._wait_stalls("response")     # a late response: the unit waits in _RESP
            self._rdata.value = value
            self._resp_valid.value = 1
            await RisingEdge(clk)
            self._resp_valid.value = 0
            self._ready.value = int(not self._stalled())
