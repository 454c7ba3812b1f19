"""The guest memory model: little-endian data, page owners, corruption records, code."""

import pytest

from sim.memory import PAGE_SIZE, Memory, MemoryError_, Owner


def test_little_endian_and_sparse():
    m = Memory()
    m.write_int(0x1003, 0x1122_3344_5566_7788, 8, writer=Owner.KERNEL1)
    assert m.read(0x1003, 2) == bytes([0x88, 0x77])
    assert m.read_int(0x1007, 4) == 0x1122_3344
    assert m.read_int(0xDEAD_0000, 8) == 0          # never written: zero
    with pytest.raises(MemoryError_, match="integer size must be 1, 2, 4 or 8 bytes, not 3"):
        m.read_int(0, 3)


def test_write_into_a_foreign_page_is_a_corruption():
    m = Memory()
    m.set_owner(0x20_0000, 2 * PAGE_SIZE, Owner.KERNEL2)
    m.set_owner(0x30_0000, PAGE_SIZE, Owner.SHARED)
    m.write_int(0x20_0010, 1, 8, writer=Owner.KERNEL2)            # owner: fine
    m.write_int(0x30_0000, 1, 8, writer=Owner.HYPERVISOR)          # shared: fine
    m.write_int(0x10_0000, 1, 8, writer=Owner.HYPERVISOR)          # unowned: fine
    assert m.corruptions == []
    m.write_int(0x20_0FFC, 0xFFFF_FFFF_FFFF_FFFF, 8, writer=Owner.HYPERVISOR)  # spans two pages
    assert [c.as_dict() for c in m.corruptions] == [
        {"address": 0x20_0FFC, "owner": "kernel 2", "writer": "hypervisor"},
        {"address": 0x20_1000, "owner": "kernel 2", "writer": "hypervisor"},
    ]
    assert m.read_int(0x20_0FFC, 8) == 0xFFFF_FFFF_FFFF_FFFF        # the write still happened


def test_programs_live_at_addresses():
    m = Memory()

    async def trampoline(cpu):
        pass

    m.load_program(0x9A000, trampoline, owner=Owner.KERNEL1)
    assert m.program_at(0x9A000)[0] is trampoline and m.program_at(0x9A000)[1] == "trampoline"
    assert m.owner(0x9A123) is Owner.KERNEL1
    assert m.program_at(0x9B000) is None
    with pytest.raises(MemoryError_, match="bad range"):
        m.set_owner(-1, 10, Owner.FIRMWARE)
