"""Bus-functional models around the GHCB MSR unit: a vCPU's MSR/VMGEXIT port, the guest memory
the unit reads and writes, and (block tests only) an APIC's INIT/SIPI/interrupt lines.

All are :class:`apwake.sim.harness.handshake.Driver`: one transfer per call from any phase, and a pause
generator (:class:`GuestMemoryResponder`: ``req_ready`` low and late responses, so the unit's
wait-for-memory states run).
"""

from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer

from apwake.rtl.ghcb_msr.layouts import VcpuState

from apwake.sim.harness.handshake import Driver, SimTimeout, watchdog_cycles
from apwake.sim.harness.pins import port
from apwake.sim.vip.memory import Owner

__all__ = ["VcpuPort", "GuestMemoryResponder", "ApicEvents"]


class VcpuPort(Driver):
    """One vCPU's GHCB MSR and VMGEXIT (``vcpu__{i}__*`` on the unit, the same on the SEV system)."""

    def __init__(self, dut, index, prefix="vcpu__"):
        super().__init__(dut.clk, f"vCPU {index}")
        sig = lambda name: port(dut, f"{prefix}{index}__{name}")
        self.index = index
        self._write, self._wdata, self._rdata = sig("msr_write"), sig("msr_wdata"), sig("msr_rdata")
        self._vmgexit, self.exit_done, self.launch = sig("vmgexit"), sig("exit_done"), sig("launch")
        self._state = self.state_handle = sig("state")
        self._irq_allowed = sig("irq_allowed")
        for handle in (self._write, self._wdata, self._vmgexit, self._irq_allowed):
            handle.value = 0

    def allow_interrupts(self, allowed=True):
        """The guest's interrupt flag as the hypervisor sees it (sti / cli)."""
        self._irq_allowed.value = int(allowed)

    @property
    def state(self):
        return VcpuState(int(self._state.value))

    def rdmsr(self):
        return int(self._rdata.value)

    async def wrmsr(self, value):
        await self.pulse(self._write, {self._wdata: value})

    async def vmgexit(self, *, timeout_cycles=200):
        """Strobe VMGEXIT and wait for the hypervisor to resume the vCPU.  Returns True when it
        did, False after ``timeout_cycles`` (the vCPU is held or stopped); ``None`` waits for
        ever (a held vCPU under a scenario watchdog)."""
        await self.pulse(self._vmgexit)
        return await self.wait_exit_done(timeout_cycles=timeout_cycles)

    async def wait_exit_done(self, *, timeout_cycles):
        """True at the next ``exit_done`` pulse, False after ``timeout_cycles`` (None: for ever)."""
        return await self._wait_pulse(self.exit_done, timeout_cycles)

    async def wait_launch(self, *, timeout_cycles):
        """True at the next ``launch`` pulse (the first SIPI), False after ``timeout_cycles``."""
        return await self._wait_pulse(self.launch, timeout_cycles)

    async def _wait_pulse(self, handle, timeout_cycles):
        edge = RisingEdge(handle)
        timeout_cycles = watchdog_cycles(timeout_cycles)
        if timeout_cycles is None:
            await edge
            return True
        return await First(edge, Timer(timeout_cycles * self.clock_ns, "ns")) is edge

    async def msr_protocol(self, request, *, timeout_cycles=200):
        """WRMSR, VMGEXIT, RDMSR: the reply, or SimTimeout if the vCPU is not resumed within
        ``timeout_cycles`` (None: wait as long as it takes)."""
        await self.wrmsr(request)
        if not await self.vmgexit(timeout_cycles=timeout_cycles):
            raise SimTimeout(f"{self.name}: MSR request {request:#x} not answered within "
                             f"{timeout_cycles} cycles; it is {self.state.name}")
        return self.rdmsr()


class GuestMemoryResponder(Driver):
    """Serves the unit's memory initiator (``memory__*`` / ``ghcb_memory__*``) from a
    :class:`apwake.sim.vip.memory.Memory`; every write is the hypervisor's (``Owner.HYPERVISOR``), so a write
    into a page a kernel owns is recorded as a corruption.  Event-driven: sleeps while idle.

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


class ApicEvents(Driver):
    """Drives one vCPU's APIC lines into the bare unit (block tests): INIT and SIPI as pending
    levels held until acknowledged, ``intr``/``nmi`` as levels (a level set twice is still one
    event, so :meth:`interrupt` and :meth:`nmi` write at once, from any phase but ReadOnly)."""

    def __init__(self, dut, index, prefix="apic__"):
        super().__init__(dut.clk, f"APIC lines of vCPU {index}")
        sig = lambda name: port(dut, f"{prefix}{index}__{name}")
        self.index = index
        self._init, self._init_ack = sig("init"), sig("init_ack")
        self._sipi, self._sipi_vector, self._sipi_ack = sig("sipi"), sig("sipi_vector"), sig("sipi_ack")
        self._nmi, self._intr = sig("nmi"), sig("intr")
        for handle in (self._init, self._sipi, self._sipi_vector, self._nmi, self._intr):
            handle.value = 0

    async def _deliver(self, level, ack, what, timeout_cycles, data=None):
        await self.hold_until(level, ack, data, what=f"{self.name}: {what}",
                              timeout_cycles=watchdog_cycles(timeout_cycles))
        await RisingEdge(self.clk)       # its effect is visible after the next edge

    async def init(self, *, timeout_cycles=100):
        await self._deliver(self._init, self._init_ack, "INIT", timeout_cycles)

    async def sipi(self, vector=0x9A, *, timeout_cycles=100):
        await self._deliver(self._sipi, self._sipi_ack, f"SIPI {vector:#x}", timeout_cycles,
                            {self._sipi_vector: vector})

    def interrupt(self, pending=True):
        self._intr.value = int(pending)

    def nmi(self, pending=True):
        self._nmi.value = int(pending)
