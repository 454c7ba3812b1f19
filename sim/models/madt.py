"""Parse MADT multiprocessor-wakeup entries as Linux's ``acpi_parse_mp_wake`` does (docs/spec/mpwk.md §4)."""

from dataclasses import dataclass

from apwake.rtl.mpwk_mailbox.layouts import MADT_LENGTH, MADT_OFFSETS, MADT_TYPE_MP_WAKEUP

__all__ = ["MpWake", "parse_mp_wake", "MadtError"]


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
    offset = 0
    while offset + 2 <= len(entries):
        kind, length = entries[offset], entries[offset + 1]
        if length < 2:
            raise MadtError(f"MADT entry at offset {offset} has length {length}")
        if kind == MADT_TYPE_MP_WAKEUP:
            if length < 16 or offset + 16 > len(entries):
                raise MadtError(f"MP wakeup entry of length {length}: at least 16 bytes needed")
            body = entries[offset:offset + length]
            field = lambda name, size: int.from_bytes(
                body[MADT_OFFSETS[name]:MADT_OFFSETS[name] + size], "little")
            version = field("version", 2)
            address = field("mailbox_address", 8)
            reset = field("reset_vector", 8) if length >= MADT_LENGTH[1] else None
            can_reset = version >= 1 and length >= MADT_LENGTH[1] and bool(reset)
            return MpWake(version, address, reset, can_reset, offset)
        offset += length
    return None
