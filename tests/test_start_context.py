"""The start-context unit without Verilator: its parameter errors, the layouts against the C struct
and the SDM, the reference model's struct and descriptor builders and its rules, and one SET +
SIPI of Linux's map in Amaranth's simulator against the model.  The cocotb tests
(cocotb_tests/start_context) check the unit bit for bit under Verilator."""

import warnings

import pytest

from amaranth.lib import data

from apwake.rtl.start_context import MAX_VCPUS, StartContextUnit
from apwake.rtl.start_context import layouts
from apwake.rtl.start_context.layouts import (LaunchKind, StartOp, StartState, StartStatus,
                                              StateField, VMI_AP_STATE_OFFSETS)
from apwake.sim.vip.start_context import model
from apwake.sim.vip.start_context.bfm import unpack_state
from apwake.sim.vip.start_context.design import StartContextConfig
from apwake.sim.vip.start_context.model import (UnitModel, decode, descriptor, encode_vmi_ap_state,
                                                linux_ap_state, linux_gdt)
from amaranth_sim import simulate


@pytest.fixture(autouse=True)
def _quiet():
    # constructors that raise (and units only inspected) leave unelaborated components behind
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- parameters -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(apic_ids=3), TypeError, r"apic_ids must be a tuple of ints, not int"),
    (dict(apic_ids="012"), TypeError, r"apic_ids must be a tuple of ints, not str"),
    (dict(apic_ids=()), ValueError, r"apic_ids must name 1 to 4096 vCPUs, not 0"),
    (dict(apic_ids=tuple(range(4097))), ValueError, r"apic_ids must name 1 to 4096 vCPUs, not 4097"),
    (dict(apic_ids=(0, 1.0)), TypeError, r"apic_ids\[1\] must be an int, not float"),
    (dict(apic_ids=(0, True)), TypeError, r"apic_ids\[1\] must be an int, not bool"),
    (dict(apic_ids=(0, -1)), ValueError, r"apic_ids\[1\] = -0x1 is not a 32-bit APIC ID"),
    (dict(apic_ids=(0, 1 << 32)), ValueError, r"apic_ids\[1\] = 0x100000000 is not a 32-bit APIC ID"),
    (dict(apic_ids=(4, 7, 4)), ValueError, r"apic_ids\[2\] = 0x4 is also apic_ids\[0\]: APIC IDs must be distinct"),
    (dict(apic_ids=(0, 1), bsp_index=2), ValueError, r"bsp_index must be 0 to 1, not 2"),
    (dict(apic_ids=(0, 1), bsp_index=-1), ValueError, r"bsp_index must be 0 to 1, not -1"),
    (dict(apic_ids=(0, 1), bsp_index="0"), TypeError, r"bsp_index must be an int, not str"),
    (dict(apic_ids=(0, 1), bsp_index=1.0), TypeError, r"bsp_index must be an int, not float"),
])
def test_parameter_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        StartContextUnit(**kwargs)


def test_parameters_accepted():
    assert MAX_VCPUS == 4096
    unit = StartContextUnit(apic_ids=[0x10, 0xFFFF_FFFF, 0], bsp_index=2)
    unit._MustUse__silence = True          # inspected, not elaborated
    assert unit.apic_ids == (0x10, 0xFFFF_FFFF, 0) and unit.n_vcpus == 3
    assert len(unit.apic) == 3
    largest = StartContextUnit(apic_ids=tuple(range(MAX_VCPUS)))
    largest._MustUse__silence = True
    assert largest.n_vcpus == MAX_VCPUS


def test_config_travels_as_json():
    config = StartContextConfig(apic_ids=(0x10, 3, 0x200), bsp_index=1)
    again = StartContextConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config) and again.apic_ids == (0x10, 3, 0x200)
    assert config.label == "start-context-n3-bsp1-ids10_3_200"
    assert StartContextConfig().label == "start-context-n3-bsp0"
    with pytest.raises(ValueError, match="bsp_index must be 0 to 2"):
        StartContextConfig(bsp_index=3)


# --- layouts --------------------------------------------------------------------------------------------
#: struct vmi_ap_state as Linux's asm/vmi.h declares it, in order (name, C size)
_C_STRUCT = [("cr0", 4), ("cr2", 4), ("cr3", 4), ("cr4", 4), ("efer", 8),
             *[(name, 4) for name in ("eip", "eflags", "eax", "ebx", "ecx", "edx", "esp", "ebp", "esi", "edi")],
             *[(name, 2) for name in ("cs", "ss", "ds", "es", "fs", "gs", "ldtr", "gdtr_limit")],
             ("gdtr_base", 4), ("idtr_base", 4), ("idtr_limit", 2)]


@pytest.mark.parametrize("packed", [False, True])
def test_struct_offsets_are_the_c_layout(packed):
    """The offsets follow from the C declaration with i386 alignment (at most 4 bytes) and with
    packing alike; sizeof is 92 (4-byte tail alignment), 90 bytes of data."""
    offset, offsets = 0, {}
    for name, size in _C_STRUCT:
        if not packed:
            offset = -(-offset // min(size, 4)) * min(size, 4)
        offsets[name] = (offset, size)
        offset += size
    assert offsets == VMI_AP_STATE_OFFSETS
    assert offset == layouts.VMI_AP_STATE_DATA == 90
    assert layouts.VMI_AP_STATE_SIZE == -(-offset // 4) * 4 == 92 == 4 * layouts.VMI_AP_STATE_WORDS


def test_state_layouts():
    assert data.Layout.cast(layouts.Segment).size == 96
    assert data.Layout.cast(layouts.DescriptorTable).size == 48
    assert data.Layout.cast(StartState).size == 1184
    assert data.Layout.cast(layouts.GdtDescriptor).size == 64
    assert data.Layout.cast(layouts.SegmentAttributes).size == 16
    assert [field.value for field in StateField][:12] == list(range(12))
    assert layouts.SEGMENT_FIELDS["gs"] is StateField.GS


def test_check_masks_agree_with_the_model():
    """The RTL's masks (layouts.py) and the model's bits (typed separately from the SDM)."""
    assert layouts.CR0_RESERVED == ~model._CR0_KNOWN & 0xFFFF_FFFF == 0x1FFA_FFC0
    assert layouts.CR4_RESERVED == sum(1 << b for b in model._CR4_RESERVED_BITS) == 0xFE08_8000
    assert layouts.EFER_RESERVED == ~model._EFER_KNOWN & (1 << 64) - 1
    assert layouts.EFLAGS_RESERVED == sum(1 << b for b in model._EFLAGS_RESERVED_BITS) == 0xFFC0_8028
    assert (layouts.EFER_LME, layouts.EFER_LMA, layouts.EFLAGS_VM) == (0x100, 0x400, 0x2_0000)


# --- the model's builders -------------------------------------------------------------------------------
def test_encode_places_each_field():
    for name, (offset, size) in VMI_AP_STATE_OFFSETS.items():
        value = int.from_bytes(bytes(range(1, size + 1)), "little")
        encoded = encode_vmi_ap_state(**{name: value})
        assert len(encoded) == 92
        assert encoded[offset:offset + size] == bytes(range(1, size + 1))
        assert encoded[:offset] == bytes(offset) and not any(encoded[offset + size:])


@pytest.mark.parametrize(("fields", "message"), [
    (dict(cs=1 << 16), r"cs = 65536 does not fit in 16 bits"),
    (dict(efer=-1), r"efer = -1 does not fit in 64 bits"),
    (dict(cr0=1 << 32), r"cr0 = 4294967296 does not fit in 32 bits"),
    (dict(eip="0"), r"eip = '0' does not fit in 32 bits"),
    (dict(tr=0), r"'tr' is not a field of struct vmi_ap_state"),
])
def test_encode_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        encode_vmi_ap_state(**fields)


def test_descriptor_matches_linux_gdt_entries():
    """GDT_ENTRY_INIT(0xc09a, 0, 0xfffff) is 0x00cf9a000000ffff (arch/x86/include/asm/desc_defs.h)."""
    assert descriptor(0, 0xFFFFF, 0xA) == 0x00CF_9A00_0000_FFFF
    assert descriptor(0, 0xFFFFF, 0x2, dpl=3) == 0x00CF_F200_0000_FFFF
    assert descriptor(0x1234_5678, 0x18, 0x0, g=0) == 0x1240_9034_5678_0018
    assert descriptor(0xFFFF_FFFF, 0xFFFFF, 0xF, s=1, dpl=3, p=1, avl=1, l=1, db=1, g=1) == (1 << 64) - 1
    assert descriptor(0, 0, 0, s=0, dpl=0, p=0, avl=0, l=0, db=0, g=0) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(base=1 << 32, limit=0, type=0), r"base = 4294967296 does not fit in 32 bits"),
    (dict(base=0, limit=1 << 20, type=0), r"limit = 1048576 does not fit in 20 bits"),
    (dict(base=0, limit=0, type=16), r"type = 16 does not fit in 4 bits"),
    (dict(base=0, limit=0, type=0, dpl=4), r"dpl = 4 does not fit in 2 bits"),
    (dict(base=0, limit=0, type=0, g=2), r"g = 2 does not fit in 1 bits"),
])
def test_descriptor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        descriptor(**kwargs)


# --- the model's rules ------------------------------------------------------------------------------------
class _Mem:
    def __init__(self):
        self.bytes, self.reads = {}, []

    def write(self, address, data):
        for k, byte in enumerate(data):
            self.bytes[address + k] = byte

    def read(self, address, size):
        self.reads.append(address)
        return bytes(self.bytes.get(address + k, 0) for k in range(size))


GDT, STRUCT = 0x1_0000, 0x2_0000


def _linux(mem, **overrides):
    for index, value in linux_gdt(percpu_base=0x77_0000).items():
        mem.write(GDT + 8 * index, value.to_bytes(8, "little"))
    fields = linux_ap_state(gdt_base=GDT, idt_base=0x3000, cr3=0x40_0000, eip=0xC010_0000, esp=0xC020_0000)
    fields.update(overrides)
    mem.write(STRUCT, encode_vmi_ap_state(**fields))


def test_decode_linux_map():
    mem = _Mem()
    _linux(mem)
    status, field, state = decode(mem.read, STRUCT)
    assert (status, field) == (StartStatus.OK, StateField.NONE)
    assert state["cs"] == {"selector": 0x60, "attrib": 0xC9B, "limit": 0xFFFF_FFFF, "base": 0}
    assert state["fs"] == {"selector": 0xD8, "attrib": 0xC93, "limit": 0xFFFF_FFFF, "base": 0x77_0000}
    assert state["gs"] == {"selector": 0, "attrib": 0, "limit": 0, "base": 0}
    assert state["eflags"] == 2 and state["cr0"] == 0x8005_0023
    assert state["gdtr"] == {"limit": 255, "base": GDT} and state["idtr"] == {"limit": 2047, "base": 0x3000}
    # 23 words of the struct, then two per non-null selector (CS SS DS ES FS), in that order
    assert mem.reads == ([STRUCT + 4 * k for k in range(23)]
                         + [a for i in (12, 13, 15, 15, 27) for a in (GDT + 8 * i, GDT + 8 * i + 4)])


@pytest.mark.parametrize(("overrides", "expected"), [
    (dict(cr0=0x8005_0063, ldtr=8), (StartStatus.RESERVED_BITS, StateField.CR0)),
    (dict(cr0=0x2000_0001), (StartStatus.INVALID_STATE, StateField.CR0)),
    (dict(efer=1 << 8, eflags=1 << 3), (StartStatus.INVALID_STATE, StateField.EFER)),
    (dict(eflags=1 << 17), (StartStatus.INVALID_STATE, StateField.EFLAGS)),
    (dict(ldtr=0x28), (StartStatus.INVALID_STATE, StateField.LDTR)),
    (dict(ss=0x6B), (StartStatus.INVALID_STATE, StateField.SS)),
    (dict(ds=0x4), (StartStatus.INVALID_STATE, StateField.DS)),
    (dict(gdtr_limit=0xD0), (StartStatus.INVALID_STATE, StateField.FS)),
    (dict(gdtr_base=GDT + 4), (StartStatus.INVALID_STATE, StateField.GDTR)),
    (dict(gs=3), (StartStatus.OK, StateField.NONE)),
])
def test_decode_rules_in_order(overrides, expected):
    mem = _Mem()
    _linux(mem, **overrides)
    status, field, state = decode(mem.read, STRUCT)
    assert (status, field) == expected
    assert (state is None) == (status is not StartStatus.OK)


@pytest.mark.parametrize(("address", "ok"), [(STRUCT + 2, False), (0xFFFF_FFA4, True), (0xFFFF_FFA8, False)])
def test_decode_address(address, ok):
    mem = _Mem()
    _linux(mem)
    mem.write(address, mem.read(STRUCT, 92))
    mem.reads.clear()
    status, _, _ = decode(mem.read, address)
    assert (status is StartStatus.OK) == ok
    assert bool(mem.reads) == ok


def test_unit_model_sequence():
    mem = _Mem()
    _linux(mem)
    unit = UnitModel([0x10, 0x20, 0x30], 1)
    assert unit.call(StartOp.START, STRUCT, 0x20, mem.read)[0] is StartStatus.ALREADY_RUNNING
    assert unit.call(3, STRUCT, 0x10, mem.read)[0] is StartStatus.BAD_OP
    assert unit.call(StartOp.SET_INITIAL_AP_STATE, STRUCT, 0x40, mem.read)[0] is StartStatus.UNKNOWN_APIC_ID
    assert unit.call(StartOp.SET_INITIAL_AP_STATE, STRUCT, 0x10, mem.read)[:2] == (StartStatus.OK, StateField.NONE)
    assert unit.sipi(0, 0x9A)["kind"] is LaunchKind.CONTEXT
    assert unit.sipi(0, 0x9A)["kind"] is LaunchKind.DROPPED
    unit.init(0)
    assert unit.sipi(0, 0x9A)["kind"] is LaunchKind.REAL_MODE
    unit.call(StartOp.PARAVIRT, 0, 0, mem.read)
    assert unit.sipi(2, 0x9A)["kind"] is LaunchKind.REFUSED
    status, _, record = unit.call(StartOp.START, STRUCT, 0x30, mem.read)
    assert status is StartStatus.OK and record["via_sipi"] == 0 and record["kind"] is LaunchKind.CONTEXT


# --- the unit in Amaranth's simulator ------------------------------------------------------------------
def test_unit_set_then_sipi_matches_the_model():
    """SET of Linux's map, then a SIPI: done with OK after the model's reads, then a CONTEXT
    record carrying the model's state, acknowledged when taken (one Amaranth-simulator run)."""
    mem = _Mem()
    _linux(mem)
    _, _, expected = decode(mem.read, STRUCT)
    expected_reads = list(mem.reads)
    mem.reads.clear()
    dut = StartContextUnit(apic_ids=(0, 5), bsp_index=0)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.memory.req_ready, 1)
        ctx.set(dut.call.valid, 1)
        ctx.set(dut.call.op, StartOp.SET_INITIAL_AP_STATE)
        ctx.set(dut.call.address, STRUCT)
        ctx.set(dut.call.apic_id, 5)
        assert not ctx.get(dut.idle)
        await ctx.tick()
        ctx.set(dut.call.valid, 0)
        response = None
        for _ in range(200):
            ctx.set(dut.memory.resp_valid, response is not None)
            ctx.set(dut.memory.rdata, response or 0)
            response = None
            if ctx.get(dut.memory.req_valid):
                response = int.from_bytes(mem.read(ctx.get(dut.memory.addr), 4), "little")
            if ctx.get(dut.call.done):
                seen["status"] = (ctx.get(dut.call.status), ctx.get(dut.call.field))
                break
            await ctx.tick()
        await ctx.tick()
        assert ctx.get(dut.idle)
        ctx.set(dut.apic[1].sipi, 1)
        ctx.set(dut.apic[1].sipi_vector, 0x9A)
        for _ in range(10):
            await ctx.tick()
            if ctx.get(dut.launch.valid):
                break
        assert not ctx.get(dut.apic[1].sipi_ack)        # not taken yet: not acknowledged
        ctx.set(dut.launch.ready, 1)
        seen["kind"], seen["vector"] = ctx.get(dut.launch.kind), ctx.get(dut.launch.vector)
        seen["state"] = unpack_state(ctx.get(dut.launch.state.as_value()))
        assert ctx.get(dut.apic[1].sipi_ack)

    simulate(dut, bench)
    assert seen["status"] == (StartStatus.OK, StateField.NONE)
    assert mem.reads == expected_reads
    assert (seen["kind"], seen["vector"]) == (LaunchKind.CONTEXT, 0x9A)
    assert seen["state"] == expected


def test_architecture_doc_struct_table_matches_the_layout():
    """docs/ARCHITECTURE.md's table of struct vmi_ap_state is VMI_AP_STATE_OFFSETS."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \| .* \|$", text, re.MULTILINE)
    table = {name: (int(offset), int(size)) for name, offset, size in rows if name in VMI_AP_STATE_OFFSETS}
    assert table == VMI_AP_STATE_OFFSETS
