"""Linux's local APIC set-up on each CPU, after arch/x86/kernel/apic/apic.c.

* ``setup_local_APIC``: TPR 0, the APIC software-enabled with the spurious vector 0xFF, LINT0 as
  ExtINT masked (an I/O APIC system), LINT1 as NMI, unmasked on the boot CPU only, then
  ``lapic_setup_esr``: the error LVT on ``ERROR_APIC_VECTOR`` and the ESR cleared.
* The local APIC timer as Linux's clock event device: ``setup_APIC_timer`` on the boot CPU and
  ``setup_secondary_APIC_clock`` on each AP program the next event one jiffy (HZ = 1000) ahead,
  through IA32_TSC_DEADLINE (``lapic_next_deadline``), a one-shot count with divide-by-16
  (``lapic_next_event``, ``APIC_DIVISOR``) or a periodic count (``lapic_timer_set_periodic``).
  Guest time is scaled as every guest delay is (:meth:`apwake.sim.models.cpu.platform.Platform.scaled_ns`);
  the timer counts fabric clock cycles, so the count is that scaled time in cycles.
* After its first tick a CPU stops the tick, as an idle CPU does under NO_HZ
  (``tick_nohz_idle_stop_tick``): exactly one timer interrupt per CPU and kernel, which the
  bring-up scenarios check (:func:`apwake.sim.scenarios.boot.check_ticks`).
* ``error_interrupt`` (``ERROR_APIC_VECTOR``): reads the ESR the way Linux does (write, then
  read) and records "APIC error on CPU n" with the bits, in the timeline and in ``errors``.
"""

from apwake.rtl.lapic.layouts import (DeliveryMode, Lvt, MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE, TimerMode,
                               TIMER_DIVIDE_VALUES)
from apwake.sim.harness.codec import pack

__all__ = ["LocalApicSetup", "LOCAL_TIMER_VECTOR", "ERROR_APIC_VECTOR", "SPURIOUS_APIC_VECTOR",
           "TIMER_MODES", "HZ", "APIC_DIVISOR"]

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


class LocalApicSetup:
    """One kernel's local APIC code: set-up, timer and error interrupts, per CPU.

    Parameters
    ----------
    platform : apwake.sim.models.cpu.platform.Platform
        For the time scale and failures.
    timer_mode : str
        One of :data:`TIMER_MODES`.

    Attributes
    ----------
    ticks : dict
        APIC ID -> local timer interrupts handled.
    errors : list of (int, int)
        ``(APIC ID, ESR)`` of every error interrupt.

    Raises
    ------
    ValueError
        ``timer_mode`` is not one of :data:`TIMER_MODES`.
    """

    def __init__(self, platform, timer_mode="deadline"):
        if timer_mode not in TIMER_MODES:
            raise ValueError(f"timer_mode must be one of {TIMER_MODES}, not {timer_mode!r}")
        self.platform = platform
        self.timer_mode = timer_mode
        self.ticks = {}
        self.errors = []

    def install(self, cpu):
        """Enter the timer and error handlers in ``cpu``'s IDT."""
        cpu.idt[LOCAL_TIMER_VECTOR] = self._timer_interrupt
        cpu.idt[ERROR_APIC_VECTOR] = self._error_interrupt

    async def setup_local_apic(self, cpu, *, boot_cpu):
        """setup_local_APIC + lapic_setup_esr on ``cpu`` (interrupts off)."""
        apic = cpu.apic
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
        return max(1, round(self.platform.scaled_ns(1e9 / HZ) / cpu.apic.clock_ns))

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
