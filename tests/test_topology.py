"""Topologies and APIC ID lists (sim/models/topology.py), the MADT processor entries the
firmware publishes and Linux parses (sim/models/madt.py), and the command line's --topology and
--apic-ids."""

import struct

import pytest

from apwake.sim.models.madt import (MADT_TYPE_LOCAL_APIC, MADT_TYPE_LOCAL_X2APIC, MadtError, parse_mp_wake,
                                    parse_processors, processor_entries)
from apwake.sim.models.topology import TopologyError, parse_apic_ids, parse_topology
from apwake.sim.scenarios.options import MODEL_RUN_OPTIONS, OptionError, parse_arguments


@pytest.mark.parametrize("text, ids", [
    ("1x1x1", [0]),
    ("1x4x1", [0, 1, 2, 3]),
    ("1x2x2", [0, 1, 2, 3]),
    ("2x3x2", [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]),      # core field 2 bits, package from bit 3
    ("2x1x3", [0, 1, 2, 4, 5, 6]),                              # SMT field 2 bits
])
def test_topology_ids_are_bit_fields(text, ids):
    topology = parse_topology(text)
    assert topology.apic_ids() == ids
    assert topology.n_cpus == len(ids)
    for package in range(topology.packages):
        for core in range(topology.cores):
            for thread in range(topology.threads):
                assert topology.split(topology.apic_id(package, core, thread)) == (package, core, thread)


@pytest.mark.parametrize("text", ["2x16", "0x4x2", "axbxc", "", "2x2x2x2"])
def test_bad_topologies_are_named(text):
    with pytest.raises(TopologyError, match="topology"):
        parse_topology(text)


def test_apic_id_lists_and_files(tmp_path):
    assert parse_apic_ids("0, 2,0x10 7") == [0, 2, 16, 7]
    path = tmp_path / "ids.txt"
    path.write_text("0\n0x100\n0x201\n")
    assert parse_apic_ids(str(path)) == [0, 0x100, 0x201]
    with pytest.raises(TopologyError, match="listed twice"):
        parse_apic_ids("1,2,1")
    with pytest.raises(TopologyError, match="outside"):
        parse_apic_ids("0xFFFFFFFF")
    with pytest.raises(TopologyError, match="neither a list of APIC IDs nor a file"):
        parse_apic_ids("1,q")
    with pytest.raises(TopologyError, match="neither a list of APIC IDs nor a file"):
        parse_apic_ids(str(tmp_path / "missing.txt"))


def test_processor_entries_follow_acpi_and_parse_back():
    ids = [0, 5, 0xFE, 0xFF, 0x100, 0x12345]
    madt = processor_entries(ids)
    kinds = []
    offset = 0
    while offset < len(madt):
        kinds.append((madt[offset], madt[offset + 1]))
        offset += madt[offset + 1]
    # type 0 (8 bytes) below 255, type 9 (16 bytes) from 255 up
    assert kinds == [(MADT_TYPE_LOCAL_APIC, 8)] * 3 + [(MADT_TYPE_LOCAL_X2APIC, 16)] * 3
    parsed = parse_processors(madt)
    assert [p.apic_id for p in parsed] == ids
    assert [p.uid for p in parsed] == list(range(len(ids)))
    # a mailbox entry after them changes nothing, and they do not hide it
    mailbox = bytes([0x10, 16, 0, 0, 0, 0, 0, 0]) + (0x7000).to_bytes(8, "little")
    assert parse_processors(madt + mailbox) == parsed
    assert parse_mp_wake(madt + mailbox).mailbox_address == 0x7000


def test_linux_skips_disabled_entries_and_the_invalid_xapic_id():
    disabled = struct.pack("<BBBBI", 0, 8, 1, 3, 0)
    invalid = struct.pack("<BBBBI", 0, 8, 2, 0xFF, 1)
    assert [p.apic_id for p in parse_processors(processor_entries([0]) + disabled + invalid)] == [0]
    with pytest.raises(MadtError, match="length"):
        parse_processors(bytes([0, 6, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match="0xffffffff"):
        processor_entries([0, 0xFFFF_FFFF])


def _parse(*arguments):
    return parse_arguments("apwake run init-sipi", MODEL_RUN_OPTIONS, list(arguments))


def test_topology_sets_the_cpus_and_ids():
    values = _parse("--topology", "2x3x2")
    assert values["cpus"] == 12 and values["apic_ids"][-1] == 13
    assert _parse("--apic-ids", "0,4,8", "--cpus", "3")["apic_ids"] == [0, 4, 8]
    assert _parse()["apic_ids"] is None
    assert _parse("--apic-ids", "0,0x100,0xFFFFFFFE")["apic_ids"] == [0, 0x100, 0xFFFF_FFFE]


@pytest.mark.parametrize("arguments, message", [
    (("--topology", "2x2x2", "--cpus", "4"), "--cpus 4 disagrees with --topology 2x2x2 (8 CPUs)"),
    (("--topology", "2x2x2", "--apic-ids", "0,1"), "use one"),
    (("--apic-ids", "0,0x100000000"), "--apic-ids: APIC ID 0x100000000 is outside"),
    (("--topology", "32x64x4"), "8192 CPUs"),
    (("--apic-ids", "0,zz"), "--apic-ids: '0,zz' is neither a list of APIC IDs nor a file"),
    (("--apic-ids", "0,0x1g"), "--apic-ids: '0,0x1g' is neither a list of APIC IDs nor a file"),
    (("--apic-ids", "0,1x"), "--apic-ids: APIC ID '1x' is not a number"),
])
def test_topology_errors_name_the_option(arguments, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _parse(*arguments)


def test_linux_registers_type_0_entries_first_and_drops_low_x2apic_duplicates():
    """Linux commit ec9aedb2aa1a: the Local APIC entries first, then the Local x2APIC ones; with
    Local APIC entries present, an x2APIC entry below 0xFF is a duplicate (the Ivybridge-EP
    table in the commit listed every CPU twice) and is not registered."""
    def x2apic(apic_id, uid, flags=1):
        return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)

    def lapic(apic_id, uid, flags=1):
        return struct.pack("<BBBBI", 0, 8, uid, apic_id, flags)

    doubled = lapic(0, 0) + lapic(1, 1) + x2apic(0, 0) + x2apic(1, 1) + x2apic(0x100, 2)
    assert [p.apic_id for p in parse_processors(doubled)] == [0, 1, 0x100]
    # table order 0x100, 1, 0: registered as type 0 first
    mixed = x2apic(0x100, 2) + lapic(1, 1) + lapic(0, 0)
    assert [(p.apic_id, p.kind) for p in parse_processors(mixed)] == [
        (1, MADT_TYPE_LOCAL_APIC), (0, MADT_TYPE_LOCAL_APIC), (0x100, MADT_TYPE_LOCAL_X2APIC)]
    # only x2APIC entries (as some hypervisors publish): low IDs count, the invalid ID does not
    only_x2apic = x2apic(0, 0) + x2apic(1, 1) + x2apic(0xFFFF_FFFF, 2)
    assert [p.apic_id for p in parse_processors(only_x2apic)] == [0, 1]


def test_kernel_tables_hold_as_many_cpus_as_the_fabric():
    """The Linux model's per-CPU tables (cpuid_to_apicid[], the online map, the cpuhp sync
    states) and tr_lock do not overlap for NR_CPUS CPUs.  They were sized for 255 CPUs once, and
    at 1024 cpuid_to_apicid[] overwrote tr_lock: every AP spun in the trampoline forever."""
    from apwake.rtl.lapic.fabric import MAX_APICS
    from apwake.sim.models.cpu import linux
    assert linux.NR_CPUS == MAX_APICS
    tables = sorted([(linux._NR_CPU_IDS, 4), (linux._CPUID_TO_APICID, 4 * linux.NR_CPUS),
                     (linux._ONLINE, linux.NR_CPUS), (linux._SYNC, linux.NR_CPUS),
                     (linux._TRAMPOLINE_LOCK, 4)])
    for (start, size), (next_start, _) in zip(tables, tables[1:]):
        assert start + size <= next_start, f"table at {start:#x} runs into the one at {next_start:#x}"
    end = tables[-1][0] + tables[-1][1]
    assert end <= linux._DATA_BYTES and linux._DATA_BYTES % 0x1000 == 0
