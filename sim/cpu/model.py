"""Python model of one x86 CPU's bring-up behaviour, attached to its APIC port.

States carry KVM's names (``KVM_MP_STATE_*``, lapic.md §6.4).  Rules (lapic.md §6, §8):

* At reset the BSP runs its reset vector; an AP waits: in wait-for-SIPI (``INIT_RECEIVED``) as on
  hardware, or ``UNINITIALIZED`` as KVM creates it (a bare SIPI is then dropped), chosen by
  ``sipi_before_init``.
* INIT resets the CPU (the APIC has reset itself, keeping ID, mode and BSP flag): whatever it
  ran is abandoned; an AP enters wait-for-SIPI, the BSP restarts at its reset vector.
* The first SIPI after INIT starts the AP in real mode at CS = vector << 8, IP = 0 (physical
  vector << 12); any other SIPI is ignored and counted.
* The CPU runs whatever program is loaded where it jumps (:meth:`sim.memory.Memory.load_program`);
  a jump to an address with no code is a failure naming the CPU and the address.

The model is event-driven: it sleeps on its APIC's INIT/SIPI/INTR edges and on timers, never on
every clock.  Software delays (``udelay``) are real simulated time multiplied by the platform's
``time_scale`` (see :class:`sim.cpu.platform.Platform`).
"""


import cocotb
from cocotb.triggers import Event, First, ReadOnly, RisingEdge, Timer, ValueChange

from rtl.ghcb_msr.layouts import VcpuState
from rtl.mpwk_mailbox.layouts import FIRMWARE_HALF, OFFSETS

__all__ = ["MpState", "CpuModel", "Jump", "RESET_VECTOR", "SEV_ES_RESET"]

#: Physical address of the x86 reset vector (CS base 0xFFFF_0000, IP 0xFFF0).
RESET_VECTOR = 0xFFFF_FFF0
#: OVMF's SEV-ES AP reset block: where a vCPU's launch state starts it (ghcb.md §3)
SEV_ES_RESET = 0x0080_B000
#: real-mode reachable memory, where an MPWK WakeupVector belongs (mpwk.md §7 #10)
LOW_MEMORY = 1 << 20


#: KVM_MP_STATE_* names and numbers, declared once with the GHCB unit that reports them
MpState = VcpuState


class _BackToFirmware(Exception):
    """Raised by :meth:`CpuModel.return_to_firmware`: the program is over, the CPU polls the
    firmware mailbox again."""


class Jump(Exception):
    """Raised by :meth:`CpuModel.jump`: the CPU continues at ``address``."""

    def __init__(self, address):
        super().__init__(f"jump to {address:#x}")
        self.address = address


class CpuModel:
    """One CPU.

    Parameters
    ----------
    platform : sim.cpu.platform.Platform
        Memory, time scale, failure list, the other CPUs.
    port : sim.lapic.bfm.ApicPort
        This CPU's APIC port.
    is_bsp : bool
    sipi_before_init : bool
        Whether an AP accepts a SIPI before any INIT (hardware: yes; KVM: no).
    """

    def __init__(self, platform, port, *, is_bsp, sipi_before_init=True):
        self.platform = platform
        self.apic = port
        self.index = port.index
        self.apic_id = port.apic_id
        self.is_bsp = is_bsp
        self.name = f"CPU {self.index} (APIC ID {self.apic_id:#x})"
        initial = (MpState.RUNNABLE if is_bsp else
                   MpState.INIT_RECEIVED if sipi_before_init else MpState.UNINITIALIZED)
        self.state = initial
        self.history = [(0.0, initial, "reset")]
        self.ignored_sipis = 0
        self.entry = None            # (cs, ip) of the last SIPI start
        self.mailbox = None          # sim.mpwk.bfm.ApPort when parked on an MPWK mailbox
        self.vcpu = None             # sim.ghcb.bfm.VcpuPort in an SEV-ES guest
        self.wakeup_vector = None    # the last mailbox WakeupVector taken
        self.should_die = False      # set by the kernel's cpu_down; the idle loop acts on it
        self.should_stop = False     # set by the kernel's kexec (stop_this_cpu)
        self.where = "reset"         # what the CPU is doing, for stuck reports
        self.interrupts_enabled = False
        self.idt = {}                # vector -> async handler(cpu, vector)
        self.interrupts_taken = []   # (time ns, vector)
        self._program = None
        self._irq_task = None
        self._woken = Event()
        self._changed = Event()      # set on every history entry and failure
        self._started = False
        #: False models a CPU wedged where the OS cannot reach it, as in SMM (lapic.md §8 #6):
        #: its APIC accepts INIT and SIPI, the CPU keeps INIT latched and drops SIPI.
        self.responsive = True

    # --- life cycle ------------------------------------------------------------------------------
    def start(self):
        if self._started:
            return
        self._started = True
        cocotb.start_soon(self._vcpu_events() if self.vcpu is not None else self._events())
        if self.is_bsp:
            self._run_at(RESET_VECTOR, "reset vector")

    def _set_state(self, state, note=""):
        self.state = state
        self.history.append((cocotb.utils.get_sim_time("ns"), state, note))
        self._changed.set()

    def note(self, text):
        """Record a software milestone (``online``, ``alive``) in the timeline."""
        self.history.append((cocotb.utils.get_sim_time("ns"), self.state, text))
        self._changed.set()

    def fail(self, message):
        self.platform.fail(self, message)

    async def wait_until(self, predicate, *, timeout_ns, what):
        """Sleep until ``predicate()`` holds, re-checked whenever this CPU's history changes;
        AssertionError naming the CPU, its state and ``what`` after ``timeout_ns``."""
        deadline = Timer(timeout_ns, "ns")
        while not predicate():
            self._changed.clear()
            if await First(self._changed.wait(), deadline) is deadline:
                raise AssertionError(f"{self.name}: {what} not reached within {timeout_ns} ns; "
                                     f"it is {self.state.name} at {self.where}")

    def park_on_mailbox(self, ap_port):
        """TDX-style start (mpwk.md §3): the AP runs the firmware's mailbox loop instead of
        waiting for SIPI; ``ap_port`` is its :class:`sim.mpwk.bfm.ApPort`."""
        self.mailbox = ap_port
        self.state = MpState.RUNNABLE
        self.history = [(0.0, MpState.RUNNABLE, "parked on the MP wakeup mailbox")]
        self.where = "firmware: mailbox poll loop"

    def attach_vcpu(self, vcpu_port):
        """SEV-ES guest (ghcb.md §4): the hypervisor's GHCB unit takes INIT and SIPI; the CPU
        starts from its launch state at its first SIPI (``launch``) and otherwise only runs on
        after a VMGEXIT.  Its state is the unit's mp_state."""
        self.vcpu = vcpu_port
        if not self.is_bsp:
            self.state = MpState.UNINITIALIZED
            self.history = [(0.0, MpState.UNINITIALIZED, "created (SEV-ES)")]
            self.where = "not started (SEV-ES: waits for INIT-SIPI)"

    async def _vcpu_events(self):
        vcpu = self.vcpu
        while True:
            await First(RisingEdge(vcpu.launch), ValueChange(vcpu.state_handle))
            await ReadOnly()
            launched, state = bool(vcpu.launch.value), vcpu.state
            await RisingEdge(self.apic.clk)          # act outside the read-only phase
            if launched:
                self._set_state(MpState.RUNNABLE, "first SIPI: launch state (vector ignored)")
                self._run_at(SEV_ES_RESET, "SEV-ES launch (reset block)")
            elif state is not self.state and state is not MpState.RUNNABLE:
                # RUNNABLE again is noted by the guest code that resumes
                self._set_state(state, f"hypervisor: {state.name}")

    async def vmgexit(self):
        """VMGEXIT and wait until the hypervisor resumes this vCPU, however long that takes (the
        scenario watchdog bounds it)."""
        await self.vcpu.vmgexit(timeout_cycles=None)
        if self.state is not MpState.RUNNABLE:
            self._set_state(MpState.RUNNABLE, "resumed after VMGEXIT")

    def _on_mailbox_wake(self, vector):
        self._abandon()
        self.interrupts_enabled = False
        self.wakeup_vector = vector
        self.note(f"mailbox Wakeup: 64-bit entry at {vector:#x}")
        self._check_wakeup_vector(vector)
        self.platform.ap_left_firmware(self)
        self._run_at(vector, "mailbox WakeupVector")

    def _check_wakeup_vector(self, vector):
        """ACPI 6.6 wants the vector below 1 MiB or in the mailbox's ReservedForOs; TDVF does not
        check (``jmp rax``), so the model warns and jumps anyway (mpwk.md §7 #10)."""
        base = self.platform.mailbox.base
        if vector >= LOW_MEMORY and not base + OFFSETS["reserved_for_os"] <= vector < base + FIRMWARE_HALF:
            self.note(f"warning: WakeupVector {vector:#x} is above 1 MiB and outside the "
                      f"mailbox's ReservedForOs: jumping anyway, as TDVF does")

    async def _events(self):
        port = self.apic
        while True:
            await ReadOnly()
            if self.mailbox is not None and self.mailbox.wake.value:
                await RisingEdge(port.clk)
                self._on_mailbox_wake(await self.mailbox.wait_wake())
                continue
            if port.init.value:
                await RisingEdge(port.clk)
                await port.acknowledge("init")
                self._on_init()
                continue
            if port.sipi.value:
                vector = int(port.sipi_vector.value)
                await RisingEdge(port.clk)
                await port.acknowledge("sipi")
                self._on_sipi(vector)
                continue
            events = [RisingEdge(port.init), RisingEdge(port.sipi)]
            if self.mailbox is not None:
                events.append(RisingEdge(self.mailbox.wake))
            await First(*events)

    def _on_init(self):
        if not self.responsive:
            self.note("INIT latched, not taken (CPU wedged)")
            return
        self._abandon()
        self.interrupts_enabled = False
        if self.is_bsp:
            self._set_state(MpState.RUNNABLE, "INIT: BSP restarts at the reset vector")
            self._run_at(RESET_VECTOR, "reset vector after INIT")
        else:
            self._set_state(MpState.INIT_RECEIVED, "INIT: wait for SIPI")
            self.where = "wait-for-SIPI"

    def _on_sipi(self, vector):
        if not self.responsive:
            self.note(f"SIPI {vector:#04x} dropped (CPU wedged)")
            return
        if self.state is not MpState.INIT_RECEIVED:
            self.ignored_sipis += 1
            self.note(f"SIPI {vector:#04x} ignored ({self.state.name})")   # counted, then dropped
            return
        address = vector << 12
        self.entry = (vector << 8, 0)
        self._set_state(MpState.RUNNABLE, f"SIPI {vector:#04x}: real mode CS={vector << 8:#06x} IP=0")
        self._run_at(address, f"SIPI vector {vector:#04x}")

    def _abandon(self):
        for task in (self._program, self._irq_task):
            if task is not None and not task.done():
                task.cancel()
        self._program = self._irq_task = None

    def restart_at(self, address, why):
        """Abandon what the CPU runs and continue at ``address`` (kexec's jump to the next
        kernel)."""
        self._abandon()
        self.interrupts_enabled = False
        self.note(why)
        self._run_at(address, why)

    def _run_at(self, address, why):
        if not self.responsive:
            self.where = "wedged (as in SMM)"
            return
        self._program = cocotb.start_soon(self._execute(address, why))

    async def _execute(self, address, why):
        while True:
            loaded = self.platform.memory.program_at(address)
            if loaded is None:
                self.where = f"{address:#x} (no code)"
                self.fail(f"{self.name} started at {address:#x} where no code is loaded ({why})")
                return
            program, name, _owner = loaded
            self.where = name
            try:
                await program(self)
            except Jump as jump:
                address, why = jump.address, f"jump from {name}"
                continue
            except _BackToFirmware:
                return
            # A program that returns stops the CPU for good (cli; hlt).
            self.interrupts_enabled = False
            self._set_state(MpState.HALTED, f"{name} returned: cli; hlt")
            return

    # --- what programs can do ----------------------------------------------------------------------
    def jump(self, address):
        """Continue at ``address`` (``raise cpu.jump(addr)`` or ``await``-free call)."""
        raise Jump(address)

    async def return_to_firmware(self):
        """play_dead on an MPWK v1 platform: cli, jump to ResetVector; the firmware loop (the
        mailbox hardware) takes the CPU back.  Ends the running program."""
        if self.mailbox is None:
            raise RuntimeError(f"{self.name} is not parked on a mailbox: no ResetVector to jump to")
        self.cli()
        await self.mailbox.return_to_firmware()
        self.where = "firmware: mailbox poll loop"
        self._set_state(MpState.RUNNABLE, "jumped to ResetVector: back in the firmware mailbox loop")
        raise _BackToFirmware()

    async def udelay(self, us):
        """Busy-wait ``us`` microseconds of guest time (scaled by the platform's time_scale)."""
        ns = self.platform.scaled_ns(us * 1000)
        if ns > 0:
            await Timer(ns, "ns")

    def sti(self):
        self.interrupts_enabled = True
        if self.vcpu is not None:
            self.vcpu.allow_interrupts(True)
        if self._irq_task is None or self._irq_task.done():
            self._irq_task = cocotb.start_soon(self._interrupts())

    def cli(self):
        self.interrupts_enabled = False
        if self.vcpu is not None:
            self.vcpu.allow_interrupts(False)
        if self._irq_task is not None and not self._irq_task.done():
            self._irq_task.cancel()
        self._irq_task = None

    async def hlt(self, *, timeout_us=None):
        """Halt until an interrupt has been handled (needs interrupts enabled to ever wake).
        Returns False if ``timeout_us`` (guest time) passed first."""
        self._set_state(MpState.HALTED, "hlt")
        self._woken.clear()
        if timeout_us is None:
            await self._woken.wait()
            woke = True
        else:
            deadline = Timer(self.platform.scaled_ns(timeout_us * 1000), "ns")
            woke = await First(self._woken.wait(), deadline) is not deadline
        self._set_state(MpState.RUNNABLE, "woken by interrupt" if woke else "hlt timeout")
        return woke

    async def idle(self):
        """The idle loop: sti; hlt forever, handling interrupts."""
        self.sti()
        self.where = "idle (hlt loop)"
        while True:
            await self.hlt()

    async def _interrupts(self):
        port = self.apic
        while self.interrupts_enabled:
            await ReadOnly()
            if not port.intr.value:
                await RisingEdge(port.intr)
                continue
            await RisingEdge(port.clk)
            vector, _ = await port.inta()
            self.interrupts_taken.append((cocotb.utils.get_sim_time("ns"), vector))
            handler = self.idt.get(vector)
            if handler is None:
                self.fail(f"{self.name}: interrupt vector {vector:#x} has no handler")
                await port.write("EOI", 0)
            else:
                await handler(self, vector)
            self._woken.set()
