"""The check every block that names its CPUs by APIC ID makes of that list."""

__all__ = ["check_apic_ids"]


def check_apic_ids(apic_ids):
    """``apic_ids`` (a tuple or list of distinct 32-bit x2APIC IDs) as a tuple.

    Raises
    ------
    TypeError
        Not a tuple or list, or an entry that is not an int (``apic_ids[k]`` named).
    ValueError
        An entry outside 32 bits, or one that repeats an earlier entry (both named).
    """
    if not isinstance(apic_ids, (tuple, list)):
        raise TypeError(f"apic_ids must be a tuple of ints, not {type(apic_ids).__name__}")
    first = {}
    for k, apic_id in enumerate(apic_ids):
        if not isinstance(apic_id, int) or isinstance(apic_id, bool):
            raise TypeError(f"apic_ids[{k}] must be an int, not {type(apic_id).__name__}")
        if not 0 <= apic_id < 1 << 32:
            raise ValueError(f"apic_ids[{k}] = {apic_id:#x} is not a 32-bit APIC ID")
        if apic_id in first:
            raise ValueError(f"apic_ids[{k}] = {apic_id:#x} is also apic_ids[{first[apic_id]}]: "
                             f"APIC IDs must be distinct")
        first[apic_id] = k
    return tuple(apic_ids)
