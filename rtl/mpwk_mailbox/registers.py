"""The MP wakeup mailbox's registers as data (:mod:`apwake.rtl.lib.registers`).

:data:`PAGE_MAP` is the OS half's header of the ACPI mailbox structure (ACPI 6.6 Table 5.46,
docs/spec/mpwk.md §2; its offsets are :data:`apwake.rtl.mpwk_mailbox.layouts.OFFSETS`), described
for the firmware header and the docs.  :data:`STATUS_MAP` is apwake's status window after the page
(docs/spec/mpwk.md §7), which :class:`apwake.rtl.mpwk_mailbox.MpwkMailbox` decodes from this
description.  Both are at base 0: the mailbox's parameters place them.
"""

from apwake.rtl.lib.registers import Access, Field, Register, RegisterMap, fields_of
from .layouts import APIC_ID_INVALID, FIRMWARE_HALF, OFFSETS, Command, MailboxStatus

__all__ = ["PAGE_MAP", "STATUS_MAP"]

_OFFSET = {name.upper(): offset for name, offset in OFFSETS.items()}

PAGE_MAP = RegisterMap(
    "mailbox", 0, FIRMWARE_HALF, [
        Register("COMMAND", _OFFSET["COMMAND"], [
            Field("command", Command.as_shape().width, Access.RWS,
                  doc="Command (1 Wakeup, 2 Test); 0 to non-zero starts a request, the firmware clears it"),
            Field("reserved", 16, Access.RW, doc="must be 0: TDVF compares the whole dword")],
            doc="Command and Reserved, compared as one dword"),
        Register("APIC_ID", _OFFSET["APIC_ID"], access=Access.RW, reset=APIC_ID_INVALID,
                 doc="x2APIC ID of the AP to wake; 0xFFFF_FFFF after reset (TDVF's idle value)"),
        Register("WAKEUP_VECTOR", _OFFSET["WAKEUP_VECTOR"], access=Access.RW, width=64,
                 doc="where a Wakeup starts the AP (64-bit mode)"),
    ],
    source="ACPI 6.6 Table 5.46; docs/spec/mpwk.md §2",
    doc="The OS half's header of the 4 KiB mailbox page; ReservedForOs follows at 0x10 and the "
        "firmware half (writes dropped and flagged) at 0x800.")

STATUS_MAP = RegisterMap(
    "mailbox_status", 0, 0x10, [
        Register("STATUS", 0x0, fields_of(MailboxStatus, Access.RW1C), doc="sticky error flags, write 1 to clear"),
        Register("LAST_APIC_ID", 0x4, access=Access.R,
                 doc="the ApicId of the last request, or of the last flagged write while one was pending"),
    ],
    source="docs/spec/mpwk.md §7",
    doc="apwake's mailbox status window (default: the page after the mailbox).")
