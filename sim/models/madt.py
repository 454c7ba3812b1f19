"""The MADT's interrupt controller structures the firmware publishes and Linux parses.

* Processor entries (ACPI 6.5 §5.2.12.2 "Processor Local APIC Structure", type 0, 8 bytes, and
  §5.2.12.12 "Processor Local x2APIC Structure", type 9, 16 bytes): the firmware lists each CPU
  with a type-0 entry when its APIC ID is below 255 and a type-9 entry otherwise, as the
  specification requires; :func:`parse_processors` registers them as Linux's
  ``acpi_parse_madt_lapic_entries`` does (arch/x86/kernel/acpi/boot.c): every type-0 entry
  (``acpi_parse_lapic``), then every type-9 entry (``acpi_parse_x2apic``), skipping disabled
  entries and the invalid IDs 0xFF and 0xFFFF_FFFF, and, when the table has type-0 entries,
  type-9 entries with an ID below 0xFF.  That last rule is Linux commit ec9aedb2aa1a ("x86/acpi:
  Ignore invalid x2APIC entries", 2023), after the ACPI 6.5 §5.2.12.12 compatibility note
  (IDs below 255 use the Local APIC structure): firmware that listed each CPU twice, once per
  kind, made Linux count twice the CPUs.  Before it, Linux registered both kinds in table order
  (``acpi_table_parse_entries_array``).
* The multiprocessor wakeup entry (type 0x10) as Linux's ``acpi_parse_mp_wake`` reads it
  (docs/spec/mpwk.md §4).
"""

import struct
from dataclasses import dataclass

from apwake.rtl.lapic.layouts import X2APIC_BROADCAST, XAPIC_BROADCAST, XAPIC_MAX_ID
from apwake.rtl.mpwk_mailbox.layouts import MADT_LENGTH, MADT_OFFSETS, MADT_TYPE_MP_WAKEUP

__all__ = ["MpWake", "parse_mp_wake", "MadtError", "Processor", "processor_entries", "parse_processors",
           "MADT_TYPE_LOCAL_APIC", "MADT_TYPE_LOCAL_X2APIC", "MADT_ENABLED"]

MADT_TYPE_LOCAL_APIC = 0x00
MADT_TYPE_LOCAL_X2APIC = 0x09
#: Local APIC Flags bit 0: the processor is usable
MADT_ENABLED = 1 << 0
_LAPIC = struct.Struct("<BBBBI")          # type, length, ACPI processor UID, APIC ID, flags
_X2APIC = struct.Struct("<BBHIII")        # type, length, reserved, x2APIC ID, flags, ACPI UID


@dataclass(frozen=True)
class Processor:
    """One processor entry: its APIC ID, ACPI processor UID, whether it is enabled, and which
    structure (0 or 9) described it."""

    apic_id: int
    uid: int
    enabled: bool
    kind: int


def processor_entries(apic_ids):
    """The processor structures for ``apic_ids`` (in that order, UIDs 0, 1, ...), as bytes:
    type 0 for IDs below 255, type 9 from 255 up.  ValueError for an ID outside 0 to
    0xFFFF_FFFE (0xFFFF_FFFF is the x2APIC broadcast)."""
    out = bytearray()
    for uid, apic_id in enumerate(apic_ids):
        if not 0 <= apic_id < 0xFFFF_FFFF:
            raise ValueError(f"apic_ids[{uid}] = {apic_id:#x} is not an x2APIC ID (0 to 0xFFFF_FFFE)")
        # IDs from 255 up need a Local x2APIC entry (ACPI 6.5 §5.2.12.12), as does a UID past a byte
        if apic_id <= XAPIC_MAX_ID and uid <= 0xFF:
            out += _LAPIC.pack(MADT_TYPE_LOCAL_APIC, _LAPIC.size, uid, apic_id, MADT_ENABLED)
        else:
            out += _X2APIC.pack(MADT_TYPE_LOCAL_X2APIC, _X2APIC.size, 0, apic_id, MADT_ENABLED, uid)
    return bytes(out)


def _entries(entries):
    offset = 0
    while offset + 2 <= len(entries):
        kind, length = entries[offset], entries[offset + 1]
        if length < 2 or offset + length > len(entries):
            raise MadtError(f"MADT entry at offset {offset} has length {length} "
                            f"({len(entries) - offset} bytes left)")
        yield offset, kind, entries[offset:offset + length]
        offset += length


def parse_processors(entries):
    """The enabled processors in ``entries`` (the MADT's structures, concatenated) in the order
    Linux registers them: the type-0 entries, then the type-9 ones (module docstring).
    MadtError for a processor entry shorter than its structure."""
    lapics, x2apics = [], []
    for offset, kind, body in _entries(entries):
        if kind == MADT_TYPE_LOCAL_APIC:
            if len(body) < _LAPIC.size:
                raise MadtError(f"Local APIC entry at offset {offset} has length {len(body)}, not 8")
            _, _, uid, apic_id, flags = _LAPIC.unpack_from(body)
            lapics.append((apic_id, uid, flags, apic_id == XAPIC_BROADCAST))
        elif kind == MADT_TYPE_LOCAL_X2APIC:
            if len(body) < _X2APIC.size:
                raise MadtError(f"Local x2APIC entry at offset {offset} has length {len(body)}, not 16")
            _, _, _, apic_id, flags, uid = _X2APIC.unpack_from(body)
            x2apics.append((apic_id, uid, flags, apic_id == X2APIC_BROADCAST))
    # has_lapic_cpus: acpi_table_parse_madt counts every type-0 entry it handed over
    has_lapic_cpus = bool(lapics)
    found = [Processor(apic_id, uid, True, MADT_TYPE_LOCAL_APIC)
             for apic_id, uid, flags, invalid in lapics if flags & MADT_ENABLED and not invalid]
    found += [Processor(apic_id, uid, True, MADT_TYPE_LOCAL_X2APIC)
              for apic_id, uid, flags, invalid in x2apics
              if flags & MADT_ENABLED and not invalid
              and not (has_lapic_cpus and apic_id < XAPIC_BROADCAST)]
    return found


class MadtError(ValueError):
    """The entry is rejected (Linux: -EINVAL)."""


@dataclass
class MpWake:
    version: int
    mailbox_address: int
    reset_vector: int | None
    #: Linux policy: offlining (and so kexec with SMP) only with version >= 1, length >= 24 and a
    #: usable reset vector; otherwise the version-0 policy (docs/spec/mpwk.md §4, §7 #11, #12)
    can_reset: bool
    #: byte offset of the entry within the structures (to patch its address as Linux does)
    offset: int = 0


def parse_mp_wake(entries):
    """``entries``: the MADT's interrupt controller structures as bytes, concatenated.
    Only the first type-0x10 entry counts (``max_entries=1``)."""
    for offset, kind, body in _entries(entries):
        length = len(body)
        if kind == MADT_TYPE_MP_WAKEUP:
            if length < 16:
                raise MadtError(f"MP wakeup entry of length {length}: at least 16 bytes needed")
            field = lambda name, size: int.from_bytes(
                body[MADT_OFFSETS[name]:MADT_OFFSETS[name] + size], "little")
            version = field("version", 2)
            address = field("mailbox_address", 8)
            reset = field("reset_vector", 8) if length >= MADT_LENGTH[1] else None
            can_reset = version >= 1 and length >= MADT_LENGTH[1] and bool(reset)
            return MpWake(version, address, reset, can_reset, offset)
    return None
