"""Python model of one x86 CPU's bring-up behaviour, attached to its APIC port.

States carry KVM's names (``KVM_MP_STATE_*``, docs/spec/lapic.md §6.4).  Rules (docs/spec/lapic.md §6, §8):

* At reset the BSP runs its reset vector; an AP waits: in wait-for-SIPI (``INIT_RECEIVED``) as on
  hardware, or ``UNINITIALIZED`` as KVM creates it (a bare SIPI is then dropped), chosen by
  ``sipi_before_init``.
* INIT resets the CPU (the APIC has reset itself, keeping ID, mode and BSP flag): whatever it
  ran is abandoned; an AP enters wait-for-SIPI, the BSP restarts at its reset vector.
* The first SIPI after INIT starts the AP in real mode at CS = vector << 8, IP = 0 (physical
  vector << 12); any other SIPI is ignored and counted.
* The CPU runs whatever program is loaded where it jumps (:meth:`apwake.sim.vip.memory.Memory.load_program`);
  a jump to an address with no code is a failure naming the CPU and the address.

NMI (SDM vol. 3, "Handling Multiple NMIs"; KVM arch/x86/kvm/x86.c ``process_nmi``):

* The CPU acknowledges each NMI its APIC presents and runs the handler in ``cpu.idt[2]``; from
  then until the handler's IRET further NMIs are blocked.  One blocked NMI is latched and runs
  right after the IRET; any more collapse into it (counted in ``nmis_collapsed``).  KVM keeps
  the same "one running, one pending" limit.

SMM (SDM vol. 3, "System Management Mode": "SMI Handling While in SMM", "NMI Handling While in
SMM", "Auto HALT Restart"; KVM arch/x86/kvm/smm.c and lapic.c ``kvm_apic_accept_events``):

* An SMI saves the CPU's state and runs the SMM handler program loaded at
  :data:`SMM_ENTRY` (SMBASE + 0x8000); the handler returning is RSM, which restores the state
  (a CPU that was halted halts again: auto HALT restart).  The timeline shows the SMM interval.
* In SMM, INIT is latched: left pending in the APIC, not acknowledged, and taken at RSM (KVM:
  "INITs are latched while in SMM").  A SIPI is discarded and counted in ``ignored_sipis``, as
  any SIPI to a CPU not in wait-for-SIPI.  NMIs are latched (one) and a second SMI is latched
  (one) until RSM; interrupts (INTR) wait for RSM too.
* In wait-for-SIPI (``INIT_RECEIVED``, ``UNINITIALIZED``) NMI and SMI stay pending in the APIC
  until a SIPI starts the CPU: the CPU runs no code there (KVM runs no vCPU in INIT_RECEIVED;
  Bochs masks NMI and SMI while waiting for SIPI).
* INIT clears the CPU's NMI and SMI latches and NMI blocking (KVM ``kvm_vcpu_reset``).

Limits: the CPU's program keeps running as a coroutine while an NMI or SMI handler runs, so a
program that is executing (not halted) is not paused by SMM; the scenarios deliver SMIs to
halted CPUs, where this makes no difference.

The model is event-driven: it sleeps on its APIC's INIT/SIPI/NMI/SMI/INTR edges and on timers,
never on every clock.  Software delays (``udelay``) are real simulated time multiplied by the
machine's ``time_scale`` (see :class:`apwake.sim.models.cpu.machine.Machine`).
"""

import contextlib
import dataclasses

import cocotb
from cocotb.triggers import Event, First, ReadOnly, RisingEdge, Timer

from apwake.sim.harness.deadline import Deadline

from apwake.rtl.ghcb_msr.layouts import VcpuState
from apwake.rtl.mpwk_mailbox.layouts import FIRMWARE_HALF, OFFSETS
from .state import ArchState, long_mode_flat
from .vmsa import VMSA_SIZE, decode_vmsa
from .vmx import Vmx

__all__ = ["MpState", "CpuModel", "Jump", "RESET_VECTOR", "SEV_ES_RESET", "NMI_VECTOR", "SMBASE",
           "SMM_ENTRY", "SMM", "FIRMWARE_PAGE_TABLES", "RESET_VECTOR_ENTRY"]

#: Physical address of the x86 reset vector (CS base 0xFFFF_0000, IP 0xFFF0).
RESET_VECTOR = 0xFFFF_FFF0
#: OVMF's SEV-ES AP reset block: where a vCPU's launch state starts it (docs/spec/ghcb.md §3)
SEV_ES_RESET = 0x0080_B000
#: real-mode reachable memory, where an MPWK WakeupVector belongs (docs/spec/mpwk.md §7 #10)
LOW_MEMORY = 1 << 20
#: the NMI's IDT vector
NMI_VECTOR = 2
#: default SMBASE after reset (SDM vol. 3, "SMRAM"): the state save map is at SMBASE + 0xFE00
SMBASE = 0x3_0000
#: where an SMI starts the SMM handler: SMBASE + 0x8000
SMM_ENTRY = SMBASE + 0x8000
#: the label a CPU in SMM carries in reports and timelines instead of its mp_state (KVM keeps
#: SMM as a flag beside the mp_state, HF_SMM_MASK)
SMM = "SMM"
#: the firmware's identity-mapping page tables: CR3 of a CPU the firmware hands over in long
#: mode (the BSP at hand-over, an AP the MP wakeup mailbox releases)
FIRMWARE_PAGE_TABLES = 0x0080_0000
#: the environment the OS must give an AP it sends back through the mailbox's ResetVector (ACPI
#: 6.6 §5.2.12.19: that of the WakeupVector: interrupts off, long mode, paging on with the page
#: identity-mapped, flat selectors; docs/spec/mpwk.md §7 #14)
RESET_VECTOR_ENTRY = long_mode_flat("the mailbox ResetVector")
#: mp_states of a CPU in wait-for-SIPI: it runs no code and takes no NMI or SMI
_WAIT_FOR_SIPI = ("INIT_RECEIVED", "UNINITIALIZED")


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
    machine : apwake.sim.models.cpu.machine.Machine
        Memory, time scale, failure list, the other CPUs.
    port : apwake.sim.vip.lapic.bfm.ApicPort
        This CPU's APIC port.
    is_bsp : bool
    sipi_before_init : bool
        Whether an AP accepts a SIPI before any INIT (hardware: yes; KVM: no).
    """

    def __init__(self, machine, port, *, is_bsp, sipi_before_init=True):
        self.machine = machine
        self.apic = port
        self.index = port.index
        self.apic_id = port.apic_id
        self.is_bsp = is_bsp
        self.name = f"CPU {self.index} (APIC ID {self.apic_id:#x})"
        initial = (MpState.RUNNABLE if is_bsp else
                   MpState.INIT_RECEIVED if sipi_before_init else MpState.UNINITIALIZED)
        self.state = initial
        #: (time ns, state label, note): the label is the mp_state's name, or ``SMM``
        self.history = [(0.0, initial.name, "reset")]
        self.ignored_sipis = 0
        self.entry = None            # (cs, ip) of the last SIPI start
        #: the architectural state (:class:`apwake.sim.models.cpu.state.ArchState`): power-up
        self.arch = ArchState.reset()
        #: how the CPU last started and in what state: ``{"by", "time_ns", "state"}``, or None
        self.started = None
        self.mailbox = None          # apwake.sim.vip.mpwk_mailbox.bfm.ParkedAp when parked on an MPWK mailbox
        self.vcpu = None             # apwake.sim.vip.ghcb_msr.bfm.VcpuPort in an SEV-ES guest
        #: the hypervisor's start-context unit takes this CPU's SIPIs (rtl/system/pvstart.py): the
        #: CPU starts from its launch records (:meth:`launch`) instead
        self.sipi_by_hypervisor = False
        self._refusal_reported = False   # a refused real-mode start is reported once per INIT
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
        self._started = False
        self._start_at = None        # (address, why): a program the CPU runs from reset
        # NMI: blocked from delivery until the handler's IRET; one more latched
        self.nmis_taken = 0
        self.nmis_collapsed = 0
        self.nmi_blocked = False
        self.nmi_latched = False
        self._nmi_task = None
        # SMM: the state saved at SMI, one more SMI latched
        self.in_smm = False
        self.smm_entries = 0
        self.smis_collapsed = 0
        self.smi_latched = False
        self.init_latched = False    # an INIT is waiting in the APIC for RSM
        self._smm_saved = None
        self._smm_task = None
        self._rsm = Event()          # set at RSM: interrupts held back in SMM go on
        self._iret = Event()         # set at the NMI handler's IRET
        self._recheck = Event()      # set when a latched or held event may now be taken
        #: VMX operation (:mod:`.vmx`): in VMX root an INIT stays pending until VMXOFF
        self.vmx = Vmx(self)
        # interrupt delivery: a handler running (IF = 0 through its interrupt gate), and
        # interrupts held off by an instruction that runs with IF = 0 (SEAMCALL)
        self._in_handler = False
        self._handler_done = Event()
        self._irq_held = None        # what holds interrupts off, or None
        self._irq_release = Event()

    # --- life cycle ------------------------------------------------------------------------------
    @property
    def events_started(self):
        """Whether :meth:`start` has run (its event loop waits on the port's events)."""
        return self._started

    def start(self):
        if self._started:
            return
        self._started = True
        cocotb.start_soon(self._vcpu_events() if self.vcpu is not None else self._events())
        if self.is_bsp:
            self._started_by("reset")
            self._run_at(RESET_VECTOR, "reset vector")
        elif self._start_at is not None:
            self._started_by(self._start_at[1])
            self._run_at(*self._start_at)

    @property
    def status(self):
        """The state reports show: ``SMM`` while in SMM, else the mp_state's name."""
        return SMM if self.in_smm else self.state.name

    @property
    def position(self):
        """``"<status> at <where>"``: the state and place every stuck report names."""
        return f"{self.status} at {self.where}"

    def _record(self, note):
        self.history.append((cocotb.utils.get_sim_time("ns"), self.status, note))
        self.machine.state_changed(self)

    def _set_state(self, state, note=""):
        self.state = state
        self._record(note)

    def _started_by(self, how):
        """Record that the CPU starts now, by ``how``, in its current :attr:`arch` state."""
        self.started = {"by": how, "time_ns": cocotb.utils.get_sim_time("ns"),
                        "state": self.arch.as_dict()}

    def note(self, text):
        """Record a software milestone (``online``, ``alive``) in the timeline."""
        self._record(text)

    def fail(self, message):
        self.machine.fail(self, message)

    async def wait_until(self, predicate, *, timeout_ns, what, memory=()):
        """Sleep until ``predicate()`` holds.

        The predicate is re-checked whenever any CPU of the machine changes state, notes a
        milestone or reports a failure (:meth:`apwake.sim.models.cpu.machine.Machine.watch_changes`), and
        whenever a write touches one of the ``memory`` ranges (``[(address, size), ...]``,
        :meth:`apwake.sim.vip.memory.Memory.watch`).  A predicate on anything else is re-checked only at
        those moments: give its memory, or make the code that changes it note the change.

        Raises
        ------
        ValueError
            ``timeout_ns`` is not positive: every wait has a watchdog.
        AssertionError
            ``predicate()`` still false after ``timeout_ns``, or true by then but never seen at
            a wake-up (it depends on something the wait does not watch, which would otherwise
            pass silently late): names this CPU, its state, where it is, ``what`` was awaited
            and what the wait wakes on.
        """
        if not callable(predicate):
            raise TypeError(f"wait_until needs a callable predicate, not {predicate!r}")
        if timeout_ns is None or not timeout_ns > 0:
            raise ValueError(f"{self.name}: wait_until({what!r}) needs a positive timeout_ns, "
                             f"not {timeout_ns!r}: every wait has a watchdog")
        woken = Event()
        with contextlib.ExitStack() as watches:
            watches.enter_context(self.machine.watch_changes(woken))
            for address, size in memory:
                watches.enter_context(self.machine.memory.watch(address, size, woken))
            deadline = Deadline(timeout_ns)
            while not predicate():
                woken.clear()
                if not await deadline.wait(woken.wait()):
                    ranges = "".join(f", writes to {a:#x}+{n}" for a, n in memory)
                    wakes = f"the wait re-checks on any CPU's state change, note or failure{ranges}"
                    if predicate():
                        raise AssertionError(
                            f"{self.name}: {what} became true without waking the wait, seen "
                            f"only at its {timeout_ns} ns watchdog: {wakes}; pass the memory "
                            f"it depends on or note the change")
                    raise AssertionError(f"{self.name}: {what} not reached within {timeout_ns} "
                                         f"ns; it is {self.position} ({wakes})")

    def park_on_mailbox(self, ap_port):
        """TDX-style start (docs/spec/mpwk.md §3): the AP runs the firmware's mailbox loop instead of
        waiting for SIPI; ``ap_port`` is its :class:`apwake.sim.vip.mpwk_mailbox.bfm.ParkedAp`.

        Raises
        ------
        RuntimeError
            The CPU has started (its event loop waits on the mailbox from the start)."""
        if self._started:
            raise RuntimeError(f"{self.name}: parked on the mailbox after it started; park first")
        self.mailbox = ap_port
        self.state = MpState.RUNNABLE
        self.history = [(0.0, MpState.RUNNABLE.name, "parked on the MP wakeup mailbox")]
        self.where = "firmware: mailbox poll loop"

    def start_parked(self, address, why):
        """Start this AP from reset in the program at ``address`` instead of wait-for-SIPI: an
        AP the firmware has already woken and left in a loop of its own (edk2's MpInitLib keeps
        its APs in a hlt loop until the OS sends INIT-SIPI-SIPI), so it takes NMIs and SMIs."""
        if self.is_bsp:
            raise ValueError(f"{self.name} is the BSP: it starts at the reset vector")
        self.state = MpState.RUNNABLE
        self.history = [(0.0, MpState.RUNNABLE.name, why)]
        self.where = why
        self._start_at = (address, why)

    def attach_vcpu(self, vcpu_port):
        """SEV-ES guest (docs/spec/ghcb.md §4): the hypervisor's GHCB unit takes INIT and SIPI; the CPU
        starts from its launch state at its first SIPI (``launch``) and otherwise only runs on
        after a VMGEXIT.  Its state is the unit's mp_state."""
        self.vcpu = vcpu_port
        if not self.is_bsp:
            self.state = MpState.UNINITIALIZED
            self.history = [(0.0, MpState.UNINITIALIZED.name, "created (SEV-ES)")]
            self.where = "not started (SEV-ES: waits for INIT-SIPI)"

    async def _vcpu_events(self):
        vcpu = self.vcpu
        while True:
            await First(vcpu.rising_edge("launch"), vcpu.rising_edge("vmsa_launch"),
                        vcpu.state_change())
            await ReadOnly()
            launched, state = bool(vcpu.launch.value), vcpu.state
            vmsa = vcpu.vmsa_gpa if vcpu.vmsa_launch.value else None
            await RisingEdge(self.apic.clk)          # act outside the read-only phase
            if vmsa is not None:
                self.start_from_vmsa(vmsa)
            elif state is MpState.HALTED:
                self.drop_vmsa()
            elif launched:
                self.arch = ArchState.sev_es_launch(SEV_ES_RESET)
                self._started_by("SEV-ES launch")
                self._set_state(MpState.RUNNABLE, "first SIPI: launch state (vector ignored)")
                self._run_at(SEV_ES_RESET, "SEV-ES launch (reset block)")
            elif state is not self.state and state is not MpState.RUNNABLE:
                # RUNNABLE again is noted by the guest code that resumes
                self._set_state(state, f"hypervisor: {state.name}")

    def start_from_vmsa(self, gpa):
        """SNP AP Creation: the hypervisor starts this vCPU from the VMSA page at ``gpa`` (the
        CPU loads its whole register state from it, as VMRUN does; :mod:`.vmsa`)."""
        self._abandon()
        self.arch, _ = decode_vmsa(self.machine.memory.read(gpa, VMSA_SIZE))
        self.interrupts_enabled = self.arch.interrupts_enabled
        how = f"SNP AP Creation (VMSA at {gpa:#x})"
        self._started_by(how)
        self._set_state(MpState.RUNNABLE, f"{how}: {self.arch.mode} at "
                                          f"{self.arch.cs.selector:#06x}:{self.arch.rip:#x}")
        self._run_at(self.arch.linear_ip, how)

    def drop_vmsa(self):
        """SNP AP Creation reset (a DESTROY, or a new VMSA about to start): whatever the vCPU ran
        is gone with its VMSA; it is HALTED until the hypervisor starts it again."""
        self._abandon()
        self.interrupts_enabled = False
        self.where = "no VMSA (SNP AP Creation)"
        self._set_state(MpState.HALTED, "hypervisor: AP Creation, VMSA dropped")

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
        self.arch = ArchState.long_mode_entry(vector, cr3=FIRMWARE_PAGE_TABLES)
        self._started_by("mailbox Wakeup")
        self.note(f"mailbox Wakeup: 64-bit entry at {vector:#x}")
        self._check_wakeup_vector(vector)
        self.machine.ap_left_firmware(self)
        self._run_at(vector, "mailbox WakeupVector")

    def _check_wakeup_vector(self, vector):
        """ACPI 6.6 wants the vector below 1 MiB or in the mailbox's ReservedForOs; TDVF does not
        check (``jmp rax``), so the model warns and jumps anyway (docs/spec/mpwk.md §7 #10)."""
        base = self.machine.mailbox.base
        if vector >= LOW_MEMORY and not base + OFFSETS["reserved_for_os"] <= vector < base + FIRMWARE_HALF:
            self.note(f"warning: WakeupVector {vector:#x} is above 1 MiB and outside the "
                      f"mailbox's ReservedForOs: jumping anyway, as TDVF does")

    async def _events(self):
        port = self.apic
        # One Event for every edge this loop waits on: it looks at the levels whenever any
        # rises, so an edge while it is busy is seen at its next look, as before.  The edges
        # are those it acts on: not SIPI where the hypervisor takes it (a wake at a SIPI would
        # let it take an NMI or SMI held since wait-for-SIPI earlier than it did), and the
        # mailbox's wake where the AP is parked (park_on_mailbox comes before start).
        port.notify(("init", "nmi", "smi") + (() if self.sipi_by_hypervisor else ("sipi",)),
                    self._recheck)
        if self.mailbox is not None:
            self.mailbox.notify(self._recheck)
        while True:
            await ReadOnly()
            self._recheck.clear()
            runs = self.state.name not in _WAIT_FOR_SIPI
            if self.mailbox is not None and self.mailbox.wake.value:
                await RisingEdge(port.clk)
                self._on_mailbox_wake(await self.mailbox.wait_wake())
                continue
            # SMI before INIT: both are "external hardware interventions" of the same priority
            # class; taken first, the SMI then holds the INIT latched until RSM.
            if port.smi.value and runs:
                await RisingEdge(port.clk)
                await port.acknowledge("smi")
                self._on_smi()
                continue
            if port.init.value and not (self.in_smm or self.vmx.root):
                await RisingEdge(port.clk)
                await port.acknowledge("init")
                self._on_init()
                continue
            if port.init.value and not self.init_latched:
                # In SMM and in VMX root operation the INIT stays pending in the APIC,
                # unacknowledged, until RSM or VMXOFF.
                await RisingEdge(port.clk)
                self.init_latched = True
                self.note("INIT latched (in SMM): taken at RSM" if self.in_smm
                          else "INIT blocked (VMX root operation): taken at VMXOFF")
                continue
            if port.sipi.value and not self.sipi_by_hypervisor:
                vector = int(port.sipi_vector.value)
                await RisingEdge(port.clk)
                await port.acknowledge("sipi")
                self._on_sipi(vector)
                continue
            if port.nmi.value and runs:
                await RisingEdge(port.clk)
                await port.acknowledge("nmi")
                self._on_nmi()
                continue
            if not self.in_smm and (self.smi_latched or (self.nmi_latched and not self.nmi_blocked)):
                await RisingEdge(port.clk)
                self._take_latched()
                continue
            await self._recheck.wait()

    def _on_init(self):
        self._abandon()
        self.interrupts_enabled = False
        # INIT resets the CPU: latched and blocked NMIs and SMIs go (KVM kvm_vcpu_reset)
        self.init_latched = self.nmi_blocked = self.nmi_latched = self.smi_latched = False
        self._refusal_reported = False
        self.vmx.reset()
        self.arch = self.arch.after_init()
        if self.is_bsp:
            self._started_by("INIT (BSP: reset vector)")
            self._set_state(MpState.RUNNABLE, "INIT: BSP restarts at the reset vector")
            self._run_at(RESET_VECTOR, "reset vector after INIT")
        else:
            self._set_state(MpState.INIT_RECEIVED, "INIT: wait for SIPI")
            self.where = "wait-for-SIPI"

    def _on_sipi(self, vector):
        if self.in_smm or self.state is not MpState.INIT_RECEIVED:
            # honoured only in wait-for-SIPI; not retried by the sender's APIC, so lost
            self.ignored_sipis += 1
            self.note(f"SIPI {vector:#04x} ignored ({self.status})")
            return
        address = vector << 12
        self.entry = (vector << 8, 0)
        self.arch = self.arch.after_sipi(vector)
        self._started_by(f"SIPI {vector:#04x}")
        self._set_state(MpState.RUNNABLE, f"SIPI {vector:#04x}: real mode CS={vector << 8:#06x} IP=0")
        self._run_at(address, f"SIPI vector {vector:#04x}")

    def launch(self, kind, *, vector=0, state=None, how=""):
        """The start-context unit's launch record for this CPU (``rtl/start_context``; ``kind``
        is a :class:`apwake.rtl.start_context.layouts.LaunchKind` name): ``REAL_MODE`` is a SIPI
        start with ``vector``; ``CONTEXT`` starts in ``state`` (an :class:`ArchState`) at its
        EIP, ``how`` saying what carried it; ``REFUSED`` is a real-mode start the hypervisor
        refused (the VM runs paravirtual), a reported failure, the CPU left waiting for SIPI;
        ``DROPPED`` a SIPI to a running vCPU, counted as an ignored SIPI."""
        if kind == "REAL_MODE":
            self._on_sipi(vector)
        elif kind == "DROPPED":
            self.ignored_sipis += 1
            self.note(f"SIPI {vector:#04x} dropped by the hypervisor (vCPU running)")
        elif kind == "REFUSED":
            self.note(f"SIPI {vector:#04x} refused by the hypervisor: real-mode start in a paravirtual VM")
            if self._refusal_reported:
                return                  # reported at the first refusal since the INIT
            self._refusal_reported = True
            self.where = "wait-for-SIPI (real-mode start refused)"
            self.fail(f"{self.name}: the hypervisor refused to start it in real mode (SIPI "
                      f"{vector:#04x} with no start state armed: no SetInitialAPState for it, or "
                      f"one the hypervisor refused): the BSP runs paravirtual, and an AP cannot "
                      f"run real-mode code beside it (VMI constraint 5: mixed mode is "
                      f"unsupported); it stays in wait-for-SIPI")
        elif kind == "CONTEXT":
            if self.in_smm:
                # the hypervisor has consumed the context and counts the vCPU running
                self.fail(f"{self.name}: a context start ({how}) arrived while it was in SMM and "
                          f"was lost; it cannot be started again before an INIT")
                return
            self._abandon()
            self.interrupts_enabled = False
            self.arch = state
            self._started_by(how)
            self._set_state(MpState.RUNNABLE, f"{how}: {state.mode} at "
                                              f"{state.cs.selector:#06x}:{state.rip:#x}")
            self._run_at(state.linear_ip, how)
            if state.interrupts_enabled:      # a context may start with IF set: take interrupts
                self.sti()
        else:
            raise ValueError(f"{self.name}: unknown launch kind {kind!r}")

    # --- NMI (SDM vol. 3, "Handling Multiple NMIs") ---------------------------------------------
    def _on_nmi(self):
        if self.in_smm or self.nmi_blocked:
            why = "in SMM" if self.in_smm else "NMI handler running"
            if self.nmi_latched:
                self.nmis_collapsed += 1
                self.note(f"NMI collapsed ({why}, one already latched)")
            else:
                self.nmi_latched = True
                self.note(f"NMI latched ({why})")
            return
        self._start_nmi("NMI")

    def _start_nmi(self, why):
        self.nmi_blocked = True
        self.nmis_taken += 1
        self._iret = Event()
        self.note(f"{why}: handler (IDT vector {NMI_VECTOR})")
        self._nmi_task = cocotb.start_soon(self._nmi())

    async def _nmi(self):
        handler = self.idt.get(NMI_VECTOR)
        if handler is None:
            self.fail(f"{self.name}: NMI with no handler at IDT vector {NMI_VECTOR}")
        else:
            await handler(self, NMI_VECTOR)
        # IRET: NMIs unblocked; a latched one is taken next by the event loop
        self.nmi_blocked = False
        self.note("IRET: NMIs unblocked")
        self._iret.set()
        self._woken.set()            # like an interrupt, an NMI ends hlt
        self._recheck.set()

    def vmx_left(self):
        """VMXOFF: an INIT held pending in VMX root operation is taken now."""
        self._recheck.set()

    def _take_latched(self):
        if self.smi_latched:
            self.smi_latched = False
            self._enter_smm("latched SMI")
        else:
            self.nmi_latched = False
            self._start_nmi("latched NMI")

    # --- SMM (SDM vol. 3, "System Management Mode") -------------------------------------------
    def _on_smi(self):
        if self.in_smm:
            if self.smi_latched:
                self.smis_collapsed += 1
                self.note("SMI collapsed (in SMM, one already latched)")
            else:
                self.smi_latched = True
                self.note("SMI latched (in SMM): taken at RSM")
            return
        self._enter_smm("SMI")

    def _enter_smm(self, why):
        # the state save map (SMBASE + 0xFE00) keeps what RSM restores
        saved_state, saved_where, _ = self._smm_saved = (self.state, self.where, self.arch)
        self.arch = self.arch.smm_entry(SMBASE)
        loaded = self.machine.memory.program_at(SMM_ENTRY)
        self.where = f"SMM: {loaded[1] if loaded else 'no handler'}"
        self.in_smm = True
        self.smm_entries += 1
        self._rsm = Event()
        self._set_state(MpState.RUNNABLE,
                        f"{why}: enter SMM (saved {saved_state.name} at {saved_where})")
        self._smm_task = cocotb.start_soon(self._smm())

    async def _smm(self):
        loaded = self.machine.memory.program_at(SMM_ENTRY)
        if loaded is None:
            # nothing executes RSM: the CPU stays in SMM
            self.where = f"SMM: {SMM_ENTRY:#x} (no code)"
            self.fail(f"{self.name} took an SMI but no SMM handler is loaded at {SMM_ENTRY:#x}")
            return
        await loaded[0](self)
        self._resume_from_smm()

    def _resume_from_smm(self):
        """RSM: restore the saved state; a halted CPU halts again (auto HALT restart)."""
        state, where, self.arch = self._smm_saved
        self.in_smm = False
        self.where = where
        self._set_state(state, "RSM: auto HALT restart" if state is MpState.HALTED
                        else f"RSM: back to {where}")
        self._rsm.set()
        if self.smi_latched:
            # the latched SMI comes first, before any interrupt (KVM smm.c kvm_smm_changed)
            self.smi_latched = False
            self._enter_smm("latched SMI")
        self._recheck.set()            # a latched INIT or NMI is taken now

    def _abandon(self):
        for task in (self._program, self._irq_task, self._nmi_task, self._smm_task):
            if task is not None and not task.done():
                task.cancel()
        self._program = self._irq_task = self._nmi_task = self._smm_task = None

    def restart_at(self, address, why):
        """Abandon what the CPU runs and continue at ``address`` (kexec's jump to the next
        kernel)."""
        self._abandon()
        self.interrupts_enabled = False
        self.arch.set_interrupt_flag(False)
        self.note(why)
        self._run_at(address, why)

    def _run_at(self, address, why):
        self._program = cocotb.start_soon(self._execute(address, why))

    async def _execute(self, address, why):
        while True:
            loaded = self.machine.memory.program_at(address)
            if loaded is None:
                self.where = f"{address:#x} (no code)"
                self.fail(f"{self.name} started at {address:#x} where no code is loaded ({why})")
                return
            program, name, _owner, entry = loaded
            self.where = name
            failure = None if entry is None else entry.failure(self, self.arch, name)
            if failure is not None:
                # the code faults at once (no IDT it could use yet): the CPU is dead
                self.where = f"{name}: faulted on entry ({entry.description} needed)"
                self.fail(failure)
                return
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

    def far_jump_real(self, cs, ip):
        """A real-mode far jump to ``cs:ip``: CS = cs (base cs << 4), IP = ip; continues there."""
        self.arch = ArchState.real_mode((cs << 4) + ip, cs_base=cs << 4)
        self.arch.cs = dataclasses.replace(self.arch.cs, selector=cs)
        raise Jump((cs << 4) + ip)

    async def return_to_firmware(self):
        """play_dead on an MPWK v1 machine: jump to ResetVector in the state the caller left
        (Linux's ``asm_acpi_mp_play_dead``: interrupts off, its identity map); the firmware loop
        (the mailbox hardware) takes the CPU back.  Ends the running program.  A state the
        ResetVector cannot be entered in (:data:`RESET_VECTOR_ENTRY`) is a failure naming the
        register, and the CPU stops there."""
        if self.mailbox is None:
            raise RuntimeError(f"{self.name} is not parked on a mailbox: no ResetVector to jump to")
        failure = RESET_VECTOR_ENTRY.failure(self, self.arch, "the mailbox ResetVector")
        if failure is not None:
            self.where = "mailbox ResetVector: faulted on entry"
            self.fail(failure)
            raise _BackToFirmware()
        self.cli()                        # the model's interrupt task ends with the kernel
        await self.mailbox.return_to_firmware()
        self.where = "firmware: mailbox poll loop"
        self._set_state(MpState.RUNNABLE, "jumped to ResetVector: back in the firmware mailbox loop")
        raise _BackToFirmware()

    async def udelay(self, us):
        """Busy-wait ``us`` microseconds of guest time (scaled by the machine's time_scale)."""
        ns = self.machine.scaled_ns(us * 1000)
        if ns > 0:
            await Timer(ns, "ns")

    def sti(self):
        self.interrupts_enabled = True
        self.arch.set_interrupt_flag(True)
        if self.vcpu is not None:
            self.vcpu.allow_interrupts(True)
        if self._irq_task is None or self._irq_task.done():
            self._irq_task = cocotb.start_soon(self._interrupts())

    async def local_irq_save(self):
        """``local_irq_save()`` in code that runs on this CPU outside its interrupt handlers (a
        kernel flow a scenario runs on it): an interrupt this CPU is taking is handled to the end
        first, as it would have been before the interrupted code went on; then interrupts are
        off.  Returns whether they were on, for :meth:`local_irq_restore`."""
        enabled = self.interrupts_enabled
        while self._in_handler:
            await self._handler_done.wait()
        if enabled:
            self.cli()
        return enabled

    def local_irq_restore(self, enabled):
        if enabled:
            self.sti()

    @contextlib.asynccontextmanager
    async def interrupts_held(self, why):
        """Hold interrupt delivery off while an instruction that runs with IF = 0 executes
        (SEAMCALL): an interrupt arriving meanwhile is taken after it."""
        self._irq_held = why
        self._irq_release.clear()
        try:
            yield
        finally:
            self._irq_held = None
            self._irq_release.set()

    def cli(self):
        self.interrupts_enabled = False
        self.arch.set_interrupt_flag(False)
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
            deadline = Timer(self.machine.scaled_ns(timeout_us * 1000), "ns")
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
                await port.rising_edge("intr")
                continue
            # SMM entry clears IF and an NMI handler runs through an interrupt gate: INTR
            # waits for RSM or the IRET
            if self.in_smm:
                await self._rsm.wait()
                continue
            if self.nmi_blocked:
                await self._iret.wait()
                continue
            if self._irq_held is not None:
                await self._irq_release.wait()
                continue
            self._in_handler = True
            self._handler_done.clear()
            try:
                await RisingEdge(port.clk)
                vector, _ = await port.inta()
                self.interrupts_taken.append((cocotb.utils.get_sim_time("ns"), vector))
                handler = self.idt.get(vector)
                # through an interrupt gate: IF = 0 in the handler, restored by its IRET
                self.arch.set_interrupt_flag(False)
                if handler is None:
                    self.fail(f"{self.name}: interrupt vector {vector:#x} has no handler")
                    await port.write("EOI", 0)
                else:
                    await handler(self, vector)
                self.arch.set_interrupt_flag(self.interrupts_enabled)
            finally:
                self._in_handler = False
                self._handler_done.set()
            self._woken.set()
