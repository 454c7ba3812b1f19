"""Bus-functional models around the GHCB MSR unit: a vCPU's MSR/VMGEXIT port and (block tests
only) an APIC's INIT/SIPI/interrupt lines.  The guest memory the unit reads and writes is served
by :class:`apwake.sim.vip.memory_bus.GuestMemoryResponder`, shared by every block with a memory
initiator (re-exported here for the CPU models' ``Machine``, which imports it from this module).

All are :class:`apwake.sim.harness.handshake.Driver`: one transfer per call from any phase, and a
pause generator.
"""

from cocotb.triggers import First, ReadOnly, RisingEdge, Timer

from apwake.rtl.ghcb_msr.layouts import VcpuState

from apwake.sim.harness.handshake import Driver, SimTimeout, watchdog_cycles
from apwake.sim.harness import watch
from apwake.sim.harness.pins import port

__all__ = ["VcpuPort", "ApicEvents"]


class VcpuPort(Driver):
    """One vCPU's GHCB MSR and VMGEXIT (``vcpu__{i}__*`` on the unit, the same on the SEV system),
    and the hypervisor's starts of it: ``launch`` (its launch VMSA, at the first SIPI) and
    ``vmsa_launch`` with ``vmsa_gpa`` (a VMSA the guest handed over with SNP AP Creation).
    ``watched``: the top's watched outputs (:class:`apwake.sim.harness.watch.WatchedOutputs`),
    or None to wait on each signal."""

    def __init__(self, dut, index, prefix="vcpu__", *, watched=None):
        super().__init__(dut.clk, f"vCPU {index}")
        sig = lambda name: port(dut, f"{prefix}{index}__{name}")
        self.index = index
        self._prefix, self._watched = f"{prefix}{index}__", watched
        self._write, self._wdata, self._rdata = sig("msr_write"), sig("msr_wdata"), sig("msr_rdata")
        self._vmgexit, self.exit_done, self.launch = sig("vmgexit"), sig("exit_done"), sig("launch")
        self.vmsa_launch, self._vmsa_gpa = sig("vmsa_launch"), sig("vmsa_gpa")
        self._state = sig("state")
        self._irq_allowed = sig("irq_allowed")
        for handle in (self._write, self._wdata, self._vmgexit, self._irq_allowed):
            handle.value = 0

    def rising_edge(self, name):
        """A trigger for the next rising edge of output ``name`` (``"launch"``, ``"vmsa_launch"``,
        ``"exit_done"``): from the top's watched outputs (``watched``, a
        :class:`apwake.sim.harness.watch.WatchedOutputs`) when they hold it, else a
        :class:`~cocotb.triggers.RisingEdge` of the signal.  Await it once."""
        return watch.rising_edge(self._watched, self._prefix + name, getattr(self, name))

    def state_change(self):
        """A trigger for the next change of ``state`` (as :meth:`rising_edge` finds it)."""
        return watch.value_change(self._watched, self._prefix + "state", self._state)

    def allow_interrupts(self, allowed=True):
        """The guest's interrupt flag as the hypervisor sees it (sti / cli)."""
        self._irq_allowed.value = int(allowed)

    @property
    def state(self):
        return VcpuState(int(self._state.value))

    def rdmsr(self):
        return int(self._rdata.value)

    @property
    def vmsa_gpa(self):
        """The VMSA GPA the unit shows (valid in the cycle of ``vmsa_launch``)."""
        return int(self._vmsa_gpa.value)

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
        return await self._wait_pulse("exit_done", timeout_cycles)

    async def wait_launch(self, *, timeout_cycles):
        """True at the next ``launch`` pulse (the first SIPI), False after ``timeout_cycles``."""
        return await self._wait_pulse("launch", timeout_cycles)

    async def wait_vmsa_launch(self, *, timeout_cycles):
        """The VMSA GPA at the next ``vmsa_launch`` pulse (SNP AP Creation), or None after
        ``timeout_cycles``."""
        if not await self._wait_pulse("vmsa_launch", timeout_cycles):
            return None
        await ReadOnly()
        return self.vmsa_gpa

    async def _wait_pulse(self, name, timeout_cycles):
        edge = self.rising_edge(name)
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
