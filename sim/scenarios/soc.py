"""``soc-demo``: the soft-SoC (PicoRV32 or SERV cores on the APIC fabric) runs its firmware.

Registered like the CPU-model scenarios so that ``apwake list`` and ``apwake run soc-demo
--help`` treat it alike; it has no Python body: :mod:`apwake.sim.scenarios.soc_entry` is its cocotb module, and
its run settings differ (no timeline, no guest delays to scale, at most 8 cores).
"""

from dataclasses import replace

from apwake.rtl.lapic.register_file import STORAGE_CHOICES
from apwake.rtl.soc.cores import CORES, DEFAULT_CORE

from .registry import scenario
from .options import CPUS, GATE_LEVEL, JSON, WAVES, Option, OptionError

__all__ = ["AP_START", "CORE", "BOARD_OPTIONS", "SOC_RUN_OPTIONS", "SOC_MAX_CPUS"]

#: the firmware keeps the online cores in one 32-bit mask (firmware/main.c); the LEDs show
#: the first 8
SOC_MAX_CPUS = 32
SOC_RUN_OPTIONS = (replace(CPUS, maximum=SOC_MAX_CPUS, help="cores (--core says which)"), WAVES, JSON,
                   GATE_LEVEL)
AP_START = Option("ap_start", str, "sipi", "how the APs start: they wait for SIPI; or are parked "
                  "on the MP wakeup mailbox (wakeup, offline/online and kexec demo); or start "
                  "SEV-ES style through the GHCB MSR unit (negotiation, AP reset hold); or in a "
                  "state the BSP gives the start-context unit (each AP at its EIP with its stack: "
                  "START, or SET_INITIAL_AP_STATE and INIT-SIPI)",
                  choices=("sipi", "mailbox", "ghcb", "context"), metavar="HOW", field=None)
CORE = Option("core", str, DEFAULT_CORE, "the RISC-V core every CPU is: PicoRV32, or SERV (bit-serial: "
              "a fraction of the LUTs, several times the cycles; apwake.rtl.soc.cores)",
              choices=tuple(CORES), metavar="CORE", field=None)

#: what the board builds leave out to fit (`apwake build`'s options of the same names), so that
#: a board's configuration runs in simulation as it is built
BOARD_OPTIONS = (
    Option("apic_storage", str, "flops", "where the APICs keep their storage-only registers: "
           "flip-flops or one memory each (rtl/lapic/register_file.py)", choices=STORAGE_CHOICES,
           metavar="WHERE", field=None),
    Option("no_x2apic", bool, False, "APICs without x2APIC mode (EXTD is #GP; the firmware stays "
           "in xAPIC mode)", field=None),
    Option("no_msr_window", bool, False, "no MSR window (the x2APIC and GHCB MSRs are out of the "
           "cores' reach, as on the iCEBreaker build); not with --ap-start ghcb", field=None),
    Option("no_local_interrupts", bool, False, "APICs without their local sources (timer, "
           "LINT0/1, error LVT, TSC MSRs), as on the iCEBreaker build", field=None),
    Option("pipelined_fabric", bool, False, "the IPI fabric pipelined (an IPI takes five "
           "cycles from grant to delivery), as on the large ULX3S builds", field=None),
)


def _check(values):
    if values["ap_start"] != "sipi" and values["cpus"] < 2:
        raise OptionError(f"--cpus must be 2 to {SOC_MAX_CPUS} with --ap-start "
                          f"{values['ap_start']} (an AP to start), not {values['cpus']}")
    if values["ap_start"] == "ghcb" and values["no_msr_window"]:
        raise OptionError("--ap-start ghcb needs the MSR window (the GHCB MSR is reached "
                          "through it): leave out --no-msr-window")


scenario("soc-demo", "the soft-SoC (PicoRV32 or SERV cores + APIC fabric) runs its firmware: the "
                     "BSP wakes each AP (--ap-start: INIT-SIPI-SIPI, the MP wakeup mailbox, the "
                     "GHCB MSR protocol or a carried start state); prints the UART transcript",
         system="soc", options=(AP_START, CORE, *BOARD_OPTIONS), run_options=SOC_RUN_OPTIONS,
         check=_check)(None)
