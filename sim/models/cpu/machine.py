"""The simulated machine: the APIC fabric, guest memory, one CPU model per port, the time scale.

**Time scale.**  Guest software delays (Linux's 10 ms after INIT, 300/200 us around SIPIs,
the 10 s wait for an AP to check in) are simulated as real time multiplied by ``time_scale``
(default :data:`DEFAULT_TIME_SCALE` = 1/1000), so a 255-CPU legacy boot is 2.8 ms of simulated
time instead of 2.8 s, and Linux's 10 s wait for a dead AP is 10 ms (1 M cycles at 100 MHz).
Hardware latencies (the fabric, register accesses) are never scaled.  Reports carry the factor.
"""

import contextlib

import cocotb

from apwake.rtl.mpwk_mailbox.layouts import ApState

from apwake.sim.vip.ghcb_msr.bfm import VcpuPort
from apwake.sim.vip.memory_bus import GuestMemoryResponder
from apwake.sim.vip.start_context.bfm import LaunchSink, StartCallPort

from apwake.sim.models.madt import processor_entries
from apwake.sim.vip.memory import Memory
from .model import CpuModel
from .parking import RamMailbox
from .state import ArchState

__all__ = ["Machine", "DEFAULT_TIME_SCALE"]

DEFAULT_TIME_SCALE = 0.001


class Machine:
    """The simulated machine.

    Attributes
    ----------
    handoff : list
        ``async def step(bsp)`` callables the firmware runs on the BSP, in order, just before it
        jumps to the kernel (:func:`apwake.sim.models.cpu.smm.setup_smm` raises its SMIs there).
    smm : apwake.sim.models.cpu.smm.SmmHandler or None
        The SMI handler, when a scenario set one up.
    madt : bytes
        The MADT interrupt controller structures the firmware publishes: one processor entry
        per CPU in port order (:func:`apwake.sim.models.madt.processor_entries`), then any a
        machine adds (the MP wakeup mailbox's).
    """

    def __init__(self, env, *, time_scale=DEFAULT_TIME_SCALE, sipi_before_init=True):
        if not 0 < time_scale <= 1:
            raise ValueError(f"time_scale must be in (0, 1], not {time_scale!r}")
        self.env = env
        self.time_scale = time_scale
        self.sipi_before_init = sipi_before_init
        self.memory = Memory()
        self.failures = []
        self.firmware = None
        self.handoff = []
        self.smm = None
        self._change_watchers = []   # Events set on every CPU state change, note and failure
        bsp = env.config.bsp_index
        self.cpus = [CpuModel(self, port, is_bsp=port.index == bsp, sipi_before_init=sipi_before_init)
                     for port in env.ports]
        self.madt = processor_entries([c.apic_id for c in self.cpus])
        self.mailbox = None          # MailboxPorts when the APs are parked on an MPWK mailbox
        #: the TDX side of a host platform (apwake.sim.models.cpu.vmx.SeamPlatform): SEAMCALL's target
        self.seam = None
        self.parking_loops = []      # apwake.sim.models.cpu.parking.ParkingLoop installed by kernels
        self.time_skipper = None     # apwake.sim.harness.timeskip.TimeSkipper, when a run skips

    def park_aps(self, mailbox):
        """Park every AP on the mailbox (``mailbox.aps`` in port order without the BSP)."""
        self.mailbox = mailbox
        aps = [c for c in self.cpus if not c.is_bsp]
        for cpu, ap_port in zip(aps, mailbox.aps):
            if ap_port.apic_id != cpu.apic_id:
                raise ValueError(f"mailbox AP port {ap_port.index} has APIC ID {ap_port.apic_id:#x}, "
                                 f"CPU {cpu.index} has {cpu.apic_id:#x}")
            cpu.park_on_mailbox(ap_port)

    def attach_sev(self, dut, config=None):
        """An SEV-ES or SEV-SNP guest (``rtl/system/sev.py``): each CPU on its vCPU port, the
        unit's memory port served from this machine's memory.  ``config``: the system's
        :class:`~apwake.sim.vip.ghcb_msr.design.SevSystemConfig` (``self.sev_config``: whether
        the VM is SNP, its SEV features)."""
        self.sev_config = config
        self.guest_memory = GuestMemoryResponder(dut, self.memory, prefix="ghcb_memory__")
        cocotb.start_soon(self.guest_memory.run())
        for cpu in self.cpus:
            cpu.attach_vcpu(VcpuPort(dut, cpu.index, watched=self.env.watched))

    def attach_start_unit(self, dut):
        """A paravirtualised guest (``rtl/system/pvstart.py``): the start-context unit takes
        every SIPI and its launch records start the CPUs; its memory port is served from this
        machine's memory; ``self.start_call`` is the guest's hypercall port.

        Raises
        ------
        RuntimeError
            A CPU has started: its event loop already waits on the SIPIs it would now leave to
            the unit."""
        started = [cpu.name for cpu in self.cpus if cpu.events_started]
        if started:
            raise RuntimeError(f"the start-context unit is attached after {', '.join(started)} "
                               f"started; attach it first")
        self.start_memory = GuestMemoryResponder(dut, self.memory, prefix="start_memory__")
        cocotb.start_soon(self.start_memory.run())
        self.start_call = StartCallPort(dut, prefix="start_call__")
        self.launches = LaunchSink(dut, prefix="launch__")
        self.launches.on_record = self._launch
        self.launches.start()
        for cpu in self.cpus:
            cpu.sipi_by_hypervisor = True

    def _launch(self, record):
        """One launch record taken from the unit: to the CPU it names."""
        cpu = self.cpus[record["vcpu"]]
        kind = record["kind"].name
        state = ArchState.from_context(record["state"]) if kind == "CONTEXT" else None
        how = "SetInitialAPState context at SIPI" if record["via_sipi"] else "direct start (hypercall)"
        cpu.launch(kind, vector=record["vector"], state=state, how=how)

    def mailbox_port(self, address, apic_id, *, writer):
        """What a kernel's mailbox request for ``apic_id`` at ``address`` reaches: a parking
        loop's RAM mailbox there that holds the ID, else the firmware's mailbox peripheral at
        that address, else RAM (a loop with nobody in it, or no mailbox at all: the request is
        never acknowledged, as on real hardware)."""
        loops = [loop for loop in self.parking_loops if loop.mailbox_address == address]
        hardware = self.mailbox is not None and address == self.mailbox.base
        if hardware and not any(loop.holds(apic_id) for loop in loops):
            return self.mailbox.os
        return RamMailbox(self.memory, writer)

    def ap_left_firmware(self, cpu):
        """Called when an AP takes a firmware mailbox Wakeup; once no AP is left in the
        firmware's loop the firmware may reuse its mailbox page."""
        if self.firmware is not None and all(p.state is ApState.OS_RUNNING for p in self.mailbox.aps):
            self.firmware.last_ap_woken(self.mailbox.base)

    @property
    def bsp(self):
        return self.cpus[self.env.config.bsp_index]

    def scaled_ns(self, guest_ns):
        return guest_ns * self.time_scale

    def fail(self, cpu, message):
        self.failures.append({"cpu": cpu.apic_id, "port": cpu.index, "state": cpu.status,
                              "where": cpu.where, "message": message})
        self.state_changed(cpu)

    def state_changed(self, cpu):
        """Called by ``cpu`` on each history entry, and on each failure: wakes every
        :meth:`watch_changes` watcher, so a wait on one CPU's progress wakes whoever waits."""
        for event in self._change_watchers:
            event.set()

    @contextlib.contextmanager
    def watch_changes(self, event):
        """Within the ``with`` block, set ``event`` on every CPU's state change, note and
        failure."""
        self._change_watchers.append(event)
        try:
            yield event
        finally:
            self._change_watchers.remove(event)

    def start(self):
        for cpu in self.cpus:
            cpu.start()
