"""The soft-SoC's address map as data (:mod:`apwake.rtl.lib.registers`), declared once: the RTL
decodes it (:mod:`apwake.rtl.soc`), the exporter (``python -m apwake.firmware.export``) writes the
firmware's ``soc_regs.h``, ``link.ld``'s MEMORY block and ``docs/REGISTERS.md`` from it, the tests
read it from here.

:data:`SOC_MAP` is the description; the constants below (``UART_TX``, ``CONTROL``, ...) are taken
from it for the modules that want one address.
"""

from apwake.rtl.lapic.registers import XAPIC_MAP
from apwake.rtl.lib.registers import (AddressMap, Access, Field, MemoryRegion, Register, RegisterMap,
                                      Window)
from apwake.rtl.mpwk_mailbox.layouts import PAGE_SIZE
from apwake.rtl.mpwk_mailbox.registers import PAGE_MAP, STATUS_MAP
from apwake.rtl.start_context.layouts import LaunchKind, StartOp

__all__ = ["SOC_MAP", "IO_MAP", "CONTROL_MAP", "MSR_WINDOW_MAP", "START_MAP",
           "RAM_BASE", "BOOT_ROM_BYTES", "FIRMWARE_RAM_BYTES", "UART_BASE", "UART_TX", "UART_STATUS",
           "LED_BASE", "LOCK_BASE", "APIC_BASE", "CONTROL_BASE", "CONTROL", "AP_BOOT", "MAILBOX_BASE",
           "AP_START", "MSR_BASE", "MSR_WINDOW", "START_BASE", "START_WINDOW", "SEV_LAUNCH_ADDR", "FEATURES",
           "TRAMPOLINE", "WINDOW_SIZE", "UNDECODED_BASE", "window_of"]

#: address bits inside a window: the top nibble selects it
_WINDOW_BITS = 28
WINDOW_SIZE = 1 << _WINDOW_BITS

RAM_BASE = 0x0000_0000
#: the boot ROM: the reset entry and the AP boot stub at the bottom of the RAM block, written by
#: the FPGA configuration (the firmware image) and read-only to the cores
BOOT_ROM_BYTES = 0x80
#: the RAM every build has (the iCEBreaker's 8 KiB): what the firmware is linked into
FIRMWARE_RAM_BYTES = 0x2000
#: where every AP core starts (picorv32's PROGADDR_RESET); its stub loads START_SP into sp (unless 0)
#: and jumps to START_ADDR
AP_BOOT = 0x0000_0040
#: the AP trampoline page: where the firmware's SIPI (vector TRAMPOLINE >> 12) starts an AP
TRAMPOLINE = 0x0000_1000
#: where a vCPU's launch state starts it (ap_start="ghcb", the first SIPI): the SIPI vector is
#: ignored under SEV-ES, the firmware's reset block is at the trampoline page
SEV_LAUNCH_ADDR = TRAMPOLINE

UART_BASE = 0x1000_0000
APIC_BASE = 0x2000_0000
CONTROL_BASE = 0x3000_0000
MAILBOX_BASE = 0x4000_0000
MSR_BASE = 0x5000_0000
START_BASE = 0x6000_0000

#: CONTROL AP_START values
AP_START = {"sipi": 0, "mailbox": 1, "ghcb": 2, "context": 3}

IO_MAP = RegisterMap(
    "io", UART_BASE, WINDOW_SIZE, [
        Register("UART_TX", 0x0, [Field("data", 8, Access.WS, doc="the byte to send (the store waits while busy)")],
                 doc="UART transmitter (8N1)"),
        Register("UART_STATUS", 0x4, [Field("busy", 1, Access.R, doc="a byte is being sent")],
                 doc="UART status"),
        Register("LEDS", 0x1000, [Field("leds", 8, Access.RW)], doc="the board's LEDs"),
        Register("LOCK", 0x2000, [Field("locked", 1, Access.RSW,
                                        doc="a read returns the old value and sets it (test and set); "
                                            "a write of 0 releases")],
                 doc="hardware test-and-set lock (RV32I has no atomics)"),
    ],
    prefix="SOC_IO", doc="Shared I/O: the UART, the LEDs and the lock; other addresses read 0.")

CONTROL_MAP = RegisterMap(
    "control", CONTROL_BASE, 0x100, [
        Register("CORE_ID", 0x00, access=Access.R, reset_doc="the core's index", doc="this core's index"),
        Register("APIC_ID", 0x04, access=Access.R, reset_doc="the core's APIC ID", doc="this core's APIC ID"),
        Register("START_ADDR", 0x08, access=Access.R,
                 doc="where the last SIPI (vector << 12), mailbox WakeupVector, SEV-ES launch or carried "
                     "context (its EIP) started this core"),
        Register("N_CORES", 0x0C, access=Access.R, reset_doc="the number of cores", doc="number of cores"),
        Register("AP_START", 0x10, access=Access.R, reset_doc="the build's ap_start",
                 doc="how APs start: " + ", ".join(f"{v} {k}" for k, v in AP_START.items())),
        Register("RESET_VECTOR", 0x14, access=Access.WS,
                 doc="a write is \"jmp ResetVector\": an AP goes back to the firmware's mailbox loop "
                     "(held; the mailbox sees it return); ignored from the BSP"),
        Register("FEATURES", 0x18, [Field("msr_window", 1, Access.R, doc="the MSR window exists"),
                                    Field("x2apic", 1, Access.R, lsb=1,
                                          doc="the APICs have x2APIC mode (LocalApic x2apic_support); "
                                              "software reaches it only through the MSR window")],
                 reset_doc="the build's features", doc="what this build of the SoC has"),
        Register("START_SP", 0x1C, access=Access.R,
                 doc="the stack pointer the last start gave this core (ap_start=\"context\": the carried "
                     "ESP); 0: the AP boot stub sets the core's own stack (below)"),
        Register("RAM_BYTES", 0x20, access=Access.R, reset_doc="the build's RAM size",
                 doc="bytes of RAM (from RAM_BASE)"),
        Register("STACK_BYTES", 0x24, access=Access.R, reset_doc="the build's stack size",
                 doc="bytes of RAM each core's stack has at the top: core i's sp (set by the firmware's "
                     "entry code) is RAM_BASE + RAM_BYTES - i * STACK_BYTES"),
    ],
    prefix="SOC_CONTROL", doc="Each core's own control window (the same addresses, per-core values).")

MSR_WINDOW_MAP = RegisterMap(
    "msr_window", MSR_BASE, 0x100, [
        Register("SELECT", 0x0, access=Access.RW, doc="the MSR number"),
        Register("DATA_LO", 0x4, access=Access.RSW,
                 doc="write: the low half of the next WRMSR; read: RDMSR of SELECT, low half (the high "
                     "half goes to DATA_HI)"),
        Register("DATA_HI", 0x8, access=Access.RWS,
                 doc="read: the high half of the last RDMSR; write: WRMSR of SELECT with DATA_LO"),
        Register("VMGEXIT", 0xC, access=Access.WS,
                 doc="a write is VMGEXIT (ap_start=\"ghcb\"): the store completes when the hypervisor "
                     "resumes the vCPU, so an AP reset hold stalls the core here"),
    ],
    prefix="SOC_MSR", source="docs/spec/ghcb.md §1",
    doc="Each core's MSR window (RV32 has no RDMSR/WRMSR): the GHCB MSR (0xC001_0130) goes to the GHCB "
        "unit, every other MSR to the core's local APIC (IA32_APIC_BASE, x2APIC 0x800+).")

START_MAP = RegisterMap(
    "start", START_BASE, 0x100, [
        Register("CALL_ADDRESS", 0x0, access=Access.RW,
                 doc="the call's address: the guest-physical (RAM) address of the struct vmi_ap_state; "
                     "a store while busy is ignored"),
        Register("CALL_APIC_ID", 0x4, access=Access.RW,
                 doc="the call's target APIC ID; a store while busy is ignored"),
        Register("CALL_OP", 0x8, [Field("op", 2, Access.WS, doc=", ".join(
                     f"{op.value} {op.name}" for op in StartOp) + ", 3 is refused (BAD_OP)")],
                 doc="a store starts the call (busy until it is done); ignored while busy, "
                     "which sets CALL_STATUS.dropped"),
        Register("CALL_STATUS", 0xC, [
                     Field("status", 4, Access.R, doc="StartStatus of the last call done (0 OK)"),
                     Field("field", 4, Access.R, doc="StateField a refusal names (0 none)"),
                     Field("busy", 1, Access.R, doc="a call is waiting or running"),
                     Field("dropped", 1, Access.R, doc="a store to the window arrived while busy "
                           "and was dropped; cleared by the next call started")],
                 doc="the last call's outcome"),
        Register("LAUNCHES", 0x10, [Field(kind.name.lower(), 8, Access.R) for kind in LaunchKind],
                 doc="launch records taken since reset, per LaunchKind (each count wraps at 256): "
                     "REFUSED and DROPPED leave the core as it was"),
    ],
    prefix="SOC_START", source="docs/ARCHITECTURE.md \"Start-context unit\"",
    doc="The start-context unit's calls (ap_start=\"context\"), one caller at a time: the SoC's shared "
        "window to apwake.rtl.start_context.StartContextUnit, which reads the struct and the GDT from RAM.")

#: CONTROL FEATURES bits (what this build of the SoC has)
FEATURES = {f.name.upper(): f.mask for f in CONTROL_MAP["FEATURES"].fields}

SOC_MAP = AddressMap(
    "soc", _WINDOW_BITS, [
        Window("ram", RAM_BASE, doc="RAM (initialised with the firmware image); the boot ROM is its "
                                    f"first {BOOT_ROM_BYTES:#x} bytes"),
        Window("io", UART_BASE, [IO_MAP], doc="UART, LEDs, lock"),
        Window("apic", APIC_BASE, [XAPIC_MAP.rebased(APIC_BASE)],
               doc="this core's local APIC, xAPIC MMIO (offsets as in the APIC's page)"),
        Window("control", CONTROL_BASE, [CONTROL_MAP], doc="this core's control window"),
        Window("mailbox", MAILBOX_BASE, [PAGE_MAP.rebased(MAILBOX_BASE), STATUS_MAP.rebased(MAILBOX_BASE + PAGE_SIZE)],
               doc="the ACPI MP wakeup mailbox page and its status window (ap_start=\"mailbox\")"),
        Window("msr", MSR_BASE, [MSR_WINDOW_MAP], doc="this core's MSR window (msr_window=True)"),
        Window("start", START_BASE, [START_MAP],
               doc="the start-context unit's call window (ap_start=\"context\")"),
    ],
    memory=[
        MemoryRegion("ROM", RAM_BASE, BOOT_ROM_BYTES, "rx",
                     doc="boot ROM: the BSP's reset entry and the AP boot stub (stores ignored)"),
        MemoryRegion("RAM", RAM_BASE + BOOT_ROM_BYTES, FIRMWARE_RAM_BYTES - BOOT_ROM_BYTES, "rwx",
                     doc="code, data and the stacks (at the top of the SoC's RAM)"),
    ],
    doc="The soft-SoC's shared bus: address[31:28] selects the window.")

#: the first window slot the map leaves empty: no core's bus answers there (a load reads 0 and
#: sets the core's sticky bus_error, rtl/soc/interconnect.py; the SoC tests' probe reads it)
UNDECODED_BASE = next(slot * WINDOW_SIZE for slot in range(1 << (32 - _WINDOW_BITS))
                      if slot not in {SOC_MAP.window_of(w.base) for w in SOC_MAP.windows})

UART_TX = IO_MAP.address("UART_TX")          # write: send the byte in [7:0]
UART_STATUS = IO_MAP.address("UART_STATUS")  # read: bit 0 = busy
LED_BASE = IO_MAP.address("LEDS")            # write: LEDs [7:0]
LOCK_BASE = IO_MAP.address("LOCK")           # read: test and set; write 0: release
CONTROL = CONTROL_MAP.offsets
MSR_WINDOW = MSR_WINDOW_MAP.offsets
START_WINDOW = START_MAP.offsets


def window_of(address):
    """The top nibble selects the window (RAM, shared I/O, APIC, control, mailbox, MSR)."""
    return SOC_MAP.window_of(address)
