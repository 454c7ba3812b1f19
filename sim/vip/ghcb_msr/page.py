"""The guest's side of a GHCB page (docs/spec/ghcb.md §2): fill a request with its valid bits, read the
hypervisor's reply.  Shared by the guest models and the block tests."""

from apwake.rtl.ghcb_msr.layouts import GHCB_OFFSETS, VALID_BIT

from apwake.sim.vip.memory import PAGE_SIZE

__all__ = ["write_request", "read_reply", "is_valid", "REQUEST_FIELDS"]

#: the save-area fields an NAE request sets (and marks valid)
REQUEST_FIELDS = ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2")


def write_request(memory, ghcb, *, exit_code, info1=0, info2=0, writer, usage=0, valid=None, rax=None):
    """Clear the page, then set SW_EXITCODE/EXITINFO1/EXITINFO2 (and RAX when ``rax`` is given),
    the valid bits of ``valid`` (default: the fields set) and ``ghcb_usage``, as Linux's
    ``vc_ghcb_invalidate`` + ``ghcb_set_*`` do."""
    memory.write(ghcb, bytes(PAGE_SIZE), writer=writer)
    for name, value in zip(REQUEST_FIELDS, (exit_code, info1, info2)):
        memory.write_int(ghcb + GHCB_OFFSETS[name], value, 8, writer=writer)
    if rax is not None:
        memory.write_int(ghcb + GHCB_OFFSETS["rax"], rax, 8, writer=writer)
    if valid is None:
        valid = REQUEST_FIELDS + (("rax",) if rax is not None else ())
    bitmap = sum(1 << VALID_BIT[name] for name in valid)
    memory.write(ghcb + GHCB_OFFSETS["valid_bitmap"], bitmap.to_bytes(16, "little"), writer=writer)
    memory.write_int(ghcb + GHCB_OFFSETS["ghcb_usage"], usage, 4, writer=writer)


def read_reply(memory, ghcb):
    """``(SW_EXITINFO1, SW_EXITINFO2, valid bitmap)`` as the hypervisor left them."""
    info1 = memory.read_int(ghcb + GHCB_OFFSETS["sw_exit_info_1"], 8)
    info2 = memory.read_int(ghcb + GHCB_OFFSETS["sw_exit_info_2"], 8)
    bitmap = int.from_bytes(memory.read(ghcb + GHCB_OFFSETS["valid_bitmap"], 16), "little")
    return info1, info2, bitmap


def is_valid(bitmap, name):
    return bool(bitmap >> VALID_BIT[name] & 1)
