"""The guest memory model: little-endian data, page owners, corruption records, code."""

import pytest

from apwake.sim.vip.memory import PAGE_SIZE, Memory, MemoryError_, Owner


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


class _Flag:
    """Stands in for a cocotb Event: counts ``set()`` calls."""

    def __init__(self):
        self.sets = 0

    def set(self):
        self.sets += 1


def test_watch_sets_its_event_on_overlapping_writes_only():
    m, flag = Memory(), _Flag()
    with m.watch(0x1000, 4, flag):
        m.write_int(0x1004, 1, 4, writer=None)        # next to the range: no
        m.write_int(0x0FFE, 0xFFFF_FFFF, 4, writer=None)    # overlaps its first two bytes
        m.write_int(0x1003, 1, 1, writer=None)
    m.write_int(0x1000, 2, 1, writer=None)            # after the block: not watched any more
    assert flag.sets == 2
    with pytest.raises(MemoryError_, match="watch: bad range address=0x1000 size=0x0"):
        with m.watch(0x1000, 0, flag):
            pass


def test_smm_handler_durations_are_checked():
    from apwake.sim.models.cpu.model import SMM_ENTRY
    from apwake.sim.models.cpu.smm import SmmHandler

    m = Memory()
    handler = SmmHandler(m, duration_us=None)
    assert m.program_at(SMM_ENTRY)[1] == "firmware SMI handler" and m.owner(SMM_ENTRY) is Owner.FIRMWARE
    with pytest.raises(ValueError, match="SMM duration_us must be >= 0 or None, not -1"):
        SmmHandler(m, duration_us=-1)
    with pytest.raises(ValueError, match="SMM duration_us must be >= 0 or None, not nan"):
        handler.hold(type("Cpu", (), {"index": 1})(), float("nan"))
