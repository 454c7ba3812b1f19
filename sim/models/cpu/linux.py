"""Guest software for the CPU models: firmware at the reset vector and a Linux-like kernel.

The kernel follows arch/x86/kernel/smpboot.c as digested in docs/spec/lapic.md §6.3 and §7:

* ``legacy``: ESR clear, INIT assert, 10 ms, INIT de-assert, then up to two SIPIs with 300 us /
  200 us around each and an ESR check (``ESR & 0xEF``) after each; wait up to 10 s for the AP
  to check in before the next AP.
* ``modern``: the same without the 10 ms and with 10 us gaps (``init_udelay = 0``).
* ``parallel`` (Linux 6.5): kick every AP first (modern timing), then for each AP wait for
  ``ALIVE``, release it with ``SHOULD_ONLINE`` and wait for ``ONLINE``.  APs serialise on the
  real-mode trampoline's lock, find their CPU number by reading their own APIC ID and searching
  ``cpuid_to_apicid[]``; an APIC ID not in the table halts the AP.
* ``broadcast``: INIT, SIPI, SIPI to all-excluding-self (SDM §8.4.4 style), then wait for every
  AP.

Kernel data lives in kernel-owned pages of :class:`apwake.sim.vip.memory.Memory`; the BSP waits on it with
memory watches (event-driven), each wait with the kernel's own timeout.
"""

import enum
import errno as _errno

from cocotb.triggers import Event, SimTimeoutError, with_timeout

from apwake.rtl.lapic.fabric import MAX_APICS
from apwake.rtl.lapic.layouts import XAPIC_MAX_ID, DeliveryMode, Esr, Level, Shorthand, Trigger
from apwake.rtl.mpwk_mailbox.layouts import MADT_OFFSETS, OFFSETS, Command
from apwake.sim.harness.codec import field_mask
from apwake.sim.vip.memory import PAGE_SIZE, Owner
from apwake.sim.models.madt import parse_mp_wake, parse_processors
from .lapic_setup import LocalApicSetup
from .model import FIRMWARE_PAGE_TABLES, NMI_VECTOR, RESET_VECTOR
from .state import CR4, ArchState, EntryRequirement, Segment, long_mode_flat, real_mode_at
from .parking import PARKING_PAGE, PLACEMENTS, ParkingLoop

__all__ = ["BootMethod", "Kernel", "Firmware", "X2APIC_HANDOFFS", "x2apic_handoff",
           "TRAMPOLINE", "KERNEL_ENTRY", "KERNEL_DATA",
           "KERNEL2_ENTRY", "KERNEL2_DATA",
           "CALL_FUNCTION_VECTOR", "CALL_FUNCTION_MANY_VECTOR", "RESCHEDULE_VECTOR", "CallFunction",
           "CSD_TIMEOUT_US", "errno_text",
           "SyncState", "MADT_ADDRESS", "START_SECONDARY", "THREAD_SIZE", "PGD_OFFSET"]

TRAMPOLINE = 0x9A000              # real-mode trampoline page, below 1 MiB
KERNEL_ENTRY = 0x0100_0000        # kernel text
KERNEL_DATA = 0x0200_0000         # kernel data (tables below)
#: a second kernel (kexec) lives in other pages
KERNEL2_ENTRY, KERNEL2_DATA = 0x0400_0000, 0x0500_0000
#: the most CPUs the kernel's tables hold (Linux: NR_CPUS), as many as the fabric takes
NR_CPUS = MAX_APICS
# offsets of the kernel's tables from its data base, sized for NR_CPUS (they were sized for 255
# CPUs, and at 1024 cpuid_to_apicid[] overwrote the sync states and tr_lock: every AP spun)
_NR_CPU_IDS = 0x000
_CPUID_TO_APICID = 0x100                     # u32 per CPU number
_ONLINE = _CPUID_TO_APICID + 4 * NR_CPUS     # u8 per CPU number: the online map
_SYNC = _ONLINE + NR_CPUS                    # u8 per CPU number: cpuhp sync state
_TRAMPOLINE_LOCK = _SYNC + NR_CPUS           # the trampoline's bit spin-lock (tr_lock)
_DATA_BYTES = (_TRAMPOLINE_LOCK + 4 + 0xFFF) & ~0xFFF   # the tables above, in whole pages
# Addresses the kernel's CPU state points at (nothing the models write: page tables, per-CPU
# areas and stacks are only checked as register values), from the data base, clear of the
# tables above and, up to 1264 CPUs, of the SEV-ES kernel's per-CPU GHCB pages (data + 0x10000,
# 4 KiB per CPU)
PGD_OFFSET = 0x8000                                # swapper_pg_dir / init_top_pgt
_IDENTITY_PGD = 0x9000                       # acpi_mp_pgd: the identity map for ResetVector
assert PGD_OFFSET >= _DATA_BYTES, "the page tables must be clear of the kernel's tables"
_PERCPU = 0x0060_0000                        # __per_cpu_offset[n] = data + _PERCPU + n * _PERCPU_SIZE
_PERCPU_SIZE = 0x1000
_STACKS = 0x00C0_0000                        # CPU n's stack: THREAD_SIZE bytes from here
THREAD_SIZE = 0x4000
#: start_secondary in the kernel's text page
START_SECONDARY = 0x100
#: the x86-64 kernel's code segment (GDT_ENTRY_KERNEL_CS 2)
_KERNEL_CS_64 = 0x10
CALL_FUNCTION_VECTOR = 0xFB                  # CALL_FUNCTION_SINGLE_VECTOR
#: the vector of a call-function IPI to several CPUs (CALL_FUNCTION_VECTOR in Linux)
CALL_FUNCTION_MANY_VECTOR = 0xFC
#: the scheduler IPI that wakes an idle CPU for work queued on it (arch/x86/include/asm/irq_vectors.h)
RESCHEDULE_VECTOR = 0xFD
#: how long (guest time) a CPU waits for a call-function IPI's function to run on another CPU
#: before it says so: CONFIG_CSD_LOCK_WAIT_DEBUG's 5 s (kernel/smp.c csd_lock_wait_toolong)
CSD_TIMEOUT_US = 5_000_000
#: ESR bits Linux treats as an accept failure after a SIPI (everything but redirectable IPI)
_ACCEPT_ERRORS = 0xFF & ~field_mask(Esr, "redirectable_ipi")


def errno_text(value):
    """A kernel function's result as Linux prints it: "0", or "-EIO" for -5 and the like."""
    if not value:
        return "0"
    # Python names 95 ENOTSUP (glibc's alias); the kernel's name is EOPNOTSUPP
    name = "EOPNOTSUPP" if -value == _errno.EOPNOTSUPP else _errno.errorcode.get(-value, str(-value))
    return f"-{name}"


class CallFunction:
    """One function call sent to another CPU (kernel/smp.c's ``call_single_data``), or one work
    item queued on it (``smp_call_on_cpu``).

    ``func`` is ``async def func(cpu) -> result``: in a call-function IPI it runs in the
    target's interrupt handler (IF = 0); as work it runs in process context with interrupts on.
    ``done`` is set once it ran, ``result`` is what it returned.  ``purpose`` names it in the
    kernel's IPI counts.
    """

    def __init__(self, func, purpose):
        self.func, self.purpose = func, purpose
        self.done = Event()
        self.result = None

    def __repr__(self):
        return f"CallFunction({self.purpose!r})"

    async def run(self, cpu):
        self.result = await self.func(cpu)
        self.done.set()


class BootMethod(str, enum.Enum):
    LEGACY = "legacy"
    MODERN = "modern"
    PARALLEL = "parallel"
    BROADCAST = "broadcast"
    MPWK = "mpwk"             # ACPI MADT multiprocessor wakeup mailbox (TDX, docs/spec/mpwk.md §4)


class SyncState(enum.IntEnum):
    """kernel/cpu.c enum cpuhp_sync_state."""

    DEAD = 0
    KICKED = 1
    SHOULD_DIE = 2
    ALIVE = 3
    SHOULD_ONLINE = 4
    ONLINE = 5


#: (init_udelay, us before the idle wait after a SIPI, us after it), docs/spec/lapic.md §6.3
_TIMING = {BootMethod.LEGACY: (10_000, 300, 200), BootMethod.MODERN: (0, 10, 10),
           BootMethod.PARALLEL: (0, 10, 10), BootMethod.BROADCAST: (0, 10, 10)}
#: where firmware publishes its MADT interrupt controller structures: u32 length, then bytes
MADT_ADDRESS = 0x000E_0000
#: the trampoline page is entered in real mode by a SIPI (trampoline_start) or in 64-bit mode by
#: an MP wakeup mailbox or a parking loop (trampoline_start64, the model's same address)
TRAMPOLINE_ENTRY = EntryRequirement("real mode at the trampoline, or 64-bit mode", alternatives=(
    real_mode_at(TRAMPOLINE, "the real-mode trampoline"), long_mode_flat("trampoline_start64")))


#: which APICs the firmware leaves in x2APIC mode at hand-over: "auto" (every CPU's when an APIC
#: ID needs x2APIC, as firmware must, else none); none; only the boot CPU's (the inconsistent
#: machines behind Linux commit 69a7386c); every CPU's (TDX guests, whose vCPUs the TDX module
#: runs in x2APIC mode, and large machines)
X2APIC_HANDOFFS = ("auto", "none", "bsp", "all")


def x2apic_handoff(cpus, which):
    """A firmware hand-over step (``Firmware(handoff=...)``) that leaves ``which`` ("bsp" or
    "all") CPUs' APICs in x2APIC mode.  "all" stands for the firmware's own AP initialisation,
    which switched each AP and parked it again (INIT keeps the APIC's mode, SDM vol. 3A
    §11.12.5).  ValueError for another ``which``."""
    if which not in ("bsp", "all"):
        raise ValueError(f"x2APIC hand-over must be 'bsp' or 'all', not {which!r}")

    async def step(bsp):
        for cpu in [bsp] if which == "bsp" else cpus:
            await cpu.apic.enter_x2apic()    # x2APIC -> x2APIC (an ID above 0xFE) is a no-op
        whose = "the BSP" if which == "bsp" else "every CPU"
        bsp.note(f"firmware: hand-over with {whose} in x2APIC mode")
    return step


class Firmware:
    """Reset-vector code: first boot jumps to the kernel; after an INIT of the BSP (no warm-reset
    vector set up) it halts, as a BIOS with nothing to resume would.

    ``reuses_mailbox_page``: once the last AP has left the MP wakeup loop the firmware takes its
    mailbox page back for data of its own (legal for version 0: no AP will poll again; Kirill
    Shutemov's "very theoretical" objection to parking on the firmware's page, docs/spec/mpwk.md §4)."""

    #: what the firmware stores in its reused page (any data of its own)
    REUSE_DATA = b"firmware runtime data, not a mailbox".ljust(64, b"\0")

    def __init__(self, memory, kernel_entry=KERNEL_ENTRY, madt=b"", *, reuses_mailbox_page=False,
                 handoff=()):
        self.memory = memory
        #: ``async def step(bsp)``: the firmware's last work before it jumps to the kernel
        self.handoff = list(handoff)
        self.kernel_entry = kernel_entry
        self.resets = 0
        self.reuses_mailbox_page = reuses_mailbox_page
        self.reused_page = None
        # ACPI tables are handed to the OS, which may patch them (Linux zeroes the MPWK
        # address under the version-0 policy): no owner, so no corruption record.
        memory.write_int(MADT_ADDRESS, len(madt), 4, writer=Owner.FIRMWARE)
        memory.write(MADT_ADDRESS + 4, madt, writer=Owner.FIRMWARE)
        memory.load_program(RESET_VECTOR, self.reset_vector, owner=Owner.FIRMWARE,
                            name="firmware reset vector")

    def last_ap_woken(self, mailbox_address):
        if self.reuses_mailbox_page and self.reused_page is None:
            self.reused_page = mailbox_address
            self.memory.set_owner(mailbox_address, PAGE_SIZE, Owner.FIRMWARE)
            self.memory.write(mailbox_address, self.REUSE_DATA, writer=Owner.FIRMWARE)

    async def reset_vector(self, cpu):
        self.resets += 1
        cpu.note(f"firmware: reset #{self.resets}")
        if self.resets == 1:
            for step in self.handoff:
                await step(cpu)
            # UEFI hands over in 64-bit mode on the firmware's identity map
            cpu.arch = ArchState.long_mode_entry(self.kernel_entry, cr3=FIRMWARE_PAGE_TABLES)
            cpu.jump(self.kernel_entry)
        cpu.where = "firmware: halted after INIT (no warm-reset vector)"


class Kernel:
    """A Linux-like kernel: brings the APs up by ``method`` and then idles.

    Parameters
    ----------
    machine : apwake.sim.models.cpu.machine.Machine
    method : BootMethod
    nr_cpus : int or None
        Bring up at most this many CPUs (``nr_cpus=`` on the command line), the BSP included.
    callin_timeout_us : float
        How long (guest time) the BSP waits for an AP, 10 s in Linux.
    owner : apwake.sim.vip.memory.Owner
        Whose pages the kernel's code and data are.
    parking_page : str or None
        Plan B on a version-0 mailbox (:mod:`apwake.sim.models.cpu.parking`): at kexec the APs go into this
        kernel's parking loop instead of halting, its mailbox in a page of the kernel's own
        (``"kernel"``, MADT patched) or on the firmware's page (``"firmware"``).
    lapic_timer : str
        How each CPU programs its local APIC timer (:data:`apwake.sim.models.cpu.lapic_setup.TIMER_MODES`).
    x2apic : str
        The kernel's x2APIC choice (:data:`apwake.sim.models.cpu.lapic_setup.X2APIC_MODES`).
    x2apic_fixed : bool
        False: the kernel without the x2APIC hand-over fix (:mod:`.lapic_setup`).
    """

    def __init__(self, machine, method=BootMethod.MODERN, *, nr_cpus=None,
                 callin_timeout_us=10_000_000, owner=Owner.KERNEL1, entry=KERNEL_ENTRY,
                 data=KERNEL_DATA, parking_page=None, lapic_timer="deadline", x2apic="auto",
                 x2apic_fixed=True):
        if parking_page not in (None, *PLACEMENTS):
            raise ValueError(f"parking_page must be one of {PLACEMENTS} or None, not {parking_page!r}")
        self.machine = machine
        self.lapic = LocalApicSetup(machine, lapic_timer, x2apic=x2apic, fixed=x2apic_fixed)
        self.parking_page = parking_page
        self.parking_loop = None
        self.memory = machine.memory
        self.method = BootMethod(method)
        self.owner = owner
        self.callin_timeout_us = callin_timeout_us
        # The CPUs are the MADT's processor entries (acpi_parse_lapic, acpi_parse_x2apic): CPU 0
        # is the BSP (its own APIC ID, read_apic_id), the others in the order Linux registers
        # them (the type-0 entries first, sim/models/madt.py).  A MADT without processor
        # entries leaves the boot CPU alone, as Linux then runs uniprocessor.
        madt = self.memory.read(MADT_ADDRESS + 4, self._read(MADT_ADDRESS, 4))
        ids = [p.apic_id for p in parse_processors(madt)]
        bsp = machine.bsp.apic_id
        self.cpuid_to_apicid = [bsp] + [i for i in ids if i != bsp]
        # registered at start_kernel, once the kernel knows its APIC mode (_limit_cpus)
        self.nr_cpus = nr_cpus
        self.booted = Event()
        self.mp_wake = None
        self.boot_failures = []
        self.calls = {}            # cpu number -> [pending call-function entries]
        self.calls_done = []       # (target cpu number, entry) in execution order
        self.nmi_count = {}        # APIC ID -> NMIs handled (irq_stat.__nmi_count)
        self.nmi_handlers = []     # register_nmi_handler(NMI_LOCAL, ...) callbacks
        self.call_ran = Event()    # set whenever calls_done grows
        self.ipis = {}             # purpose -> IPIs sent (call-function and reschedule)
        self.booted_once = set()   # CPU numbers that came online at least once (cpus_booted_once_mask)
        self.works = {}            # cpu number -> [CallFunction] queued to run in process context
        #: CPU hotplug callbacks, in state order: (name, startup, teardown), each
        #: ``async def (cpu, n) -> 0 or -errno`` run on the CPU going up or down (kernel/cpu.c)
        self.cpuhp_states = []
        self.cpus_read_held = 0    # cpus_read_lock() holders: cpu_up/cpu_down wait for none
        self._hotplug_writer = False   # cpu_up or cpu_down holds the lock
        self._hotplug_event = Event()  # set (and replaced) whenever the lock changes
        self.hotplug_log = []      # one dict per cpu_up/cpu_down
        self.entry, self.data = entry, data
        self.name = owner.value
        self.memory.set_owner(*self.memory_ranges()[1], owner)
        self.memory.load_program(entry, self.kernel_main, owner=owner, name=f"{self.name}: start_kernel")
        self.memory.load_program(entry + START_SECONDARY, self.start_secondary, owner=owner,
                                 name="start_secondary", entry=self.secondary_entry())

    # --- helpers --------------------------------------------------------------------------------
    def _limit_cpus(self, cpu):
        """The CPUs this kernel registers: in xAPIC mode none whose ID the xAPIC cannot hold
        (acpi_parse_x2apic; each is a reported failure, not a silent loss), then at most
        ``nr_cpus`` of the rest.  ``cpu``: the BSP, after check_x2apic."""
        if not self.lapic.x2apic_mode:
            ignored = [a for a in self.cpuid_to_apicid[1:] if a > XAPIC_MAX_ID]
            if ignored:
                cpu.note(f"x2apic entry ignored: {len(ignored)} CPUs with APIC IDs above "
                         f"{XAPIC_MAX_ID:#x} in xAPIC mode")
                for apic_id in ignored:
                    self.machine.fail(self._model_of(apic_id),
                                       f"APIC ID {apic_id:#x} needs x2APIC mode; the kernel runs "
                                       f"xAPIC and does not register the CPU (x2apic entry ignored)")
                self.cpuid_to_apicid = [a for a in self.cpuid_to_apicid if a not in ignored]
        if self.nr_cpus is not None:
            self.cpuid_to_apicid = self.cpuid_to_apicid[:max(1, self.nr_cpus)]

    def memory_ranges(self):
        """``(base, size)`` of the memory this kernel owns: its text page and its data."""
        return [(self.entry, PAGE_SIZE), (self.data, _DATA_BYTES)]

    def _write(self, address, value, size):
        self.memory.write_int(address, value, size, writer=self.owner)

    def _read(self, address, size):
        return self.memory.read_int(address, size)

    def online_cpus(self):
        return [n for n in range(len(self.cpuid_to_apicid)) if self._read(self.data + _ONLINE + n, 1)]

    def online_apic_ids(self):
        return [self.cpuid_to_apicid[n] for n in self.online_cpus()]

    def _model_of(self, apic_id):
        return next(c for c in self.machine.cpus if c.apic_id == apic_id)

    async def _wait(self, address, predicate, what, apic_id):
        ok = await self.memory.wait_until(
            address, 1, predicate, timeout_ns=self.machine.scaled_ns(self.callin_timeout_us * 1000))
        if not ok:
            self._report_stuck(apic_id, f"{what}: CPU with APIC ID {apic_id:#x} did not answer "
                                        f"within {self.callin_timeout_us / 1e6:g} s (guest time)")
        return ok

    async def wait_online(self, n, online, what):
        """Wait (the callin timeout) for CPU number ``n`` to mark itself online or offline."""
        return await self._wait(self.data + _ONLINE + n, lambda v: v == int(online), what,
                                self.cpuid_to_apicid[n])

    def _madt_mailbox_address(self):
        """Where the MailboxAddress field of the MPWK entry Linux parsed sits in memory (the
        published MADT: a u32 length, then the entries)."""
        return MADT_ADDRESS + 4 + self.mp_wake.offset + MADT_OFFSETS["mailbox_address"]

    def _report_stuck(self, apic_id, what):
        """A bring-up failure naming the CPU and where it is."""
        target = self._model_of(apic_id)
        message = f"{what}; it is {target.position}"
        self.boot_failures.append(message)
        self.machine.fail(target, message)

    # --- the CPU state the kernel gives its CPUs (module docstring of .state) ---------------------
    #: the segment whose base is the per-CPU offset: GS on x86-64 (MSR_GS_BASE)
    percpu_segment = "gs"
    #: what start_secondary runs in
    secondary_mode = "64-bit"
    kernel_cs = _KERNEL_CS_64

    def percpu_base(self, n):
        """``__per_cpu_offset[n]``."""
        return self.data + _PERCPU + n * _PERCPU_SIZE

    def percpu_cpu(self, base):
        """The CPU number whose per-CPU area starts at ``base``, or None."""
        n, rest = divmod(base - self.data - _PERCPU, _PERCPU_SIZE)
        return n if rest == 0 and 0 <= n < NR_CPUS else None

    def stack_top(self, n):
        """The top of CPU number ``n``'s kernel stack (its idle task's)."""
        return self.data + _STACKS + (n + 1) * THREAD_SIZE

    def secondary_state(self, n):
        """What secondary_startup_64 leaves for start_secondary on CPU number ``n``: long mode
        on the kernel's page tables, GS base = the CPU's per-CPU offset, its own stack,
        interrupts off."""
        state = ArchState.long_mode_entry(self.entry + START_SECONDARY, cr3=self.data + PGD_OFFSET,
                                          rsp=self.stack_top(n))
        state.cs = Segment(selector=self.kernel_cs, base=0, limit=0xFFFF_FFFF, attrib=state.cs.attrib)
        state.gs = Segment(selector=0, base=self.percpu_base(n), limit=0xFFFF_FFFF,
                           attrib=state.gs.attrib)
        return state

    def secondary_entry(self):
        """start_secondary's entry requirement: the kernel's mode and code segment, a per-CPU
        base that is some CPU's and that CPU's own (its APIC ID), and that CPU's stack."""
        seg = self.percpu_segment

        def mode(cpu, state):
            if state.mode == self.secondary_mode:
                return None
            # name the register that makes the difference: CR0 (PE, PG), else EFER (long mode)
            paged = state.cr0 & 0x8000_0001 == 0x8000_0001
            return ("efer" if paged else "cr0"), (f"start_secondary runs in {self.secondary_mode} "
                                                  f"mode, not {state.mode}")

        def code(cpu, state):
            if state.cs.selector == self.kernel_cs:
                return None
            return "cs.selector", f"not the kernel code segment {self.kernel_cs:#x}"

        def percpu(cpu, state):
            base = state.value(f"{seg}.base")
            n = self.percpu_cpu(base)
            if base == 0:
                return f"{seg}.base", "per-CPU segment missing"
            if n is None:
                return f"{seg}.base", "no CPU's per-CPU area"
            if n >= len(self.cpuid_to_apicid) or self.cpuid_to_apicid[n] != cpu.apic_id:
                return f"{seg}.base", f"the per-CPU area of CPU {n}, not this CPU's"
            return None

        def stack(cpu, state):
            n = self.percpu_cpu(state.value(f"{seg}.base"))
            top = self.stack_top(n)
            if top - THREAD_SIZE < state.rsp <= top:
                return None
            return "rsp", f"not on CPU {n}'s stack ({top - THREAD_SIZE:#x}-{top:#x})"

        return EntryRequirement(f"{self.secondary_mode} mode, per-CPU {seg.upper()} base, own stack",
                                (mode, code, percpu, stack))

    # --- the BSP ----------------------------------------------------------------------------------
    async def kernel_main(self, cpu):
        cpu.where = "start_kernel"
        # check_x2apic runs before the MADT is parsed: it decides which IDs can be registered
        await self.lapic.check_x2apic(cpu)
        self._limit_cpus(cpu)
        self._write(self.data + _NR_CPU_IDS, len(self.cpuid_to_apicid), 4)
        for n, apic_id in enumerate(self.cpuid_to_apicid):
            self._write(self.data + _CPUID_TO_APICID + 4 * n, apic_id, 4)
            self._write(self.data + _ONLINE + n, 0, 1)
            self._write(self.data + _SYNC + n, SyncState.DEAD, 1)
        self._write(self.data + _ONLINE, 1, 1)
        self.memory.load_program(TRAMPOLINE, self.trampoline, owner=self.owner,
                                 name="kernel: trampoline", entry=TRAMPOLINE_ENTRY)
        self._setup_idt(cpu)
        await self.lapic.setup_local_apic(cpu, boot_cpu=True)
        await self.lapic.setup_apic_timer(cpu)      # taken once the BSP idles (irqs are off)
        cpu.note("smp_init")
        cpu.where = f"smp_init ({self.method.value})"
        await self.smp_boot(cpu, self.cpuid_to_apicid[1:])
        cpu.note(f"smp booted: {len(self.online_cpus())} of {len(self.cpuid_to_apicid)} CPUs online")
        self.booted.set()
        await self._idle(cpu, 0)

    async def smp_boot(self, cpu, aps):
        """Bring up the APs (APIC IDs ``aps``) by this kernel's method, from the BSP ``cpu``."""
        if self.method is BootMethod.BROADCAST:
            await self._boot_broadcast(cpu, aps)
        elif self.method is BootMethod.MPWK:
            await self._boot_mailbox(cpu, aps)
        elif self.method is BootMethod.PARALLEL:
            kicked = [a for a in aps if await self.wakeup_secondary_cpu_via_init(cpu, a)]
            for apic_id in kicked:
                await self._release(self.cpuid_to_apicid.index(apic_id), "wait for CPU online")
        else:
            for apic_id in aps:
                if await self.wakeup_secondary_cpu_via_init(cpu, apic_id):
                    n = self.cpuid_to_apicid.index(apic_id)
                    await self.wait_online(n, True, "do_boot_cpu: wait for callin")

    async def _release(self, n, what):
        """Parallel bring-up's second half for CPU number ``n``: wait for ALIVE, release it with
        SHOULD_ONLINE, wait for it online.  False if it did not get there."""
        apic_id = self.cpuid_to_apicid[n]
        if not await self._wait(self.data + _SYNC + n, lambda v: v >= SyncState.ALIVE,
                                "cpuhp_wait_for_sync_state(ALIVE)", apic_id):
            return False
        self._write(self.data + _SYNC + n, SyncState.SHOULD_ONLINE, 1)
        return await self.wait_online(n, True, what)

    async def wakeup_secondary_cpu_via_init(self, cpu, apic_id):
        """smpboot.c's INIT, INIT de-assert, SIPI, SIPI to one AP; False on a delivery error."""
        apic = cpu.apic
        init_udelay, pre, post = _TIMING[self.method]
        vector = TRAMPOLINE >> 12
        if self.method is BootMethod.PARALLEL:
            # before the kick, as cpuhp does: the AP may report ALIVE before the SIPIs return
            self._write(self.data + _SYNC + self.cpuid_to_apicid.index(apic_id), SyncState.KICKED, 1)
        await apic.write("ESR", 0)
        await apic.read("ESR")
        lapic = self.lapic
        await apic.send_ipi(lapic.icr(0, DeliveryMode.INIT, apic_id, trigger=Trigger.LEVEL))
        await lapic.wait_icr_idle(cpu)
        await cpu.udelay(init_udelay)
        await apic.send_ipi(lapic.icr(0, DeliveryMode.INIT, apic_id, trigger=Trigger.LEVEL,
                                      level=Level.DEASSERT))
        await lapic.wait_icr_idle(cpu)
        await self.startup_ipi_hook(cpu, apic_id)
        for _ in range(2):
            await apic.write("ESR", 0)
            await apic.send_ipi(lapic.icr(vector, DeliveryMode.STARTUP, apic_id))
            await cpu.udelay(pre)
            await lapic.wait_icr_idle(cpu)
            await cpu.udelay(post)
            await apic.write("ESR", 0)
            accept = await apic.read("ESR") & _ACCEPT_ERRORS
            if accept:
                message = (f"APIC delivery error {accept:#x} sending SIPI to APIC ID {apic_id:#x}")
                self.boot_failures.append(message)
                target = next((c for c in self.machine.cpus if c.apic_id == apic_id), cpu)
                self.machine.fail(target, message)
                return False
        return True

    async def startup_ipi_hook(self, cpu, apic_id):
        """Linux 2.6.2x's ``startup_ipi_hook(phys_apicid, start_eip, start_esp)`` between INIT
        de-assert and the SIPIs: nothing on native hardware (a paravirtual kernel overrides it,
        :class:`apwake.sim.models.cpu.paravirt.VmiKernel`)."""

    async def _boot_mailbox(self, cpu, aps):
        """acpi_parse_mp_wake, then acpi_wakeup_cpu and the callin wait per AP (serial: TDX
        guests disable parallel bring-up)."""
        length = self._read(MADT_ADDRESS, 4)
        self.mp_wake = parse_mp_wake(self.memory.read(MADT_ADDRESS + 4, length))
        if self.mp_wake is None or self.mp_wake.mailbox_address == 0:
            message = "No MADT mailbox: cannot bringup secondary CPUs. Booting with kexec?"
            self.boot_failures.append(message)
            cpu.fail(message)
            return
        if not self.mp_wake.can_reset and self.parking_page is None:
            # acpi_mp_disable_offlining: no way back, so hide the mailbox from any next kernel
            # (the running kernel keeps its cached copy; the checksum is not updated).
            self.memory.write_int(self._madt_mailbox_address(), 0, 8, writer=self.owner)
            cpu.note("MADT mailbox v0: offlining disabled, MADT mailbox address zeroed")
        for apic_id in aps:
            if await self.acpi_wakeup_cpu(cpu, apic_id, TRAMPOLINE):
                n = self.cpuid_to_apicid.index(apic_id)
                await self.wait_online(n, True, "do_boot_cpu: wait for callin")

    async def acpi_wakeup_cpu(self, cpu, apic_id, start_ip):
        """ApicId, WakeupVector, then Command with release ordering, then spin on Command.
        Linux spins forever on purpose; the model gives up after the callin timeout and says
        so, standing in for the scenario watchdog."""
        base = self.mp_wake.mailbox_address
        mailbox = self.machine.mailbox_port(base, apic_id, writer=self.owner)
        await mailbox.write32(base + OFFSETS["apic_id"], apic_id)
        await mailbox.write64(base + OFFSETS["wakeup_vector"], start_ip)
        await mailbox.write16(base + OFFSETS["command"], Command.WAKEUP.value)
        cpu.where = f"acpi_wakeup_cpu: spinning on Command for APIC ID {apic_id:#x}"
        if not await mailbox.wait_command_clear(base, self.machine.scaled_ns(self.callin_timeout_us * 1000)):
            self._report_stuck(apic_id, f"acpi_wakeup_cpu: Command for APIC ID {apic_id:#x} at "
                                        f"{base:#x} never acknowledged (Linux would spin forever)")
            return False
        return True

    async def _boot_broadcast(self, cpu, aps):
        apic = cpu.apic
        await apic.write("ESR", 0)
        await apic.send_ipi(self.lapic.icr(0, DeliveryMode.INIT, shorthand=Shorthand.ALL_EXCLUDING_SELF,
                                           trigger=Trigger.LEVEL))
        await self.lapic.wait_icr_idle(cpu)
        for _ in range(2):
            await apic.send_ipi(self.lapic.icr(TRAMPOLINE >> 12, DeliveryMode.STARTUP,
                                               shorthand=Shorthand.ALL_EXCLUDING_SELF))
            await cpu.udelay(10)
            await self.lapic.wait_icr_idle(cpu)
            await cpu.udelay(10)
        for apic_id in aps:
            n = self.cpuid_to_apicid.index(apic_id)
            await self.wait_online(n, True, "wait for callin after broadcast SIPI")

    # --- the APs -------------------------------------------------------------------------------------
    async def trampoline(self, cpu):
        """Real-mode entry of an AP (trampoline_64 + secondary_startup_64 + start_secondary)."""
        cpu.where = "trampoline"
        parallel = self.method is BootMethod.PARALLEL
        if parallel:
            await self._lock_trampoline(cpu)
        if parallel or self.method is BootMethod.BROADCAST:
            apic_id = await self.lapic.read_apic_id(cpu)
            if apic_id is None:
                # 69a7386c: the xAPIC MMIO page an x2APIC kernel never maps; no IDT yet
                cpu.where = ("trampoline: read the APIC ID from the unmapped xAPIC MMIO page: "
                             "page fault with no IDT, the AP is dead")
                cpu.note("page fault reading the APIC ID: dead")
                return
        else:
            # serial bring-up hands the AP its CPU number (smpboot_control): no ID read
            apic_id = cpu.apic_id
        try:
            n = self.cpuid_to_apicid.index(apic_id)
        except ValueError:
            if parallel:
                self._write(self.data + _TRAMPOLINE_LOCK, 0, 4)
            cpu.where = "trampoline: APIC ID not in cpuid_to_apicid[], cli; hlt"
            cpu.note("unknown APIC ID: halted")
            return
        if parallel:
            self._write(self.data + _TRAMPOLINE_LOCK, 0, 4)
        # secondary_startup_64: the kernel's page tables, GDT, per-CPU base and stack
        cpu.arch = self.secondary_state(n)
        cpu.jump(self.entry + START_SECONDARY)

    async def start_secondary(self, cpu):
        """The AP's C entry: its CPU number comes from its per-CPU base (checked on entry by
        :meth:`secondary_entry`), as Linux's ``smp_processor_id()`` reads it from per-CPU data."""
        n = self.percpu_cpu(cpu.arch.value(f"{self.percpu_segment}.base"))
        parallel = self.method is BootMethod.PARALLEL
        cpu.where = f"start_secondary (CPU {n})"
        self._setup_idt(cpu)
        await self.lapic.setup_local_apic(cpu, boot_cpu=False)    # ap_starting: apic_ap_setup
        if parallel:
            self._write(self.data + _SYNC + n, SyncState.ALIVE, 1)
            cpu.note("alive")
            cpu.where = "cpuhp_ap_sync_alive: wait for SHOULD_ONLINE"
            ok = await self.memory.wait_until(self.data + _SYNC + n, 1, lambda v: v == SyncState.SHOULD_ONLINE,
                                              timeout_ns=self.machine.scaled_ns(self.callin_timeout_us * 1000))
            if not ok:
                cpu.fail(f"{cpu.name}: never released by the control CPU (SHOULD_ONLINE)")
                return
            self._write(self.data + _SYNC + n, SyncState.ONLINE, 1)
        self._write(self.data + _ONLINE + n, 1, 1)
        self.booted_once.add(n)
        cpu.note("online")
        await self._ap_idle(cpu, n)

    async def _ap_idle(self, cpu, n):
        """The AP's idle loop: sti; hlt; and play_dead when cpu_down asked for it."""
        cpu.should_die = cpu.should_stop = False     # requests of an earlier kernel are void
        cpu.sti()
        await self.lapic.setup_apic_timer(cpu)       # start_secondary: setup_percpu_clockev
        cpu.where = "idle (hlt loop)"
        while True:
            # need_resched() before the halt: work queued meanwhile runs now (its wake-up IPI
            # may have been taken already)
            await self._run_works(cpu, n)
            if cpu.should_die or cpu.should_stop:
                await cpu.local_irq_save()         # a handler in progress ends first (its EOI)
                self._write(self.data + _ONLINE + n, 0, 1)
                await self.play_dead(cpu, n)
                return
            await cpu.hlt()

    async def _idle(self, cpu, n):
        """The BSP's idle loop after smp_init: sti; hlt; running work queued on it."""
        cpu.sti()
        cpu.where = "idle (hlt loop)"
        while True:
            await self._run_works(cpu, n)
            await cpu.hlt()

    async def play_dead(self, cpu, n):
        """Where an offlined (``should_die``) or stopped (``should_stop``, kexec) AP goes."""
        if self.mp_wake is not None and self.mp_wake.can_reset:
            cpu.note("offline: play_dead" if cpu.should_die else "stop_this_cpu: back to firmware")
            # acpi_mp_play_dead, interrupts off: asm_acpi_mp_play_dead switches to the identity
            # map (acpi_mp_pgd), clears CR4.PGE, and jumps to ResetVector
            cpu.cli()
            cpu.arch.cr3 = self.data + _IDENTITY_PGD
            cpu.arch.cr4 &= ~CR4["PGE"]
            await cpu.return_to_firmware()
        if cpu.should_stop and self.parking_loop is not None:
            cpu.note(f"stop_this_cpu: into {self.name}'s parking loop")
            cpu.cli()                        # stop_this_cpu: local_irq_disable() first
            cpu.jump(self.parking_loop.code)
        if cpu.should_die:
            # native_play_dead: interrupts off, halted until an INIT restarts it (cpu_up)
            cpu.note("offline: play_dead (cli; hlt until INIT)")
            cpu.where = "offline: hlt_play_dead"
            cpu.cli()
            return
        cpu.note("stop_this_cpu: cli; hlt (no way back to firmware)")
        cpu.where = f"halted by {self.name}'s stop_this_cpu"
        cpu.cli()

    # --- CPU offline / online (mailbox) ----------------------------------------------------------
    async def cpu_down(self, cpu, n):
        """Offline CPU number ``n`` from ``cpu`` under the hotplug lock: the hotplug teardown
        callbacks on it (last state first; one that fails stops the offline, and the states
        already torn down are set up again), then play_dead.  Returns None or the error string
        (-EOPNOTSUPP under the mailbox version-0 policy, docs/spec/mpwk.md §4; a callback's
        error)."""
        if self.mp_wake is not None and not self.mp_wake.can_reset:
            return "-EOPNOTSUPP: CPU offlining is disabled (MADT mailbox version 0, no ResetVector)"
        await self._cpus_write_lock(cpu)
        try:
            return await self._cpu_down(cpu, n)
        finally:
            self._cpus_write_unlock()

    async def _cpu_down(self, cpu, n):
        apic_id = self.cpuid_to_apicid[n]
        record = {"op": "cpu_down", "cpu": n, "apic_id": apic_id, "callbacks": []}
        self.hotplug_log.append(record)
        error = await self._cpuhp_run(cpu, n, "teardown", record)
        if error is not None:
            record["result"] = error
            return error
        target = self._model_of(apic_id)
        target.should_die = True
        await self.smp_call_function_single(cpu, n, ("cpu_down", n))   # kick it out of hlt
        if not await self.wait_online(n, False, "cpu_down: wait for play_dead"):
            record["result"] = f"CPU {n} did not go offline"
            return record["result"]
        result = await self.acpi_mp_cpu_die(cpu, apic_id, n) if self.mp_wake is not None else None
        record["result"] = result or "ok"
        return result

    async def acpi_mp_cpu_die(self, cpu, apic_id, n):
        """Test command to the AP, then about 1 s (guest time) for its acknowledgement."""
        base = self.mp_wake.mailbox_address
        mailbox = self.machine.mailbox_port(base, apic_id, writer=self.owner)
        await mailbox.write32(base + OFFSETS["apic_id"], apic_id)
        await mailbox.write16(base + OFFSETS["command"], Command.TEST.value)
        if not await mailbox.wait_command_clear(base, self.machine.scaled_ns(1_000_000 * 1000)):
            message = f"Failed to hand over CPU {n} to BIOS"
            self.machine.fail(self._model_of(apic_id), message)
            await mailbox.write16(base + OFFSETS["command"], Command.NOOP.value)
            return message
        return None

    async def kexec(self, cpu):
        """machine_shutdown for kexec from ``cpu``: stop every other online CPU (on a version-1
        mailbox they go back to firmware, into this kernel's parking loop under plan B, otherwise
        they halt in this kernel's memory)."""
        if self.parking_page is not None and self.mp_wake is not None and self.mp_wake.mailbox_address:
            self._install_parking_loop(cpu)
        for n in self.online_cpus():
            apic_id = self.cpuid_to_apicid[n]
            if apic_id == cpu.apic_id:
                continue
            self._model_of(apic_id).should_stop = True
            await self.smp_call_function_single(cpu, n, ("stop", n))
            await self.wait_online(n, False, "kexec: stop other CPUs")
        cpu.note(f"{self.name}: kexec")

    def _install_parking_loop(self, cpu):
        if self.parking_page == "kernel":
            # the mailbox in a page of our own; point the MADT entry at it (the entry keeps its
            # version: plan B is for version 0)
            address = PARKING_PAGE
            self.memory.write_int(self._madt_mailbox_address(), address, 8, writer=self.owner)
        else:
            address = self.mp_wake.mailbox_address
        self.parking_loop = ParkingLoop(self.memory, address, owner=self.owner).install()
        self.machine.parking_loops.append(self.parking_loop)
        cpu.note(f"plan B: parking loop installed, mailbox at {address:#x}"
                 + (" (MADT patched)" if self.parking_page == "kernel" else " (the firmware's page)"))

    async def cpu_up(self, cpu, n):
        """Online CPU number ``n`` from ``cpu`` under the hotplug lock: wake it (the mailbox, or
        INIT-SIPI-SIPI and, in parallel bring-up, the release from ALIVE), wait for it, then the
        hotplug startup callbacks on it in state order; one that fails takes it down again (the
        states already set up are torn down) and is the result.  Returns None or the error
        string."""
        await self._cpus_write_lock(cpu)
        try:
            return await self._cpu_up(cpu, n)
        finally:
            self._cpus_write_unlock()

    async def _cpu_up(self, cpu, n):
        apic_id = self.cpuid_to_apicid[n]
        record = {"op": "cpu_up", "cpu": n, "apic_id": apic_id, "callbacks": []}
        self.hotplug_log.append(record)
        if self.mp_wake is not None:
            if not await self.acpi_wakeup_cpu(cpu, apic_id, TRAMPOLINE):
                record["result"] = f"CPU {n} was not woken"
                return record["result"]
        elif not await self.wakeup_secondary_cpu_via_init(cpu, apic_id):
            record["result"] = f"CPU {n}: APIC delivery error"
            return record["result"]
        if self.method is BootMethod.PARALLEL:
            online = await self._release(n, "cpu_up: wait for CPU online")
        else:
            online = await self.wait_online(n, True, "cpu_up: wait for callin")
        if not online:
            record["result"] = f"CPU {n} did not come online"
            return record["result"]
        error = await self._cpuhp_run(cpu, n, "startup", record)
        if error is not None:
            # the rollback: the CPU goes back down (its teardowns already ran in _cpuhp_run)
            target = self._model_of(apic_id)
            target.should_die = True
            await self.smp_call_function_single(cpu, n, ("cpu_up rollback", n))
            await self.wait_online(n, False, "cpu_up rollback: wait for play_dead")
            record["result"] = error
            return error
        record["result"] = "ok"
        return None

    # --- CPU hotplug callbacks and the hotplug lock (kernel/cpu.c) --------------------------------
    def cpuhp_setup_state(self, name, startup, teardown=None):
        """Register hotplug state ``name`` after the ones registered before (CPUHP_AP_ONLINE_DYN
        order).  Unlike Linux's cpuhp_setup_state, this does not call ``startup`` on the CPUs
        already online: the caller does what its kernel version does."""
        self.cpuhp_states.append((name, startup, teardown))

    async def _cpuhp_run(self, cpu, n, direction, record):
        """Run every state's ``direction`` callback on CPU number ``n`` (each in process context
        on that CPU, as the CPU's hotplug thread runs it), in order for startup and reversed for
        teardown; on a failure undo the states already done.  None, or the error string."""
        states = self.cpuhp_states if direction == "startup" else self.cpuhp_states[::-1]
        done = []
        for name, startup, teardown in states:
            callback = startup if direction == "startup" else teardown
            if callback is None:
                continue
            result = await self.smp_call_on_cpu(cpu, n, lambda c, f=callback: f(c, n),
                                                f"cpuhp {name} {direction}")
            if result is None:              # it did not run (reported by wait_call)
                result = -_errno.ETIMEDOUT
            record["callbacks"].append({"state": name, "direction": direction,
                                        "result": errno_text(result)})
            if result:
                for undo_name, undo_startup, undo_teardown in reversed(done):
                    undo = undo_teardown if direction == "startup" else undo_startup
                    if undo is not None:
                        undone = await self.smp_call_on_cpu(cpu, n, lambda c, f=undo: f(c, n),
                                                            f"cpuhp {undo_name} rollback")
                        record["callbacks"].append({
                            "state": undo_name, "direction": "rollback",
                            "result": errno_text(-_errno.ETIMEDOUT if undone is None else undone)})
                return f"{name} {direction} on CPU {n} failed: {errno_text(result)}"
            done.append((name, startup, teardown))
        return None

    async def cpus_read_lock(self):
        """cpus_read_lock(): wait while cpu_up or cpu_down holds the hotplug lock, then hold it
        for reading (any number of readers)."""
        while self._hotplug_writer:
            await self._hotplug_event.wait()
        self.cpus_read_held += 1

    def cpus_read_unlock(self):
        self.cpus_read_held -= 1
        self._hotplug_changed()

    async def _cpus_write_lock(self, cpu):
        """cpu_up and cpu_down hold the hotplug lock for writing: one at a time, and no reader."""
        where = cpu.where
        while self._hotplug_writer or self.cpus_read_held:
            cpu.where = "cpu_hotplug_lock: wait for the holders"
            await self._hotplug_event.wait()
        cpu.where = where
        self._hotplug_writer = True

    def _cpus_write_unlock(self):
        self._hotplug_writer = False
        self._hotplug_changed()

    def _hotplug_changed(self):
        """Wake everyone waiting on the hotplug lock (each rechecks)."""
        self._hotplug_event.set()
        self._hotplug_event = Event()

    async def _lock_trampoline(self, cpu):
        """``lock bts`` on tr_lock: spin (event-driven) until the bit is ours."""
        while self._read(self.data + _TRAMPOLINE_LOCK, 4):
            cpu.where = "trampoline: spinning on tr_lock"
            await self.memory.wait_until(self.data + _TRAMPOLINE_LOCK, 4, lambda v: v == 0,
                                         timeout_ns=self.machine.scaled_ns(self.callin_timeout_us * 1000))
        self._write(self.data + _TRAMPOLINE_LOCK, 1, 4)

    # --- call-function IPIs --------------------------------------------------------------------------
    def _setup_idt(self, cpu):
        cpu.idt[CALL_FUNCTION_VECTOR] = self._call_function_interrupt
        cpu.idt[CALL_FUNCTION_MANY_VECTOR] = self._call_function_interrupt
        cpu.idt[RESCHEDULE_VECTOR] = self._reschedule_interrupt
        cpu.idt[NMI_VECTOR] = self._nmi

    # --- NMI (arch/x86/kernel/nmi.c) ----------------------------------------------------------------
    def register_nmi_handler(self, handler):
        """Add ``async def handler(cpu)`` to the handlers every NMI runs (NMI_LOCAL)."""
        self.nmi_handlers.append(handler)

    async def _nmi(self, cpu, vector):
        """exc_nmi: count the NMI for this CPU, then nmi_handle runs every registered handler.
        No EOI: an NMI never enters the ISR."""
        self.nmi_count[cpu.apic_id] = self.nmi_count.get(cpu.apic_id, 0) + 1
        for handler in self.nmi_handlers:
            await handler(cpu)

    async def smp_call_function_single(self, cpu, target_cpu, entry):
        """Queue ``entry`` for ``target_cpu`` and send the IPI (Linux waits for ICR idle
        before writing it).  ``entry``: a :class:`CallFunction` (run by the target) or any
        value (recorded in :attr:`calls_done`)."""
        self.calls.setdefault(target_cpu, []).append(entry)
        if isinstance(entry, CallFunction):
            purpose = entry.purpose
        elif isinstance(entry, tuple) and entry and isinstance(entry[0], str):
            purpose = entry[0]              # ("cpu_down", n): a kick out of hlt
        else:
            purpose = "call function"
        await self._send_ipi(cpu, target_cpu, CALL_FUNCTION_VECTOR, purpose)

    async def _send_ipi(self, cpu, target_cpu, vector, purpose):
        self.ipis[purpose] = self.ipis.get(purpose, 0) + 1
        await self.lapic.wait_icr_idle(cpu)
        await cpu.apic.send_ipi(self.lapic.icr(vector, DeliveryMode.FIXED,
                                               self.cpuid_to_apicid[target_cpu], logical=True))

    async def wait_call(self, cpu, target_cpu, call):
        """csd_lock_wait: wait for ``call`` to have run on ``target_cpu``; after
        :data:`CSD_TIMEOUT_US` of guest time report the CPU that did not run it (naming where
        it is) and give up: False."""
        try:
            await with_timeout(call.done.wait(), self.machine.scaled_ns(CSD_TIMEOUT_US * 1000), "ns")
            return True
        except SimTimeoutError:
            target = self._model_of(self.cpuid_to_apicid[target_cpu])
            self.machine.fail(target, f"csd: Detected non-responsive CSD lock on CPU#{target_cpu}: "
                                      f"{call.purpose} not run within {CSD_TIMEOUT_US / 1e6:g} s "
                                      f"(guest time); it is {target.position}")
            return False

    def ipi_shorthand(self):
        """apic_use_ipi_shorthand: Linux sends a call-function IPI to every other online CPU as
        one all-but-self IPI once every present CPU has been booted once (SMT siblings parked
        by nosmt included: they are booted once for that reason)."""
        return len(self.booted_once | {0}) == len(self.cpuid_to_apicid)

    async def on_each_cpu(self, cpu, func, purpose):
        """``on_each_cpu(func, info, wait=1)`` from ``cpu``: a call-function IPI to every other
        online CPU (``func`` runs in its handler, interrupts off), ``func`` on ``cpu`` itself
        with interrupts off, then wait for every other CPU's call.  The IPI is one all-but-self
        shorthand when :meth:`ipi_shorthand` allows and the targets are every other online CPU
        (``native_send_call_func_ipi``), else one physical IPI per target
        (``default_send_IPI_mask_sequence_phys``).  Returns ``{cpu number: result}``; a CPU
        whose call did not run is missing (and reported, :meth:`wait_call`)."""
        me = self.cpuid_to_apicid.index(cpu.apic_id)
        calls = {n: CallFunction(func, purpose) for n in self.online_cpus() if n != me}
        if calls and self.ipi_shorthand():
            for n, call in calls.items():
                self.calls.setdefault(n, []).append(call)
            self.ipis[purpose] = self.ipis.get(purpose, 0) + 1
            await self.lapic.wait_icr_idle(cpu)
            await cpu.apic.send_ipi(self.lapic.icr(CALL_FUNCTION_MANY_VECTOR, DeliveryMode.FIXED,
                                                   shorthand=Shorthand.ALL_EXCLUDING_SELF))
        else:
            for n, call in calls.items():
                await self.smp_call_function_single(cpu, n, call)
        flags = await cpu.local_irq_save()
        results = {me: await func(cpu)}
        cpu.local_irq_restore(flags)
        for n, call in calls.items():
            if await self.wait_call(cpu, n, call):
                results[n] = call.result
        return dict(sorted(results.items()))

    async def smp_call_on_cpu(self, cpu, target_cpu, func, purpose):
        """``smp_call_on_cpu``: run ``func`` on CPU number ``target_cpu`` in process context
        (a kworker bound to it, interrupts on) and wait for it; the target is woken by a
        reschedule IPI.  On ``cpu`` itself it runs at once.  Returns its result, or None
        (reported) when it did not run within :data:`CSD_TIMEOUT_US`."""
        if self.cpuid_to_apicid[target_cpu] == cpu.apic_id:
            return await func(cpu)
        work = CallFunction(func, purpose)
        self.works.setdefault(target_cpu, []).append(work)
        await self._send_ipi(cpu, target_cpu, RESCHEDULE_VECTOR, "reschedule")
        return work.result if await self.wait_call(cpu, target_cpu, work) else None

    async def _run_works(self, cpu, n):
        """The CPU's kworkers, after it wakes: each queued work in process context."""
        queue = self.works.get(n, [])
        while queue:
            work = queue.pop(0)
            where = cpu.where
            cpu.where = f"kworker: {work.purpose}"
            await work.run(cpu)
            cpu.where = where

    async def _call_function_interrupt(self, cpu, vector):
        """Drain this CPU's queue: one IPI may stand for several entries (IRR merges).  A
        :class:`CallFunction` runs here, in the handler, interrupts off."""
        n = self.cpuid_to_apicid.index(cpu.apic_id)
        queue = self.calls.get(n, [])
        while queue:
            entry = queue.pop(0)
            if isinstance(entry, CallFunction):
                await entry.run(cpu)
            self.calls_done.append((n, entry))
            self.call_ran.set()
        await cpu.apic.write("EOI", 0)

    async def _reschedule_interrupt(self, cpu, vector):
        """scheduler_ipi: nothing but the wake-up; the idle loop then runs the queued work."""
        await cpu.apic.write("EOI", 0)
