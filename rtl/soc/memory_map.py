"""The soft-SoC's address map, declared once: the RTL decodes it, ``firmware/build.py`` turns it
into ``soc.h`` for the C code, the tests read it from here."""

__all__ = ["RAM_BASE", "BOOT_ROM_BYTES", "UART_BASE", "UART_TX", "UART_STATUS", "LED_BASE", "LOCK_BASE",
           "APIC_BASE", "CONTROL_BASE", "CONTROL", "AP_BOOT", "MAILBOX_BASE", "AP_START",
           "MSR_BASE", "MSR_WINDOW", "SEV_LAUNCH_ADDR", "FEATURES", "TRAMPOLINE",
           "WINDOW_SIZE", "window_of"]

RAM_BASE = 0x0000_0000
#: the boot ROM: the reset entry and the AP boot stub at the bottom of the RAM block, written by
#: the FPGA configuration (the firmware image) and read-only to the cores
BOOT_ROM_BYTES = 0x80
#: where every AP core starts (picorv32's PROGADDR_RESET); its stub jumps to START_ADDR
AP_BOOT = 0x0000_0040

UART_BASE = 0x1000_0000
UART_TX = UART_BASE + 0x0          # write: send the byte in [7:0]
UART_STATUS = UART_BASE + 0x4      # read: bit 0 = busy
LED_BASE = 0x1000_1000             # write: LEDs [7:0]
#: a hardware test-and-set lock (RV32I has no atomics): read returns the old value and sets
#: it to 1, write 0 releases
LOCK_BASE = 0x1000_2000

#: the core's own local APIC, xAPIC MMIO layout (docs/spec/lapic.md §1): offset = the register's offset
APIC_BASE = 0x2000_0000
#: the core's own control window
CONTROL_BASE = 0x3000_0000
CONTROL = {"CORE_ID": 0x0,         # read: core index
           "APIC_ID": 0x4,         # read: this core's APIC ID
           "START_ADDR": 0x8,      # read: where the last SIPI (vector << 12) or mailbox
                                   # WakeupVector started this core
           "N_CORES": 0xC,         # read: number of cores
           "AP_START": 0x10,       # read: how APs start, AP_START below
           "FEATURES": 0x18,       # read: FEATURES bits below
           "RESET_VECTOR": 0x14}   # write: "jmp ResetVector": the core goes back to the
                                   # firmware's mailbox loop (held; the mailbox sees it return)
#: CONTROL FEATURES bits (what this build of the SoC has)
FEATURES = {"MSR_WINDOW": 1 << 0}
#: CONTROL AP_START values
AP_START = {"sipi": 0, "mailbox": 1, "ghcb": 2}
#: the ACPI MP wakeup mailbox page (ap_start="mailbox"); its status window follows it
MAILBOX_BASE = 0x4000_0000
#: the core's "MSR window": RV32 has no RDMSR/WRMSR.  Write the MSR number to SELECT; a write
#: of DATA_HI is WRMSR (DATA_LO written before it is the low half); a read of DATA_LO is RDMSR
#: (the high half is then in DATA_HI).  The GHCB MSR (0xC001_0130) goes to the GHCB unit
#: (ap_start="ghcb"), every other MSR to the core's local APIC (IA32_APIC_BASE, x2APIC 0x800+).
MSR_BASE = 0x5000_0000
MSR_WINDOW = {"SELECT": 0x0, "DATA_LO": 0x4, "DATA_HI": 0x8,
              "VMGEXIT": 0xC}      # write: VMGEXIT; the store completes when the hypervisor
                                   # resumes the vCPU (an AP reset hold stalls the core there)
#: the AP trampoline page: where the firmware's SIPI (vector TRAMPOLINE >> 12) starts an AP
TRAMPOLINE = 0x0000_1000
#: where a vCPU's launch state starts it (ap_start="ghcb", the first SIPI): the SIPI vector is
#: ignored under SEV-ES, the firmware's reset block is at the trampoline page
SEV_LAUNCH_ADDR = TRAMPOLINE

WINDOW_SIZE = 0x1000_0000


def window_of(address):
    """The top nibble selects the window (RAM, shared I/O, APIC, control)."""
    return address >> 28
