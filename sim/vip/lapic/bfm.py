"""Bus-functional model of one CPU port of the APIC fabric (cocotb side).

:class:`ApicPort` is what a CPU model or a test holds: register reads and writes by name (MMIO
in xAPIC mode, MSRs in x2APIC mode, as the table in :mod:`apwake.rtl.lapic.registers` says), raw MMIO
and MSR accesses, and event waits (INIT, SIPI, NMI, SMI, INTR) that sleep on signal edges, not
on clock cycles.  Every wait has a watchdog that fails with the port, the APIC ID and what was
awaited.  Signal names come from the RTL signature (:mod:`apwake.rtl.lapic.signatures`).

Each call is exactly one transfer from any simulation phase (:class:`apwake.sim.harness.handshake.Driver`), and
every ICR or SELF IPI write is entered in :attr:`ApicPort.sends`, against which the fabric
monitor attributes each bus message (:class:`apwake.sim.vip.lapic.monitor.SendLedger`).
"""

import cocotb
from cocotb.triggers import First, ReadOnly, RisingEdge, Timer

from apwake.rtl.lapic.layouts import (XAPIC_MAX_ID, ApicBase, DeliveryMode, DestMode, Icr, Level, MSR_IA32_APIC_BASE,
                               Shorthand, Trigger)
from apwake.rtl.lapic.registers import Access, BY_NAME
from apwake.rtl.lapic.signatures import Space

from apwake.sim.harness.codec import pack, unpack
from apwake.sim.harness.handshake import Driver, PortLock, SimTimeout
from apwake.sim.harness import watch
from apwake.sim.harness.pins import port
from apwake.sim.harness.signal_io import pin
from .monitor import SendLedger

__all__ = ["ApicPort", "GeneralProtection", "SimTimeout", "make_icr"]


def make_icr(vector=0, mode=DeliveryMode.FIXED, *, dest=0, dest_mode=DestMode.PHYSICAL,
             shorthand=Shorthand.NONE, level=Level.ASSERT, trigger=Trigger.EDGE, x2apic=False):
    """A 64-bit ICR value.  ``dest`` is the 8-bit xAPIC destination (placed in bits 63:56) or,
    with ``x2apic``, the 32-bit x2APIC destination (bits 63:32)."""
    if not x2apic and not 0 <= dest <= 0xFF:
        raise ValueError(f"xAPIC destination must be 0 to 0xFF, not {dest:#x}")
    return pack(Icr, vector=vector, delivery_mode=mode, dest_mode=dest_mode, shorthand=shorthand,
                level=level, trigger=trigger, destination=dest if x2apic else dest << 24)


class _Access:
    """What an access is, for messages (``"CPU port 1 (APIC ID 0x1): write of MMIO 0x300 =
    0x4500"``), formatted only when one needs it: a timeout or a #GP, not the thousands of
    accesses that succeed."""

    __slots__ = ("port", "space", "addr", "write", "wdata")

    def __init__(self, port, space, addr, write, wdata):
        self.port, self.space, self.addr, self.write, self.wdata = port, space, addr, write, wdata

    def __str__(self):
        return (f"{self.port}: {'write' if self.write else 'read'} of {self.space.name} "
                f"{self.addr:#x}" + (f" = {self.wdata:#x}" if self.write else ""))

    def __format__(self, spec):
        return format(str(self), spec)


class GeneralProtection(Exception):
    """The access raised #GP (the APIC's ``gp`` response)."""

    def __init__(self, port, what):
        super().__init__(f"#GP: {what}")
        self.port = port
        self.what = what


class ApicPort(Driver):
    """One CPU's port of ``dut`` (an ``apwake_fabric`` top).

    Parameters
    ----------
    dut : cocotb handle of the top
    index : int
        Port index (not the APIC ID).
    apic_id : int
        The port's APIC ID, for messages.
    clock_ns : float
        Clock period; watchdogs are given in cycles and slept as one timer.
    watched : :class:`apwake.sim.harness.watch.WatchedOutputs` or None
        The top's watched outputs: the edges of INIT, SIPI, NMI, SMI and INTR are taken from
        it (one simulator callback for every port) instead of a callback per signal.

    Attributes
    ----------
    sends : :class:`apwake.sim.vip.lapic.monitor.SendLedger`
        The IPI-sending writes this port made, for the fabric monitor.
    """

    def __init__(self, dut, index, apic_id, *, clock_ns, watched=None):
        super().__init__(dut.clk, f"CPU port {index} (APIC ID {apic_id:#x})", clock_ns=clock_ns)
        self.index = index
        self.apic_id = apic_id
        self.sends = SendLedger(self.name)
        prefix = f"cpu__{index}__"
        self._prefix = prefix
        self._watched = watched
        sig = lambda name: port(dut, prefix + name)
        # the register port as Pins (integer reads and writes: it is used on every access)
        reg = lambda name: pin(sig("reg__" + name))
        self._req_valid, self._req_ready, self._resp_valid = reg("req_valid"), reg("req_ready"), reg("resp_valid")
        self._space, self._addr, self._write, self._wdata = reg("space"), reg("addr"), reg("write"), reg("wdata")
        self._response = {"rdata": reg("rdata"), "gp": reg("gp")}
        self.init = sig("init")
        self.sipi = sig("sipi")
        self.sipi_vector = sig("sipi_vector")
        self.nmi = sig("nmi")
        self.smi = sig("smi")
        self.intr = sig("intr")
        self._acks = {"init": sig("init_ack"), "sipi": sig("sipi_ack"), "nmi": sig("nmi_ack"),
                      "smi": sig("smi_ack")}
        self._inta = sig("inta")
        self._inta_done = sig("inta_done")
        self._inta_vector = sig("inta_vector")
        # LINT0/LINT1 pins: only a bare fabric top exposes them (``lint__<index>``)
        self._lint = port(dut, f"lint__{index}", None)
        self._lock = PortLock()
        #: the APIC's mode as this port last set it; an APIC whose ID is above 0xFE is in x2APIC
        #: mode from reset (rtl/lapic/register_file.py)
        self.x2apic = apic_id > XAPIC_MAX_ID
        #: simulation time (ns) of the clock edge at which the last access took effect
        self.last_access_ns = None
        # Every input this port drives starts at a known value (Icarus leaves undriven ones X,
        # which would reach registers through don't-care paths).
        driven = [self._req_valid, self._space, self._addr, self._write, self._wdata, self._inta,
                  *self._acks.values()]
        if self._lint is not None:
            driven.append(self._lint)
        for handle in driven:
            pin(handle).set(0)

    # --- raw accesses ---------------------------------------------------------------------------
    async def _access(self, space, addr, write, wdata=0, *, timeout_cycles=1000):
        what = _Access(self.name, space, addr, write, wdata)
        async with self._lock:
            self._note_send(space, addr, write, wdata)     # in the order the port drives them
            edge_ns, _, resp = await self.bus_access(
                self._req_valid, self._req_ready, self._resp_valid,
                {self._space: space.value, self._addr: addr, self._write: int(write), self._wdata: wdata},
                self._response, what=what, timeout_cycles=timeout_cycles)
        self.last_access_ns = edge_ns
        if resp["gp"]:
            raise GeneralProtection(self, str(what))
        return resp["rdata"]

    def _note_send(self, space, addr, write, wdata):
        """Enter a write that sends an IPI (ICR low in xAPIC MMIO, the x2APIC ICR or SELF IPI
        MSR) in the ledger before it is driven, so its message can never be seen first.  A write
        the APIC refuses (#GP, reserved mode) sends nothing; the ledger allows that."""
        if not write:
            return
        # by address alone, whatever mode the port believes it is in: a write in the wrong mode
        # is refused and only leaves slack
        if (space is Space.MMIO and addr == BY_NAME["ICR"].offset
                or space is Space.MSR and addr == BY_NAME["ICR"].msr):
            icr = unpack(Icr, wdata)
        elif space is Space.MSR and addr == BY_NAME["SELF_IPI"].msr:
            icr = {"vector": wdata & 0xFF, "delivery_mode": DeliveryMode.FIXED,
                   "shorthand": Shorthand.SELF}
        else:
            return
        self.sends.add(icr["vector"], icr["delivery_mode"], icr["shorthand"])

    async def mmio_read(self, offset):
        return await self._access(Space.MMIO, offset, False)

    async def mmio_write(self, offset, value):
        await self._access(Space.MMIO, offset, True, value)

    async def rdmsr(self, msr):
        return await self._access(Space.MSR, msr, False)

    async def wrmsr(self, msr, value):
        await self._access(Space.MSR, msr, True, value)
        if msr == MSR_IA32_APIC_BASE:
            fields = unpack(ApicBase, value)
            self.x2apic = bool(fields["enable"] and fields["extd"])

    # --- registers by name ------------------------------------------------------------------------
    def _register(self, name):
        try:
            register = BY_NAME[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a local APIC register; "
                             f"known: {', '.join(BY_NAME)}") from None
        access = register.x2apic if self.x2apic else register.xapic
        if access is Access.ABSENT:
            raise ValueError(f"register {name} does not exist in "
                             f"{'x2APIC' if self.x2apic else 'xAPIC'} mode")
        return register

    async def read(self, name):
        r = self._register(name)
        return await (self.rdmsr(r.msr) if self.x2apic else self.mmio_read(r.offset))

    async def write(self, name, value):
        r = self._register(name)
        await (self.wrmsr(r.msr, value) if self.x2apic else self.mmio_write(r.offset, value))

    async def enter_x2apic(self):
        base = await self.rdmsr(MSR_IA32_APIC_BASE)
        await self.wrmsr(MSR_IA32_APIC_BASE, base | pack(ApicBase, extd=1, enable=1))

    async def software_enable(self, spurious_vector=0xFF):
        await self.write("SVR", 0x100 | spurious_vector)

    async def send_ipi(self, icr):
        """Send an IPI with the 64-bit ICR value ``icr`` (destination in bits 63:32 as the
        x2APIC layout has it; in xAPIC mode bits 63:56 go to ICR_HI first)."""
        if self.x2apic:
            await self.wrmsr(BY_NAME["ICR"].msr, icr)
        else:
            await self.mmio_write(BY_NAME["ICR_HI"].offset, (icr >> 32) & 0xFF00_0000)
            await self.mmio_write(BY_NAME["ICR"].offset, icr & 0xFFFF_FFFF)

    async def wait_idle(self, *, timeout_cycles=1000):
        """Poll ICR delivery status until idle, as Linux does in xAPIC mode."""
        for _ in range(timeout_cycles):
            if not (await self.read("ICR")) & (1 << 12):
                return
        raise SimTimeout(f"{self.name}: ICR delivery status still busy after "
                         f"{timeout_cycles} polls")

    def set_lint(self, pin, level):
        """Drive the LINT0 (``pin`` 0) or LINT1 (``pin`` 1) input to ``level`` (0 or 1): a wire
        level, taken by the APIC at the next clock edge.

        Raises
        ------
        ValueError
            ``pin`` or ``level`` out of range, or the design has no LINT pins for this port.
        """
        if pin not in (0, 1):
            raise ValueError(f"{self.name}: LINT pin must be 0 or 1, not {pin!r}")
        if level not in (0, 1, False, True):
            raise ValueError(f"{self.name}: LINT{pin} level must be 0 or 1, not {level!r}")
        if self._lint is None:
            raise ValueError(f"{self.name}: this design has no LINT pins (only the fabric top)")
        value = int(self._lint.value)
        self._lint.value = (value & ~(1 << pin)) | (int(level) << pin)

    # --- events --------------------------------------------------------------------------------
    def rising_edge(self, event):
        """A trigger for the next rising edge of ``event`` (``"init"``, ``"sipi"``, ``"nmi"``,
        ``"smi"`` or ``"intr"``): from the top's watched outputs when it has them, else a
        :class:`~cocotb.triggers.RisingEdge` of the signal.  Await it once."""
        return watch.rising_edge(self._watched, self._prefix + event, getattr(self, event))

    def notify(self, events, event):
        """Set ``event`` (a cocotb :class:`~cocotb.triggers.Event`) at every rising edge of
        each of ``events`` (names as for :meth:`rising_edge`) until the cocotb test ends: one
        wait for a model that then looks at the levels (:func:`apwake.sim.harness.watch.notify_rising_edges`)."""
        watch.notify_rising_edges(self._watched, [(self._prefix + e, getattr(self, e)) for e in events],
                                  event)

    async def _wait_high(self, event, what, timeout_cycles):
        if getattr(self, event).value:
            return
        trigger = self.rising_edge(event)
        winner = await First(trigger, Timer(timeout_cycles * self.clock_ns, "ns"))
        if winner is not trigger:
            raise SimTimeout(f"{self.name}: no {what} within {timeout_cycles} cycles")

    async def wait_init(self, *, timeout_cycles=10_000):
        await self._wait_high("init", "INIT", timeout_cycles)

    async def wait_sipi(self, *, timeout_cycles=10_000):
        """Wait for a pending SIPI; returns its vector."""
        await self._wait_high("sipi", "SIPI", timeout_cycles)
        return int(self.sipi_vector.value)

    async def wait_nmi(self, *, timeout_cycles=10_000):
        await self._wait_high("nmi", "NMI", timeout_cycles)

    async def wait_smi(self, *, timeout_cycles=10_000):
        await self._wait_high("smi", "SMI", timeout_cycles)

    async def wait_intr(self, *, timeout_cycles=10_000):
        await self._wait_high("intr", "INTR", timeout_cycles)

    async def acknowledge(self, event):
        """Pulse ``init_ack``, ``sipi_ack``, ``nmi_ack`` or ``smi_ack`` for one cycle."""
        await self.pulse(self._acks[event])
        # Values read right after a clock edge are still the pre-edge ones: one more edge
        # makes the acknowledge visible to the caller.
        await RisingEdge(self.clk)

    async def inta(self):
        """Interrupt acknowledge: returns ``(vector, edge_ns)``; ``edge_ns`` is the clock edge
        at which the APIC moved the vector from IRR to ISR."""
        async with self._lock:
            await self.pulse(self._inta)      # exactly one INTA edge, even if cancelled
            edge_ns = cocotb.utils.get_sim_time("ns")
            await ReadOnly()
            if not self._inta_done.value:
                raise AssertionError(f"{self.name}: no inta_done after INTA")
            vector = int(self._inta_vector.value)
            await RisingEdge(self.clk)
        return vector, edge_ns
