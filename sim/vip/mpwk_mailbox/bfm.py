"""Bus-functional models for the mailbox: the OS's memory port and each parked AP's port.

Both are :class:`apwake.sim.harness.handshake.Driver`: one transfer per call from any phase, and a pause
generator (the OS issuing its stores late; the AP's firmware loop slow to take a wakeup).
"""

from cocotb.triggers import First, ReadOnly, RisingEdge, Timer

from cocotb.utils import get_sim_time

from apwake.rtl.mpwk_mailbox.layouts import OFFSETS, ApState, MailboxStatus

from apwake.sim.harness.clocking import CLOCK_NS, start_clock_and_reset
from apwake.sim.harness.codec import unpack
from apwake.sim.harness.handshake import Driver, PortLock, SimTimeout
from apwake.sim.harness import watch
from apwake.sim.harness.pins import port

__all__ = ["MemoryBusDriver", "ParkedAp", "MailboxEnv", "MailboxPorts"]


class MemoryBusDriver(Driver):
    """32-bit memory bus with byte strobes; 64-bit helpers issue two little-endian words."""

    def __init__(self, dut, prefix="bus__"):
        super().__init__(dut.clk, f"memory port {prefix.rstrip('_')}")
        sig = lambda name: port(dut, prefix + name)
        self._req_valid, self._req_ready = sig("req_valid"), sig("req_ready")
        self._addr, self._write, self._wdata, self._wstrb = sig("addr"), sig("write"), sig("wdata"), sig("wstrb")
        self._resp_valid, self._rdata = sig("resp_valid"), sig("rdata")
        self._lock = PortLock()
        for handle in (self._req_valid, self._addr, self._write, self._wdata, self._wstrb):
            handle.value = 0

    async def _access(self, addr, write, data=0, strobe=0xF):
        what = f"memory {'write' if write else 'read'} at {addr:#x}" + (f" = {data:#x}" if write else "")
        async with self._lock:
            _, _, resp = await self.bus_access(
                self._req_valid, self._req_ready, self._resp_valid,
                {self._addr: addr, self._write: int(write), self._wdata: data,
                 self._wstrb: strobe if write else 0},
                {"rdata": self._rdata}, what=f"{self.name}: {what}")
        return resp["rdata"]

    async def read32(self, addr):
        return await self._access(addr, False)

    async def write32(self, addr, value, strobe=0xF):
        await self._access(addr, True, value, strobe)

    async def write16(self, addr, value):
        """A 2-byte store (addr 2-byte aligned)."""
        shift = (addr & 2) * 8
        await self._access(addr & ~3, True, (value & 0xFFFF) << shift, 0b11 << (addr & 2))

    async def read64(self, addr):
        return await self.read32(addr) | await self.read32(addr + 4) << 32

    async def write64(self, addr, value):
        await self.write32(addr, value & 0xFFFF_FFFF)
        await self.write32(addr + 4, value >> 32)

    async def wait_command_clear(self, base, timeout_ns):
        """The OS's spin on a mailbox Command (``cpu_relax()``: one read per 10 cycles); True
        once it reads 0, False after ``timeout_ns``."""
        deadline = get_sim_time("ns") + timeout_ns
        while await self.read32(base + OFFSETS["command"]) & 0xFFFF:
            if get_sim_time("ns") > deadline:
                return False
            await Timer(10 * CLOCK_NS, "ns")
        return True


class ParkedAp(Driver):
    """One parked AP as the mailbox sees it: ``{prefix}{index}__*`` of ``dut``.  ``watched``:
    the top's watched outputs (:class:`apwake.sim.harness.watch.WatchedOutputs`), or None to
    wait on ``wake`` itself.

    Attributes
    ----------
    wakeups : list of (float, int)
        (time in ns, vector) of every wakeup this AP took; each must come once.
    """

    def __init__(self, dut, index, apic_id, prefix="ap__", *, watched=None):
        super().__init__(dut.clk, f"AP {index} (APIC ID {apic_id:#x})")
        sig = lambda name: port(dut, f"{prefix}{index}__{name}")
        self._wake_name, self._watched = f"{prefix}{index}__wake", watched
        self.index, self.apic_id = index, apic_id
        self.wakeups = []
        self.wake, self.wake_vector, self._state = sig("wake"), sig("wake_vector"), sig("state")
        self._ack, self._return = sig("wake_ack"), sig("return_to_firmware")
        self._descheduled = sig("descheduled")
        for handle in (self._ack, self._return, self._descheduled):
            handle.value = 0

    def rising_edge(self):
        """A trigger for the next rising edge of ``wake``: from the top's watched outputs
        (:class:`apwake.sim.harness.watch.WatchedOutputs`, given as ``watched``) when they hold
        it, else a :class:`~cocotb.triggers.RisingEdge` of the signal.  Await it once."""
        return watch.rising_edge(self._watched, self._wake_name, self.wake)

    def notify(self, event):
        """Set ``event`` at every rising edge of ``wake`` until the cocotb test ends (as
        :meth:`apwake.sim.vip.lapic.bfm.ApicPort.notify`)."""
        watch.notify_rising_edges(self._watched, [(self._wake_name, self.wake)], event)

    def deschedule(self, descheduled=True):
        """The VMM stops (True) or resumes (False) running this vCPU (docs/spec/mpwk.md §7 #16)."""
        self._descheduled.value = int(descheduled)

    @property
    def state(self):
        return ApState(int(self._state.value))

    async def wait_wake(self, *, timeout_cycles=1000):
        """Wait for a wakeup and take it (``wake_ack``, after the pause generator's stalls):
        returns the vector.  The wakeup must then be gone: raised again without a new request,
        it would be delivered twice."""
        if not self.wake.value:
            edge = self.rising_edge()
            if await First(edge, Timer(timeout_cycles * CLOCK_NS, "ns")) is not edge:
                raise SimTimeout(f"{self.name}: no wakeup within {timeout_cycles} cycles; it is "
                                 f"{self.state.name}")
        vector = int(self.wake_vector.value)
        await self._pulse(self._ack)
        self.wakeups.append((get_sim_time("ns"), vector))
        await ReadOnly()
        if self.wake.value:
            raise AssertionError(f"{self.name}: wake still raised after wake_ack (vector "
                                 f"{int(self.wake_vector.value):#x}): the wakeup would be taken twice")
        await RisingEdge(self.clk)       # back in a writable phase for the caller
        return vector

    async def return_to_firmware(self):
        await self._pulse(self._return)

    async def _pulse(self, handle):
        await self.pulse(handle)
        await RisingEdge(self.clk)       # the effect is visible after the next edge


class MailboxEnv:
    def __init__(self, dut, config):
        self.dut, self.config = dut, config
        self.os = MemoryBusDriver(dut)
        self.aps = [ParkedAp(dut, i, a) for i, a in enumerate(config.apic_ids)]
        self.base = config.base

    @classmethod
    async def start(cls, dut, config):
        env = cls(dut, config)
        await start_clock_and_reset(dut, CLOCK_NS)
        return env

    def status(self):
        return unpack(MailboxStatus, int(self.dut.status.value))

    async def cycles(self, n):
        for _ in range(n):
            await RisingEdge(self.dut.clk)


class MailboxPorts:
    """The mailbox of a system top (``mailbox_bus``, ``mailbox_ap``): the OS's memory port and
    one :class:`ParkedAp` per AP; ``watched``: the top's watched outputs (:class:`ParkedAp`)."""

    def __init__(self, dut, ap_ids, base, *, watched=None):
        self.os = MemoryBusDriver(dut, prefix="mailbox_bus__")
        self.aps = [ParkedAp(dut, k, apic_id, prefix="mailbox_ap__", watched=watched)
                    for k, apic_id in enumerate(ap_ids)]
        self.base = base
