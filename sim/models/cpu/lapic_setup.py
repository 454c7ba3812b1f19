"""Linux's local APIC set-up on each CPU, after arch/x86/kernel/apic/apic.c.

* ``setup_local_APIC``: TPR 0, the APIC software-enabled with the spurious vector 0xFF, LINT0 as
  ExtINT masked (an I/O APIC system), LINT1 as NMI, unmasked on the boot CPU only, then
  ``lapic_setup_esr``: the error LVT on ``ERROR_APIC_VECTOR`` and the ESR cleared.
* The local APIC timer as Linux's clock event device: ``setup_APIC_timer`` on the boot CPU and
  ``setup_secondary_APIC_clock`` on each AP program the next event one jiffy (HZ = 1000) ahead,
  through IA32_TSC_DEADLINE (``lapic_next_deadline``), a one-shot count with divide-by-16
  (``lapic_next_event``, ``APIC_DIVISOR``) or a periodic count (``lapic_timer_set_periodic``).
  Guest time is scaled as every guest delay is (:meth:`apwake.sim.models.cpu.machine.Machine.scaled_ns`);
  the timer counts fabric clock cycles, so the count is that scaled time in cycles.
* After its first tick a CPU stops the tick, as an idle CPU does under NO_HZ
  (``tick_nohz_idle_stop_tick``): exactly one timer interrupt per CPU and kernel, which the
  bring-up scenarios check (:func:`apwake.sim.scenarios.boot.check_ticks`).
* ``error_interrupt`` (``ERROR_APIC_VECTOR``): reads the ESR the way Linux does (write, then
  read) and records "APIC error on CPU n" with the bits, in the timeline and in ``errors``.
* x2APIC, after arch/x86/kernel/apic/apic.c and x2apic_phys.c/x2apic_cluster.c:
  ``check_x2apic`` on the boot CPU finds whether the firmware left it in x2APIC mode ("x2apic:
  enabled by BIOS, switching to x2apic ops"); the kernel then runs in x2APIC mode, or enables it
  itself (``x2apic`` "phys" or "cluster"), or turns it off ("off", ``nox2apic``:
  ``__x2apic_disable``, through the disabled state as the SDM requires).  ``x2apic_setup`` puts
  each AP in the kernel's mode.  In x2APIC mode the APIC ID is the 32-bit x2APIC ID MSR, the ICR
  is one 64-bit WRMSR with the 32-bit destination, and there is no delivery-status bit to wait
  on.  Physical mode (what a guest without interrupt remapping gets: ``try_to_enable_x2apic``
  sets ``x2apic_phys``) sends to the x2APIC ID, cluster mode to the logical ID (cluster
  ``id[19:4]`` in bits 31:16, ``1 << id[3:0]`` below).
* The APIC ID an AP reads in the trampoline (parallel bring-up, Linux 6.5 head_64.S
  ``.Lread_apicid``): the x2APIC ID MSR when the AP's IA32_APIC_BASE says x2APIC, else the xAPIC
  ID register.  Firmware that hands over the BSP in x2APIC mode and the APs in xAPIC mode (a
  Dell PowerEdge T340, Linux commit 69a7386c "x86/smpboot/64: Handle X2APIC BIOS inconsistency
  gracefully") made such an AP read the xAPIC MMIO page, which an x2APIC kernel never maps:
  the page fault, with no IDT yet, kills the AP silently and the BSP's wait times out.  The fix
  (``fixed=True``) enables x2APIC on the AP first when the kernel runs in x2APIC mode.  Serial
  bring-up hands the AP its CPU number instead, so it never met the fault.
* The "auto" choice follows the firmware; Linux would also enable x2APIC by itself in a guest
  whose hypervisor offers it (``try_to_enable_x2apic``), which apwake leaves to
  ``x2apic="phys"``.
"""

from apwake.rtl.lapic.layouts import (XAPIC_MAX_ID, MSR_IA32_APIC_BASE, MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE,
                                      TIMER_DIVIDE_VALUES, ApicBase, DeliveryMode, DestMode, Lvt,
                                      TimerMode)
from apwake.sim.harness.codec import pack, unpack
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.model import x2apic_ldr

__all__ = ["LocalApicSetup", "LOCAL_TIMER_VECTOR", "ERROR_APIC_VECTOR", "SPURIOUS_APIC_VECTOR",
           "TIMER_MODES", "HZ", "APIC_DIVISOR", "X2APIC_MODES"]

#: arch/x86/include/asm/irq_vectors.h
LOCAL_TIMER_VECTOR = 0xEC
ERROR_APIC_VECTOR = 0xFE
SPURIOUS_APIC_VECTOR = 0xFF
HZ = 1000
#: apic.c: the timer runs divided by 16 outside TSC-deadline mode
APIC_DIVISOR = 16
#: how the clock event device is programmed: TSC-deadline (what Linux picks when the CPU has
#: it), one-shot count, periodic count
TIMER_MODES = ("deadline", "oneshot", "periodic")
#: the kernel's x2APIC choice: follow the firmware ("auto": x2APIC, physical, when the boot CPU
#: arrives in it), "off" (nox2apic), or enable it itself in physical or cluster mode
X2APIC_MODES = ("auto", "off", "phys", "cluster")


class LocalApicSetup:
    """One kernel's local APIC code: set-up, timer and error interrupts, per CPU.

    Parameters
    ----------
    machine : apwake.sim.models.cpu.machine.Machine
        For the time scale and failures.
    timer_mode : str
        One of :data:`TIMER_MODES`.
    x2apic : str
        One of :data:`X2APIC_MODES`.
    fixed : bool
        False: parallel bring-up without Linux commit 69a7386c (module docstring).

    Attributes
    ----------
    ticks : dict
        APIC ID -> local timer interrupts handled.
    errors : list of (int, int)
        ``(APIC ID, ESR)`` of every error interrupt.

    Raises
    ------
    ValueError
        ``timer_mode`` or ``x2apic`` is not one of its choices.
    """

    def __init__(self, machine, timer_mode="deadline", *, x2apic="auto", fixed=True):
        if timer_mode not in TIMER_MODES:
            raise ValueError(f"timer_mode must be one of {TIMER_MODES}, not {timer_mode!r}")
        if x2apic not in X2APIC_MODES:
            raise ValueError(f"x2apic must be one of {X2APIC_MODES}, not {x2apic!r}")
        self.machine = machine
        self.timer_mode = timer_mode
        self.x2apic = x2apic
        self.fixed = fixed
        #: the kernel runs its APICs in x2APIC mode (decided by :meth:`check_x2apic`)
        self.x2apic_mode = False
        self.ticks = {}
        self.errors = []

    # --- x2APIC -------------------------------------------------------------------------------
    async def _apic_mode(self, cpu):
        base = unpack(ApicBase, await cpu.apic.rdmsr(MSR_IA32_APIC_BASE))
        return bool(base["enable"] and base["extd"])

    async def _x2apic_disable(self, cpu):
        """__x2apic_disable: x2APIC -> disabled -> xAPIC (a direct step is #GP)."""
        base = await cpu.apic.rdmsr(MSR_IA32_APIC_BASE)
        await cpu.apic.wrmsr(MSR_IA32_APIC_BASE, base & ~pack(ApicBase, extd=1, enable=1))
        await cpu.apic.wrmsr(MSR_IA32_APIC_BASE, (base & ~pack(ApicBase, extd=1)) | pack(ApicBase, enable=1))

    async def check_x2apic(self, cpu):
        """On the boot CPU before its APIC is set up: find the firmware's mode and settle the
        kernel's (x2apic_mode)."""
        by_bios = await self._apic_mode(cpu)      # the firmware left the BSP in x2APIC
        if self.x2apic == "off" and by_bios and cpu.apic_id > XAPIC_MAX_ID:
            # setup_nox2apic: an ID the xAPIC cannot hold keeps the kernel in x2APIC mode
            self.x2apic_mode = True
            cpu.note(f"Apicid: {cpu.apic_id:08x}, cannot enforce nox2apic")
        elif self.x2apic == "off":
            if by_bios:
                await self._x2apic_disable(cpu)
                cpu.note("x2apic: disabled (nox2apic)")
            self.x2apic_mode = False
        elif self.x2apic in ("phys", "cluster"):
            if not by_bios:
                await cpu.apic.enter_x2apic()
            self.x2apic_mode = True
            cpu.note(f"x2apic: enabled ({self.x2apic})")
        elif by_bios:
            self.x2apic_mode = True
            cpu.note("x2apic: enabled by BIOS, switching to x2apic ops")
        else:
            self.x2apic_mode = False

    async def x2apic_setup(self, cpu):
        """x2apic_setup on an AP: into the kernel's mode (an AP the firmware left in x2APIC goes
        back to xAPIC when the kernel runs xAPIC)."""
        in_x2apic = await self._apic_mode(cpu)
        if self.x2apic_mode and not in_x2apic:
            await cpu.apic.enter_x2apic()
        elif not self.x2apic_mode and in_x2apic:
            await self._x2apic_disable(cpu)

    @property
    def cluster(self):
        return self.x2apic_mode and self.x2apic == "cluster"

    async def read_apic_id(self, cpu):
        """The APIC ID as an AP finds it in the trampoline before its APIC is set up (module
        docstring): None when the read kills the AP (an xAPIC AP under an x2APIC kernel
        without the fix)."""
        if not await self._apic_mode(cpu) and self.x2apic_mode:
            if not self.fixed:
                return None
            await cpu.apic.enter_x2apic()           # 69a7386c: STARTUP_ENABLE_X2APIC
        value = await cpu.apic.read("ID")
        return value if cpu.apic.x2apic else value >> 24

    def icr(self, vector, mode, apic_id=None, *, logical=False, **fields):
        """The 64-bit ICR value for an IPI to ``apic_id`` (None: a shorthand in ``fields``), in
        the kernel's format; ``logical`` sends to the logical ID in cluster mode."""
        if apic_id is None:
            return make_icr(vector, mode, x2apic=self.x2apic_mode, **fields)
        if logical and self.cluster:
            return make_icr(vector, mode, dest=x2apic_ldr(apic_id), dest_mode=DestMode.LOGICAL,
                            x2apic=True, **fields)
        return make_icr(vector, mode, dest=apic_id, x2apic=self.x2apic_mode, **fields)

    async def wait_icr_idle(self, cpu):
        """apic_wait_icr_idle: x2APIC has no delivery-status bit, so nothing to wait for."""
        if not self.x2apic_mode:
            await cpu.apic.wait_idle()

    def install(self, cpu):
        """Enter the timer and error handlers in ``cpu``'s IDT."""
        cpu.idt[LOCAL_TIMER_VECTOR] = self._timer_interrupt
        cpu.idt[ERROR_APIC_VECTOR] = self._error_interrupt

    async def setup_local_apic(self, cpu, *, boot_cpu):
        """setup_local_APIC + lapic_setup_esr on ``cpu`` (interrupts off); an AP is first put in
        the kernel's APIC mode (x2apic_setup, from cpu_init)."""
        apic = cpu.apic
        if not boot_cpu:
            await self.x2apic_setup(cpu)
        self.install(cpu)
        await apic.write("TPR", 0)
        await apic.write("SVR", 0x100 | SPURIOUS_APIC_VECTOR)
        await apic.write("LVT_LINT0", pack(Lvt, delivery_mode=DeliveryMode.EXTINT, mask=1))
        await apic.write("LVT_LINT1", pack(Lvt, delivery_mode=DeliveryMode.NMI, mask=not boot_cpu))
        await apic.write("LVT_ERROR", pack(Lvt, vector=ERROR_APIC_VECTOR))
        await apic.write("ESR", 0)          # "clear" twice, as lapic_setup_esr does
        await apic.write("ESR", 0)
        cpu.note("setup_local_APIC")

    def tick_cycles(self, cpu):
        """One jiffy of guest time in fabric clock cycles (at least 1)."""
        return max(1, round(self.machine.scaled_ns(1e9 / HZ) / cpu.apic.clock_ns))

    async def setup_apic_timer(self, cpu):
        """setup_APIC_timer / setup_secondary_APIC_clock: program the next tick."""
        apic = cpu.apic
        cycles = self.tick_cycles(cpu)
        if self.timer_mode == "deadline":
            await apic.write("LVT_TIMER", pack(Lvt, vector=LOCAL_TIMER_VECTOR,
                                               timer_mode=TimerMode.TSC_DEADLINE))
            tsc = await apic.rdmsr(MSR_IA32_TSC)
            await apic.wrmsr(MSR_IA32_TSC_DEADLINE, tsc + cycles)
        else:
            mode = TimerMode.PERIODIC if self.timer_mode == "periodic" else TimerMode.ONE_SHOT
            await apic.write("LVT_TIMER", pack(Lvt, vector=LOCAL_TIMER_VECTOR, timer_mode=mode))
            await apic.write("TIMER_DIVIDE", TIMER_DIVIDE_VALUES[APIC_DIVISOR])
            await apic.write("TIMER_INITIAL", max(1, cycles // APIC_DIVISOR))
        cpu.note(f"local APIC timer: next tick in 1/{HZ} s ({self.timer_mode})")

    async def _timer_interrupt(self, cpu, vector):
        """local_apic_timer_interrupt, then the idle CPU stops its tick (NO_HZ)."""
        self.ticks[cpu.apic_id] = self.ticks.get(cpu.apic_id, 0) + 1
        if self.timer_mode == "periodic":
            await cpu.apic.write("TIMER_INITIAL", 0)
        cpu.note("local timer tick")
        await cpu.apic.write("EOI", 0)

    async def _error_interrupt(self, cpu, vector):
        """error_interrupt: write then read the ESR, report the bits."""
        await cpu.apic.write("ESR", 0)
        esr = await cpu.apic.read("ESR")
        self.errors.append((cpu.apic_id, esr))
        cpu.note(f"APIC error on CPU {cpu.index}: ESR {esr:#04x}")
        await cpu.apic.write("EOI", 0)
