"""Start-context unit block tests: Linux's VMI map accepted and launched bit-exact, random contexts
and random corruptions against the reference model (sim/vip/start_context/model.py), every
refusal rule, the direct start, the paravirtual switch, INIT, the engine's fairness, a stalled
launch sink and stalled guest memory, and ``idle``.

The scoreboard (:class:`Env`) predicts every call's status and the exact guest-memory words it
reads, and every launch record, with :class:`UnitModel`; ``Env.check`` compares the whole lists
(records and memory accesses) after each step, so a record or access lost, added or repeated
fails the test.
"""

import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from apwake.rtl.start_context.layouts import (EFLAGS_FIXED1, LaunchKind, StartOp, StartStatus,
                                              StateField, VMI_AP_STATE_OFFSETS)
from apwake.sim.harness.clocking import CLOCK_NS, start_clock_and_reset
from apwake.sim.harness.handshake import random_pauses, watchdog_cycles
from apwake.sim.harness.pins import port
from apwake.sim.vip.memory import Memory
from apwake.sim.vip.memory_bus import GuestMemoryResponder
from apwake.sim.vip.start_context.bfm import LaunchSink, SipiEvents, StartCallPort
from apwake.sim.vip.start_context.design import StartContextConfig
from apwake.sim.vip.start_context.model import (LINUX_SELECTORS, UnitModel, descriptor,
                                                encode_vmi_ap_state, linux_ap_state, linux_gdt,
                                                zero_state)

TIMEOUT = dict(timeout_time=2, timeout_unit="ms")
SET, START, PARAVIRT = StartOp.SET_INITIAL_AP_STATE, StartOp.START, StartOp.PARAVIRT
OK, INVALID, RESERVED = StartStatus.OK, StartStatus.INVALID_STATE, StartStatus.RESERVED_BITS

STRUCTS = 0x0002_0000            # struct vmi_ap_state slots, 0x100 apart
GDTS = 0x0010_0000               # one GDT page per vCPU
IDT = 0x0003_0000
PAGE_DIR = 0x0040_0000           # __pa(swapper_pg_dir)
START_SECONDARY = 0xC010_2340    # Linux's start_secondary (a kernel virtual address)
PERCPU = 0x0123_4000


def _bare(record):
    return {k: v for k, v in record.items() if k != "taken_ns"}


class Env:
    def __init__(self, dut, config):
        self.dut, self.config = dut, config
        self.n = config.n_vcpus
        self.memory = Memory()
        self.guest = GuestMemoryResponder(dut, self.memory)
        self.port = StartCallPort(dut)
        self.sink = LaunchSink(dut)
        self.apics = [SipiEvents(dut, i) for i in range(self.n)]
        self.model = UnitModel(config.apic_ids, config.bsp_index)
        self.expected_records = []
        self.expected_accesses = []
        self.idle = port(dut, "idle")

    @classmethod
    async def start(cls, dut):
        env = cls(dut, StartContextConfig.from_env())
        await start_clock_and_reset(dut, CLOCK_NS)
        cocotb.start_soon(env.guest.run())
        env.sink.start()
        return env

    # --- the vCPUs ---------------------------------------------------------------------------------
    @property
    def bsp(self):
        return self.config.bsp_index

    @property
    def aps(self):
        return [i for i in range(self.n) if i != self.bsp]

    def apic_id(self, vcpu):
        return self.config.apic_ids[vcpu]

    def unknown_apic_ids(self):
        ids = set(self.config.apic_ids)
        candidates = [max(ids) + 1 & 0xFFFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, 0xFF, 1 << 16]
        return [c for c in dict.fromkeys(candidates) if c not in ids]

    # --- guest memory ------------------------------------------------------------------------------
    def gdt(self, vcpu):
        return GDTS + 0x1000 * vcpu

    def write_gdt(self, base, entries):
        for index, value in entries.items():
            self.memory.write_int(base + 8 * index, value, 8, writer=None)

    def write_struct(self, address, **fields):
        self.memory.write(address, encode_vmi_ap_state(**fields), writer=None)
        return address

    def linux_map(self, vcpu, slot=0, **overrides):
        """Linux's vmi_startup_ipi_hook map for ``vcpu`` (its GDT written too) at struct slot
        ``slot``; returns the struct's address."""
        self.write_gdt(self.gdt(vcpu), linux_gdt(percpu_base=PERCPU * (vcpu + 1), canary_base=0x5000))
        fields = linux_ap_state(gdt_base=self.gdt(vcpu), idt_base=IDT, cr3=PAGE_DIR,
                                eip=START_SECONDARY, esp=0xC800_0000 + 0x2000 * vcpu)
        fields.update(overrides)
        return self.write_struct(STRUCTS + 0x100 * slot, **fields)

    def _reader(self, log):
        def read(address, size):
            data = self.memory.read(address, size)
            log.append((address, False, int.from_bytes(data, "little")))
            return data
        return read

    # --- scoreboard --------------------------------------------------------------------------------
    def predict_call(self, op, address, apic_id):
        """The model's outcome of a call; its memory reads and record join the expectations."""
        log = []
        status, field, record = self.model.call(op, address, apic_id, self._reader(log))
        self.expected_accesses += log
        if record is not None:
            self.expected_records.append(record)
        return status, field

    def predict_sipi(self, vcpu, vector):
        record = self.model.sipi(vcpu, vector)
        self.expected_records.append(record)
        return record

    def check(self):
        got = [_bare(r) for r in self.sink.records]
        for k, (g, e) in enumerate(zip(got, self.expected_records)):
            assert g == e, f"launch record {k}: got {g}, expected {e}"
        assert len(got) == len(self.expected_records), (
            f"{len(got)} launch records, expected {len(self.expected_records)}: "
            f"extra {got[len(self.expected_records):]} missing {self.expected_records[len(got):]}")
        made, expected = self.guest.accesses, self.expected_accesses
        first = next((k for k, (a, b) in enumerate(zip(made, expected)) if a != b), min(len(made), len(expected)))
        assert made == expected, (f"guest memory accesses differ from the model's from access {first}: "
                                  f"made {made[first:first + 3]}, expected {expected[first:first + 3]}; "
                                  f"{len(made)} made, {len(expected)} expected")

    async def finish(self, cycles=20):
        """Nothing more happens: no record or access appears, and the unit is idle."""
        await ClockCycles(self.dut.clk, cycles)
        self.check()
        await ReadOnly()
        assert self.idle.value == 1, "the unit is not idle at the end of the test"
        await RisingEdge(self.dut.clk)

    # --- operations, each checked against the model ----------------------------------------------
    async def call(self, op, address=0, apic_id=0, *, expect=None, timeout_cycles=2000):
        predicted = self.predict_call(op, address, apic_id)
        got = await self.port.call(op, address, apic_id, timeout_cycles=timeout_cycles)
        assert got == predicted, f"{op!r} APIC ID {apic_id:#x} at {address:#x}: got {got}, model {predicted}"
        if expect is not None:
            assert got == expect, f"{op!r} APIC ID {apic_id:#x} at {address:#x}: got {got}, expected {expect}"
        self.check()
        return got

    async def sipi(self, vcpu, vector=0x9A, *, kind=None, timeout_cycles=500):
        self.predict_sipi(vcpu, vector)
        await self.apics[vcpu].sipi(vector, timeout_cycles=timeout_cycles)
        self.check()
        got = _bare(self.sink.records[-1])
        if kind is not None:
            assert got["kind"] is kind, f"SIPI to vCPU {vcpu}: {got['kind']!r}, expected {kind!r}"
        return got

    async def init(self, vcpu):
        self.model.init(vcpu)
        await self.apics[vcpu].init()


# --- Linux's map ------------------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_linux_vmi_map_launched_on_next_sipi(dut):
    """vmi_startup_ipi_hook's map (cr0 0x80050023, CS 0x60, SS 0x68, DS/ES 0x7B, FS 0xD8, GS 0
    or the stack canary 0xE0, GDT limit 255, IDT limit 2047, EFLAGS 0) is accepted, nothing is
    launched until the SIPI, which launches it bit-exact; a second SIPI is DROPPED."""
    env = await Env.start(dut)
    for canary, ap in zip((False, True), env.aps):
        address = env.linux_map(ap, slot=ap, gs=LINUX_SELECTORS["stack_canary"] if canary else 0)
        records = len(env.sink.records)
        await env.call(SET, address, env.apic_id(ap), expect=(OK, StateField.NONE))
        await ClockCycles(dut.clk, 10)
        assert len(env.sink.records) == records, "SET launched something"
        record = await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
        state = record["state"]
        # bit-exact against the values written here, not only against the model
        assert (record["vcpu"], record["vector"], record["via_sipi"]) == (ap, 0x9A, 1)
        assert (state["cr0"], state["cr3"], state["cr4"], state["efer"]) == (0x8005_0023, PAGE_DIR, 0x690, 0)
        assert (state["eip"], state["esp"]) == (START_SECONDARY, 0xC800_0000 + 0x2000 * ap)
        assert state["eflags"] == EFLAGS_FIXED1 == 0x2
        assert state["cs"] == {"selector": 0x60, "attrib": 0xC9B, "limit": 0xFFFF_FFFF, "base": 0}
        assert state["ss"] == {"selector": 0x68, "attrib": 0xC93, "limit": 0xFFFF_FFFF, "base": 0}
        assert state["ds"] == state["es"] == {"selector": 0x7B, "attrib": 0xCF3, "limit": 0xFFFF_FFFF, "base": 0}
        assert state["fs"] == {"selector": 0xD8, "attrib": 0xC93, "limit": 0xFFFF_FFFF,
                               "base": PERCPU * (ap + 1)}
        if canary:       # GDT_ENTRY_INIT(0x4090, canary, 0x18): byte granular, read-only data
            assert state["gs"] == {"selector": 0xE0, "attrib": 0x491, "limit": 0x18, "base": 0x5000}
        else:
            assert state["gs"] == {"selector": 0, "attrib": 0, "limit": 0, "base": 0}
        assert state["gdtr"] == {"limit": 255, "base": env.gdt(ap)}
        assert state["idtr"] == {"limit": 2047, "base": IDT}
        assert all(state[r] == 0 for r in ("cr2", "eax", "ebx", "ecx", "edx", "ebp", "esi", "edi"))
        await env.sipi(ap, 0x9A, kind=LaunchKind.DROPPED)
    # the map's reads: 23 words of the struct, then two per non-null selector
    assert len(env.guest.accesses) == (23 + 2 * 5) + (23 + 2 * 6)
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_sipi_without_context_is_real_mode(dut):
    """An ordinary INIT-SIPI start: REAL_MODE with the vector, state all 0, no memory read; a
    SIPI to the BSP (running) is DROPPED, and INIT on the BSP changes nothing."""
    env = await Env.start(dut)
    for k, ap in enumerate(env.aps):
        record = await env.sipi(ap, 0x10 + k, kind=LaunchKind.REAL_MODE)
        assert record == {"vcpu": ap, "kind": LaunchKind.REAL_MODE, "vector": 0x10 + k,
                          "via_sipi": 1, "state": zero_state()}
    await env.sipi(env.bsp, 0x9A, kind=LaunchKind.DROPPED)
    await env.init(env.bsp)
    await env.sipi(env.bsp, 0x9A, kind=LaunchKind.DROPPED)
    assert env.guest.accesses == []
    await env.finish()


# --- random contexts against the model --------------------------------------------------------------------
def _random_context(rng, gdt_base):
    """A valid random map and its GDT: ``(fields, {index: descriptor})``."""
    indexes = rng.sample(range(1, 40), 6)
    rpl = rng.randrange(4)
    entries, selectors = {}, {}

    def seg(type_):
        return descriptor(rng.getrandbits(32), rng.getrandbits(20), type_, dpl=rng.randrange(4),
                          avl=rng.randrange(2), l=rng.randrange(2), db=rng.randrange(2), g=rng.randrange(2))
    for name, index in zip(("cs", "ss", "ds", "es", "fs", "gs"), indexes):
        if name == "cs":
            entries[index] = seg(rng.randrange(8, 16))
            selectors[name] = index << 3 | rpl
        elif name == "ss":
            entries[index] = seg(rng.choice((2, 3, 6, 7)))
            selectors[name] = index << 3 | rpl
        elif rng.random() < 0.25:
            selectors[name] = rng.randrange(4)                      # null, any RPL
        else:
            entries[index] = seg(rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 14, 15)))
            selectors[name] = index << 3 | rng.randrange(4)
    cr0 = 1 | sum(bit for bit in (1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 16, 1 << 18, 1 << 31)
                  if rng.random() < 0.5)
    cr0 |= rng.choice((0, 1 << 30, 3 << 29))                        # CD, or CD and NW
    cr4 = rng.getrandbits(32) & ~(1 << 15 | 1 << 19 | 0xFE00_0000)
    efer = sum(bit for bit in (1, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15) if rng.random() < 0.5)
    eflags = rng.getrandbits(32) & ~(1 << 3 | 1 << 5 | 1 << 15 | 0xFFC0_0000 | 1 << 17)
    fields = dict(cr0=cr0, cr4=cr4, efer=efer, eflags=eflags, ldtr=0, gdtr_base=gdt_base,
                  gdtr_limit=max(indexes) * 8 + 7 + rng.randrange(0, 0x100),
                  idtr_base=rng.getrandbits(32), idtr_limit=rng.getrandbits(16), **selectors)
    for name in ("cr2", "cr3", "eip", "esp", "eax", "ebx", "ecx", "edx", "ebp", "esi", "edi"):
        fields[name] = rng.getrandbits(32)
    return fields, entries


@cocotb.test(**TIMEOUT)
async def test_random_contexts_bit_exact(dut):
    """Seeded random valid maps (every code/data type, granularity, RPL, null data selectors),
    alternately armed and launched by SIPI, or started directly: every record bit-exact with the
    model's StartState."""
    env = await Env.start(dut)
    rng = random.Random(f"contexts:{env.config.label}")
    for k in range(24):
        ap = env.aps[k % len(env.aps)]
        fields, entries = _random_context(rng, env.gdt(ap))
        env.write_gdt(env.gdt(ap), entries)
        address = env.write_struct(STRUCTS + 0x100 * (k % 4), **fields)
        if k % 2 == 0:
            await env.call(SET, address, env.apic_id(ap), expect=(OK, StateField.NONE))
            await env.sipi(ap, rng.getrandbits(8), kind=LaunchKind.CONTEXT)
        else:
            await env.call(START, address, env.apic_id(ap), expect=(OK, StateField.NONE))
            assert env.sink.records[-1]["via_sipi"] == 0 and env.sink.records[-1]["vector"] == 0
        await env.init(ap)
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_random_corruptions_match_model(dut):
    """Random valid maps with one to three random bit flips (struct fields or GDT descriptors):
    the unit's status, field and memory reads equal the model's; what it accepts launches
    bit-exact on the next SIPI, and what it refuses stores nothing (that SIPI is REAL_MODE)."""
    env = await Env.start(dut)
    rng = random.Random(f"corruptions:{env.config.label}")
    seen = set()
    for k in range(40):
        ap = env.aps[k % len(env.aps)]
        fields, entries = _random_context(rng, env.gdt(ap))
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.7:
                name = rng.choice(sorted(VMI_AP_STATE_OFFSETS))
                fields[name] ^= 1 << rng.randrange(8 * VMI_AP_STATE_OFFSETS[name][1])
            else:
                index = rng.choice(sorted(entries))
                entries[index] ^= 1 << rng.randrange(40, 56)         # the attribute bytes
        env.write_gdt(env.gdt(ap), entries)
        address = env.write_struct(STRUCTS, **fields)
        status, field = await env.call(SET, address, env.apic_id(ap))
        seen.add((status, field))
        await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT if status is OK else LaunchKind.REAL_MODE)
        await env.init(ap)
    env.dut._log.info("outcomes seen: %s", sorted((s.name, f.name) for s, f in seen))
    assert len(seen) >= 6, f"the corruptions reached only {seen}"
    await env.finish()


# --- every refusal rule ----------------------------------------------------------------------------------
def _rule_cases():
    """(what, struct overrides, {GDT index: descriptor} overrides, status, field)."""
    cs_bad = lambda **kw: {12: descriptor(0, 0xFFFFF, kw.pop("type", 0xA), **kw)}
    ss_bad = lambda **kw: {13: descriptor(0, 0xFFFFF, kw.pop("type", 0x2), **kw)}
    ds_bad = lambda **kw: {15: descriptor(0, 0xFFFFF, kw.pop("type", 0x2), dpl=3, **kw)}
    fs_bad = lambda **kw: {27: descriptor(0, 0xFFFFF, kw.pop("type", 0x2), **kw)}
    return [
        ("CR0 reserved bit 6", dict(cr0=0x8005_0063), {}, RESERVED, StateField.CR0),
        ("CR0 reserved bit 17", dict(cr0=0x8007_0023), {}, RESERVED, StateField.CR0),
        ("CR0 reserved bit 28", dict(cr0=0x9005_0023), {}, RESERVED, StateField.CR0),
        ("CR0.PE 0, PG 1", dict(cr0=0x8005_0022), {}, INVALID, StateField.CR0),
        ("CR0 0 (real mode)", dict(cr0=0), {}, INVALID, StateField.CR0),
        ("CR0.NW without CD", dict(cr0=0x2000_0001), {}, INVALID, StateField.CR0),
        ("CR4 bit 15", dict(cr4=1 << 15), {}, RESERVED, StateField.CR4),
        ("CR4 bit 19", dict(cr4=1 << 19), {}, RESERVED, StateField.CR4),
        ("CR4 bit 25", dict(cr4=1 << 25), {}, RESERVED, StateField.CR4),
        ("CR4 bit 31", dict(cr4=1 << 31), {}, RESERVED, StateField.CR4),
        ("EFER bit 1", dict(efer=1 << 1), {}, RESERVED, StateField.EFER),
        ("EFER bit 9", dict(efer=1 << 9), {}, RESERVED, StateField.EFER),
        ("EFER bit 32", dict(efer=1 << 32), {}, RESERVED, StateField.EFER),
        ("EFER bit 63", dict(efer=1 << 63), {}, RESERVED, StateField.EFER),
        ("EFER.LME", dict(efer=1 << 8), {}, INVALID, StateField.EFER),
        ("EFER.LMA", dict(efer=1 << 10), {}, INVALID, StateField.EFER),
        ("EFLAGS bit 3", dict(eflags=1 << 3), {}, RESERVED, StateField.EFLAGS),
        ("EFLAGS bit 5", dict(eflags=1 << 5), {}, RESERVED, StateField.EFLAGS),
        ("EFLAGS bit 15", dict(eflags=1 << 15), {}, RESERVED, StateField.EFLAGS),
        ("EFLAGS bit 22", dict(eflags=1 << 22), {}, RESERVED, StateField.EFLAGS),
        ("EFLAGS bit 31", dict(eflags=1 << 31), {}, RESERVED, StateField.EFLAGS),
        ("EFLAGS.VM", dict(eflags=1 << 17), {}, INVALID, StateField.EFLAGS),
        ("LDTR 0x50", dict(ldtr=0x50), {}, INVALID, StateField.LDTR),
        ("CS null", dict(cs=0), {}, INVALID, StateField.CS),
        ("CS null with RPL 3", dict(cs=3), {}, INVALID, StateField.CS),
        ("SS null", dict(ss=0), {}, INVALID, StateField.SS),
        ("CS TI", dict(cs=0x64), {}, INVALID, StateField.CS),
        ("DS TI, index 0", dict(ds=0x4), {}, INVALID, StateField.DS),
        ("CS beyond the GDT limit", dict(gdtr_limit=0x5F), {}, INVALID, StateField.CS),
        ("SS one byte beyond the limit", dict(gdtr_limit=0x6E), {}, INVALID, StateField.SS),
        ("FS beyond the limit", dict(gdtr_limit=0xD6), {}, INVALID, StateField.FS),
        ("GDTR base not 8-byte aligned", dict(gdtr_base_offset=4), {}, INVALID, StateField.GDTR),
        ("CS not present", {}, cs_bad(p=0), INVALID, StateField.CS),
        ("CS a data segment", {}, cs_bad(type=0x2), INVALID, StateField.CS),
        ("CS a system descriptor", {}, cs_bad(s=0, type=0xB), INVALID, StateField.CS),
        ("SS a code segment", {}, ss_bad(type=0xA), INVALID, StateField.SS),
        ("SS read-only data", {}, ss_bad(type=0x0), INVALID, StateField.SS),
        ("SS not present", {}, ss_bad(p=0), INVALID, StateField.SS),
        ("SS a system descriptor", {}, ss_bad(s=0), INVALID, StateField.SS),
        ("SS.RPL 3, CS.RPL 0", dict(ss=0x6B), {}, INVALID, StateField.SS),
        ("DS execute-only code", {}, ds_bad(type=0x8), INVALID, StateField.DS),
        ("DS not present", {}, ds_bad(p=0), INVALID, StateField.DS),
        ("DS and ES a system descriptor: DS first", {}, ds_bad(s=0), INVALID, StateField.DS),
        ("FS not present", {}, fs_bad(p=0), INVALID, StateField.FS),
        ("GS execute-only code", dict(gs=0xE8), {29: descriptor(0, 0xFFFFF, 0xC)}, INVALID, StateField.GS),
        ("GS a system descriptor", dict(gs=0xE8), {29: descriptor(0, 0xFFFFF, 0x2, s=0)}, INVALID, StateField.GS),
        ("ES only: a data selector to a system descriptor", dict(es=0x20),
         {4: descriptor(0, 0x67, 0x9, s=0)}, INVALID, StateField.ES),
        # the first failing rule is reported
        ("CR0 reserved and LDTR", dict(cr0=0x8005_0063, ldtr=8), {}, RESERVED, StateField.CR0),
        ("EFER reserved and EFLAGS.VM", dict(efer=2, eflags=1 << 17), {}, RESERVED, StateField.EFER),
        ("EFLAGS.VM and CS null", dict(eflags=1 << 17, cs=0), {}, INVALID, StateField.EFLAGS),
        ("CS and DS both bad", dict(cs=0x64, ds=0x4), {}, INVALID, StateField.CS),
        ("GDTR unaligned and DS TI", dict(gdtr_base_offset=4, ds=0x7F), {}, INVALID, StateField.GDTR),
        # accepted at the edges of the rules
        ("CR0.NW with CD", dict(cr0=0x6005_0023), {}, OK, StateField.NONE),
        ("CR0 every defined bit", dict(cr0=0xE005_003F), {}, OK, StateField.NONE),
        ("CR4 every other bit", dict(cr4=0x01F7_7FFF), {}, OK, StateField.NONE),
        ("EFER every other bit", dict(efer=0xF801), {}, OK, StateField.NONE),
        ("EFLAGS every other bit, bit 1 set", dict(eflags=0x003D_7FD7), {}, OK, StateField.NONE),
        ("GDT limit exactly covering FS", dict(gdtr_limit=0xDF, gs=0), {}, OK, StateField.NONE),
        ("DS readable code", {}, ds_bad(type=0xA), OK, StateField.NONE),
        ("GS null with RPL 3", dict(gs=3), {}, OK, StateField.NONE),
    ]


@cocotb.test(**TIMEOUT)
async def test_every_rule_one_by_one(dut):
    """Each validation rule alone on Linux's map (and the accepted edges of the rules), with
    SET: status and field as documented and as the model; a refused map stores nothing (the
    following SIPI is REAL_MODE), an accepted one launches on it."""
    env = await Env.start(dut)
    ap = env.aps[0]
    for what, overrides, gdt_entries, status, field in _rule_cases():
        overrides = dict(overrides)
        gdt = env.gdt(ap) + overrides.pop("gdtr_base_offset", 0)
        env.write_gdt(env.gdt(ap), linux_gdt(percpu_base=PERCPU, canary_base=0x5000))
        env.write_gdt(env.gdt(ap), gdt_entries)
        fields = linux_ap_state(gdt_base=gdt, idt_base=IDT, cr3=PAGE_DIR, eip=START_SECONDARY, esp=0xC800_0000)
        fields.update(overrides)
        address = env.write_struct(STRUCTS, **fields)
        got = await env.call(SET, address, env.apic_id(ap))
        assert got == (status, field), f"{what}: got {got}, expected {(status, field)}"
        await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT if status is OK else LaunchKind.REAL_MODE)
        await env.init(ap)
        # START makes the same checks
        if status is not OK:
            got = await env.call(START, address, env.apic_id(ap))
            assert got == (status, field), f"{what} (START): got {got}"
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_unknown_apic_id_and_bad_op(dut):
    """An APIC ID no vCPU has: UNKNOWN_APIC_ID for SET and START, no memory read; op 3: BAD_OP
    whatever the other fields; nothing changes (the next SIPI is REAL_MODE)."""
    env = await Env.start(dut)
    address = env.linux_map(env.aps[0])
    for apic_id in env.unknown_apic_ids():
        for op in (SET, START):
            await env.call(op, address, apic_id, expect=(StartStatus.UNKNOWN_APIC_ID, StateField.NONE))
    await env.call(3, address, env.apic_id(env.aps[0]), expect=(StartStatus.BAD_OP, StateField.NONE))
    await env.call(3, 1, 0xFFFF_FFFF, expect=(StartStatus.BAD_OP, StateField.NONE))
    assert env.guest.accesses == []
    await env.sipi(env.aps[0], 0x9A, kind=LaunchKind.REAL_MODE)
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_bad_address(dut):
    """A struct GPA not 4-byte aligned, or a struct crossing 4 GiB: BAD_ADDRESS with no memory
    read; the last aligned address whose struct ends at 4 GiB (0xFFFF_FFA4) is read and
    accepted."""
    env = await Env.start(dut)
    ap = env.aps[0]
    env.linux_map(ap)
    fields = linux_ap_state(gdt_base=env.gdt(ap), idt_base=IDT, cr3=PAGE_DIR, eip=START_SECONDARY, esp=0xC800_0000)
    good = STRUCTS
    for address in (good + 1, good + 2, good + 3, 0xFFFF_FFA8, 0xFFFF_FFFC, 0xFFFF_FFA5):
        for op in (SET, START):
            await env.call(op, address, env.apic_id(ap), expect=(StartStatus.BAD_ADDRESS, StateField.NONE))
    assert env.guest.accesses == []
    top = env.write_struct(0xFFFF_FFA4, **fields)
    await env.call(SET, top, env.apic_id(ap), expect=(OK, StateField.NONE))
    assert env.guest.accesses[22][0] == 0xFFFF_FFFC
    await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
    await env.finish()


# --- START ----------------------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_start_direct(dut):
    """START to a waiting vCPU: a CONTEXT record with via_sipi 0 and vector 0 (no SIPI), the vCPU
    running; START again, or to the BSP: ALREADY_RUNNING before any memory read; a SIPI to it is
    DROPPED.  START does not consume an armed context: after INIT the next SIPI launches the
    armed one."""
    env = await Env.start(dut)
    ap = env.aps[0]
    armed = env.linux_map(ap, slot=0, eip=0xC000_1111)
    started = env.linux_map(ap, slot=1, eip=0xC000_2222)
    await env.call(SET, armed, env.apic_id(ap), expect=(OK, StateField.NONE))
    await env.call(START, started, env.apic_id(ap), expect=(OK, StateField.NONE))
    record = _bare(env.sink.records[-1])
    assert (record["vcpu"], record["kind"], record["via_sipi"], record["vector"]) == (ap, LaunchKind.CONTEXT, 0, 0)
    assert record["state"]["eip"] == 0xC000_2222
    reads = len(env.guest.accesses)
    await env.call(START, started, env.apic_id(ap), expect=(StartStatus.ALREADY_RUNNING, StateField.NONE))
    await env.call(START, started, env.apic_id(env.bsp), expect=(StartStatus.ALREADY_RUNNING, StateField.NONE))
    assert len(env.guest.accesses) == reads
    await env.sipi(ap, 0x9A, kind=LaunchKind.DROPPED)
    await env.init(ap)
    record = await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
    assert record["state"]["eip"] == 0xC000_1111
    # every AP can be started directly
    for other in env.aps[1:]:
        await env.call(START, env.linux_map(other, slot=2), env.apic_id(other), expect=(OK, StateField.NONE))
    await env.finish()


# --- PARAVIRT and INIT -------------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_paravirt_refuses_sipi_without_context(dut):
    """Before PARAVIRT a SIPI with no context starts real mode; after it (address and APIC ID
    ignored) such a SIPI is REFUSED and the vCPU keeps waiting: a later SET + SIPI and a START
    both start vCPUs in a context."""
    env = await Env.start(dut)
    first, *others = env.aps
    await env.sipi(first, 0x9A, kind=LaunchKind.REAL_MODE)
    await env.init(first)
    await env.call(PARAVIRT, 0x1235, 0xDEAD_BEEF, expect=(OK, StateField.NONE))
    assert env.guest.accesses == []
    await env.sipi(first, 0x9A, kind=LaunchKind.REFUSED)
    await env.sipi(first, 0x9B, kind=LaunchKind.REFUSED)        # still waiting
    await env.call(SET, env.linux_map(first), env.apic_id(first), expect=(OK, StateField.NONE))
    await env.sipi(first, 0x9A, kind=LaunchKind.CONTEXT)
    await env.sipi(first, 0x9A, kind=LaunchKind.DROPPED)
    await env.init(first)
    await env.sipi(first, 0x9A, kind=LaunchKind.REFUSED)        # the context was consumed
    for ap in others:
        await env.sipi(ap, 0x9A, kind=LaunchKind.REFUSED)
        await env.call(START, env.linux_map(ap, slot=1), env.apic_id(ap), expect=(OK, StateField.NONE))
    await env.call(PARAVIRT, expect=(OK, StateField.NONE))      # again: no change
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_init_keeps_an_armed_context(dut):
    """INIT while waiting or after arming keeps the armed context (the next SIPI launches it);
    INIT of a running AP makes it wait again; re-arming replaces the context."""
    env = await Env.start(dut)
    ap = env.aps[-1]
    await env.call(SET, env.linux_map(ap, slot=0, eip=0xC000_0001), env.apic_id(ap), expect=(OK, StateField.NONE))
    await env.init(ap)
    await env.init(ap)
    await env.call(SET, env.linux_map(ap, slot=1, eip=0xC000_0002), env.apic_id(ap), expect=(OK, StateField.NONE))
    await env.init(ap)
    record = await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
    assert record["state"]["eip"] == 0xC000_0002
    await env.init(ap)
    await env.sipi(ap, 0x9A, kind=LaunchKind.REAL_MODE)
    # a SET while running arms the next start after INIT
    await env.call(SET, env.linux_map(ap, slot=2, eip=0xC000_0003), env.apic_id(ap), expect=(OK, StateField.NONE))
    await env.sipi(ap, 0x9A, kind=LaunchKind.DROPPED)           # still running: the context stays
    await env.init(ap)
    record = await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
    assert record["state"]["eip"] == 0xC000_0003
    await env.finish()


# --- the engine: concurrency and fairness --------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_sipi_and_call_together(dut):
    """A SIPI and a call raised in the same cycle are both served: the call first after reset;
    then, while a SIPI waits, it goes before the next call (the engine alternates)."""
    env = await Env.start(dut)
    a, b = env.aps[0], env.aps[-1]
    env.port.set_exact_timing()
    for apic in env.apics:
        apic.set_exact_timing()
    # SIPI to a while SET for b: independent vCPUs; the call goes first after reset
    address = env.linux_map(b)
    assert env.predict_call(SET, address, env.apic_id(b)) == (OK, StateField.NONE)
    env.predict_sipi(a, 0x9A)
    sipi = cocotb.start_soon(env.apics[a].sipi(0x9A, timeout_cycles=500))
    call = cocotb.start_soon(env.port.call(SET, address, env.apic_id(b)))
    assert await call == (OK, StateField.NONE)
    await sipi
    env.check()
    assert env.sink.records[-1]["taken_ns"] > env.port.calls[-1]["done_ns"]
    # SIPI to b and START to b together: the call first (turn is the call's after the last
    # SIPI), so the START launches b and the SIPI is DROPPED
    env.predict_call(START, env.linux_map(b, slot=1), env.apic_id(b))
    env.predict_sipi(b, 0x9B)
    sipi = cocotb.start_soon(env.apics[b].sipi(0x9B, timeout_cycles=500))
    call = cocotb.start_soon(env.port.call(START, STRUCTS + 0x100, env.apic_id(b)))
    assert await call == (OK, StateField.NONE)
    await sipi
    env.check()
    assert [r["kind"] for r in env.sink.records[-2:]] == [LaunchKind.CONTEXT, LaunchKind.DROPPED]
    # a call, then a SIPI raised with it, then a second call at once: the SIPI goes between
    await env.init(b)
    address = env.linux_map(b, slot=2)
    first_status = env.predict_call(SET, address, env.apic_id(b))
    env.predict_sipi(b, 0x9C)
    second_status = env.predict_call(START, address, env.apic_id(b))
    sipi = cocotb.start_soon(env.apics[b].sipi(0x9C, timeout_cycles=500))
    assert await env.port.call(SET, address, env.apic_id(b)) == first_status
    assert await env.port.call(START, address, env.apic_id(b)) == second_status == (
        StartStatus.ALREADY_RUNNING, StateField.NONE)
    await sipi
    env.check()
    assert env.sink.records[-1]["kind"] is LaunchKind.CONTEXT
    assert env.sink.records[-1]["taken_ns"] < env.port.calls[-1]["taken_ns"]
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_every_vcpu_sipi_at_once(dut):
    """A SIPI on every vCPU in one cycle, with calls kept coming: each is served exactly once
    (the round robin), within a bounded number of services, none starved."""
    env = await Env.start(dut)
    for apic in env.apics:
        apic.set_exact_timing()
    expected = {i: env.model.sipi(i, 0x40 + i) for i in range(env.n)}
    tasks = [cocotb.start_soon(env.apics[i].sipi(0x40 + i, timeout_cycles=5000)) for i in range(env.n)]
    calls = 0
    while not all(t.done() for t in tasks):
        # unknown APIC IDs: calls that keep the engine busy without reading memory
        got = await env.port.call(SET, 0, env.unknown_apic_ids()[0])
        assert got == (StartStatus.UNKNOWN_APIC_ID, StateField.NONE)
        calls += 1
        assert calls <= 2 * env.n + 2, "a SIPI waited more than the documented bound"
    for task in tasks:
        await task
    got = sorted((_bare(r) for r in env.sink.records), key=lambda r: r["vcpu"])
    assert got == [expected[i] for i in range(env.n)]
    env.expected_records = [_bare(r) for r in env.sink.records]
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_back_to_back_calls_and_sipis_alternate(dut):
    """A caller that keeps ``valid`` high without a gap (op 3, answered in two cycles) and a SIPI
    on every vCPU: the engine alternates, so every SIPI is served within the bound while the
    calls go on (at least one call between two SIPIs), and neither side starves."""
    env = await Env.start(dut)
    for apic in env.apics:
        apic.set_exact_timing()
    expected = {i: env.model.sipi(i, 0x60 + i) for i in range(env.n)}
    valid, op, done = port(dut, "call__valid"), port(dut, "call__op"), port(dut, "call__done")
    await env.port.sync()
    op.value, valid.value = 3, 1
    tasks = [cocotb.start_soon(env.apics[i].sipi(0x60 + i, timeout_cycles=1000)) for i in range(env.n)]
    calls, served_at = 0, {}
    for cycle in range(400):
        await FallingEdge(dut.clk)
        await ReadOnly()
        calls += int(done.value)
        for i, task in enumerate(tasks):
            if task.done() and i not in served_at:
                served_at[i] = (cycle, calls)
        if len(served_at) == env.n and calls >= env.n + 2:
            break
    await FallingEdge(dut.clk)
    valid.value = 0
    await ClockCycles(dut.clk, 5)
    for task in tasks:
        await task
    # per SIPI: one call (2 cycles) and one SIPI service (3 cycles), and the sink's stalls
    bound = watchdog_cycles(8 * env.n)
    assert max(cycle for cycle, _ in served_at.values()) <= bound, f"SIPIs served at {served_at}"
    assert calls >= env.n + 2, f"only {calls} calls answered while the SIPIs were served"
    order = sorted(served_at.values())
    assert all(b[1] > a[1] for a, b in zip(order, order[1:])), f"two SIPIs with no call between: {served_at}"
    got = sorted((_bare(r) for r in env.sink.records), key=lambda r: r["vcpu"])
    assert got == [expected[i] for i in range(env.n)]
    env.expected_records = [_bare(r) for r in env.sink.records]
    await env.finish()


# --- stalls ---------------------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_launch_sink_stall_loses_nothing(dut):
    """The sink stalls 600 cycles: SIPIs on every vCPU and a START wait (the SIPIs stay pending
    in their APICs, unacknowledged; idle is low); when it takes again every record arrives
    exactly once and bit-exact.  Then seeded random sink stalls over a run of SIPIs, INITs,
    SETs and STARTs."""
    env = await Env.start(dut)
    ap = env.aps[0]
    await env.call(SET, env.linux_map(ap), env.apic_id(ap), expect=(OK, StateField.NONE))
    env.sink.set_pause_generator([True] * 600)
    expected = {i: env.model.sipi(i, 0x20 + i) for i in range(env.n)}
    tasks = [cocotb.start_soon(env.apics[i].sipi(0x20 + i, timeout_cycles=2000)) for i in range(env.n)]
    await ClockCycles(dut.clk, 400)
    assert env.sink.records == []
    assert not any(t.done() for t in tasks)
    await ReadOnly()
    assert env.idle.value == 0
    # the record waiting is about one vCPU, whose CPU a system keeps from taking an INIT
    holding = int(dut.holding.value)
    assert holding and holding & (holding - 1) == 0, f"holding {holding:#x}"
    await RisingEdge(dut.clk)
    for task in tasks:
        await task
    await ReadOnly()
    assert int(dut.holding.value) == 0
    await RisingEdge(dut.clk)
    assert env.sink.stalled >= 599
    got = sorted((_bare(r) for r in env.sink.records), key=lambda r: r["vcpu"])
    assert got == [expected[i] for i in range(env.n)]
    env.expected_records = [_bare(r) for r in env.sink.records]
    env.check()

    rng = random.Random(f"sink:{env.config.label}")
    env.sink.set_pause_generator(random_pauses(rng, stall=0.5, max_burst=20))
    for k in range(30):
        vcpu = rng.randrange(env.n)
        choice = rng.random()
        if choice < 0.4:
            await env.sipi(vcpu, rng.getrandbits(8), timeout_cycles=2000)
        elif choice < 0.6:
            await env.init(vcpu)
        else:
            op = rng.choice((SET, START))
            await env.call(op, env.linux_map(vcpu, slot=k % 4), env.apic_id(vcpu))
    assert env.sink.stalled > 600
    env.sink.set_pause_generator(None)
    await env.finish()


@cocotb.test(**TIMEOUT)
async def test_memory_stalls(dut):
    """Guest memory holds req_ready low and answers late (seeded): the same outcomes and reads,
    bit-exact, on SET, START and refusals found late (a bad descriptor)."""
    env = await Env.start(dut)
    rng = random.Random(f"memory:{env.config.label}")
    env.guest.set_pause_generator(random_pauses(rng, stall=0.5, max_burst=6))
    for k in range(12):
        ap = env.aps[k % len(env.aps)]
        fields, entries = _random_context(rng, env.gdt(ap))
        if k % 3 == 2:
            entries[max(entries)] &= ~(1 << 47)                       # the last one not present
        env.write_gdt(env.gdt(ap), entries)
        address = env.write_struct(STRUCTS + 0x100 * (k % 4), **fields)
        op = SET if k % 2 == 0 else START
        status, _ = await env.call(op, address, env.apic_id(ap), timeout_cycles=5000)
        if op is SET:
            await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT if status is OK else LaunchKind.REAL_MODE)
        await env.init(ap)
    assert env.guest.stalled["request"] > 50 and env.guest.stalled["response"] > 50, env.guest.stalled
    await env.finish()


# --- idle --------------------------------------------------------------------------------------------------
async def _sample(env, cycles, log):
    """Per cycle, in the read-only phase after the falling edge (what the next rising edge
    samples: the drivers write at falling edges): (idle, call valid, done, any SIPI pending, any
    AP's init_taken)."""
    names = ["call__valid", "call__done"]
    handles = [port(env.dut, n) for n in names]
    sipis = [port(env.dut, f"apic__{i}__sipi") for i in range(env.n)]
    inits = [port(env.dut, f"apic__{i}__init_taken") for i in range(env.n)]
    for _ in range(cycles):
        await FallingEdge(env.dut.clk)
        await ReadOnly()
        log.append((int(env.idle.value), *(int(h.value) for h in handles),
                    int(any(s.value for s in sipis)),
                    int(any(h.value for k, h in enumerate(inits) if k != env.bsp))))


@cocotb.test(**TIMEOUT)
async def test_idle_exactly_while_work_is_pending(dut):
    """``idle`` is low exactly from a call's valid to its done, while a SIPI is pending (also
    while the sink stalls its record), and in the cycle of an AP's INIT; high otherwise."""
    env = await Env.start(dut)
    ap = env.aps[0]
    address = env.linux_map(ap)
    log = []
    sampler = cocotb.start_soon(_sample(env, 100_000, log))
    await ClockCycles(dut.clk, 5)
    await env.call(SET, address, env.apic_id(ap), expect=(OK, StateField.NONE))
    await ClockCycles(dut.clk, 5)
    env.sink.set_pause_generator([True] * 30)
    await env.sipi(ap, 0x9A, kind=LaunchKind.CONTEXT)
    await ClockCycles(dut.clk, 5)
    await env.init(ap)
    await ClockCycles(dut.clk, 5)
    await env.call(START, address, env.apic_id(ap), expect=(OK, StateField.NONE))
    await ClockCycles(dut.clk, 5)
    await env.call(START, address, env.apic_id(ap), expect=(StartStatus.ALREADY_RUNNING, StateField.NONE))
    await ClockCycles(dut.clk, 5)
    sampler.cancel()
    # busy: from a call's valid to its done; a pending SIPI; an AP's INIT
    busy, in_call = [], False
    for idle, valid, done, sipi, init in log:
        in_call = in_call or bool(valid)
        busy.append(in_call or bool(sipi) or bool(init))
        if done:
            in_call = False
    wrong = [k for k, (sample, b) in enumerate(zip(log, busy)) if sample[0] == b]
    assert not wrong, f"idle wrong in sampled cycles {wrong[:10]}...: {[log[k] for k in wrong[:10]]}"
    assert sum(busy) > 150 and len(log) - sum(busy) > 20
    await env.finish()
