"""ACPI MP wakeup mailbox layouts and codes (docs/spec/mpwk.md §1, §2, §7)."""

from amaranth import unsigned
from amaranth.lib import data, enum

__all__ = ["Command", "ApState", "MailboxStatus", "PAGE_SIZE", "FIRMWARE_HALF", "OFFSETS",
           "APIC_ID_INVALID", "APIC_ID_BROADCAST", "MADT_TYPE_MP_WAKEUP", "MADT_LENGTH",
           "MADT_OFFSETS"]

PAGE_SIZE = 0x1000
FIRMWARE_HALF = 0x800
#: field offsets of the OS half (docs/spec/mpwk.md §2)
OFFSETS = {"command": 0x0, "reserved": 0x2, "apic_id": 0x4, "wakeup_vector": 0x8,
           "reserved_for_os": 0x10, "reserved_for_firmware": FIRMWARE_HALF}
APIC_ID_INVALID = 0xFFFF_FFFF      # firmware's idle value
APIC_ID_BROADCAST = 0xFFFF_FFFE    # a TDVF extension; refused here (docs/spec/mpwk.md §7 #8)
MADT_TYPE_MP_WAKEUP = 0x10
MADT_LENGTH = {0: 16, 1: 24}
#: byte offsets in the MADT Multiprocessor Wakeup structure (ACPI 6.6 Table 5.45, docs/spec/mpwk.md §4):
#: Type u8, Length u8, then these
MADT_OFFSETS = {"version": 2, "mailbox_address": 8, "reset_vector": 16}


class Command(enum.Enum, shape=unsigned(16)):
    NOOP = 0
    WAKEUP = 1
    TEST = 2        # ACPI 6.6, mailbox version 1


class ApState(enum.Enum, shape=unsigned(2)):
    """Per AP, as the firmware loop sees it (docs/spec/mpwk.md §7, suggested state machine)."""

    POLL = 0
    OS_RUNNING = 1
    RETURNING = 2   # jumped to ResetVector, on its way back to POLL


class MailboxStatus(data.Struct):
    """Sticky error bits (write 1 to clear), docs/spec/mpwk.md §7."""

    unknown_command: unsigned(1)          # #5 (and Test on a version-0 mailbox)
    reserved_nonzero: unsigned(1)         # #6: Command dword decoded as TDVF does
    command_while_busy: unsigned(1)       # #3
    field_changed_while_pending: unsigned(1)   # #4
    no_target: unsigned(1)                # #1: no polling AP with that ID after the timeout
    firmware_half_write: unsigned(1)      # #18
    broadcast_refused: unsigned(1)        # #8
    reset_unsupported: unsigned(1)        # an AP jumped to ResetVector on a version-0 mailbox
    rsvd: unsigned(24)
