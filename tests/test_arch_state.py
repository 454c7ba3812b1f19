"""The CPU models' architectural state (sim/models/cpu/state.py): what RESET, INIT, SIPI, SMI and
the mailbox wakeup set, and the entry requirements programs declare, against the SDM's values."""

import dataclasses
from types import SimpleNamespace

import pytest

from apwake.sim.models.cpu.linux import TRAMPOLINE, TRAMPOLINE_ENTRY
from apwake.sim.models.cpu.model import RESET_VECTOR, RESET_VECTOR_ENTRY, SEV_ES_RESET, SMBASE
from apwake.sim.models.cpu.state import (ArchState, DescriptorTable, EntryRequirement, Segment, long_mode_flat,
                                         real_mode_at, segment_attrib)

CPU = SimpleNamespace(name="CPU 3 (APIC ID 0x3)")


def test_reset_init_and_sipi_follow_the_sdm():
    """Power-up: CR0 0x6000_0010, CS F000/FFFF_0000, EIP FFF0 (the reset vector); INIT keeps
    CR0.CD/NW and nothing else; a SIPI gives CS = vector << 8, base vector << 12, IP 0."""
    reset = ArchState.reset()
    assert reset.cr0 == 0x6000_0010 and reset.rflags == 0x2 and reset.mode == "real"
    assert (reset.cs.selector, reset.cs.base, reset.cs.limit) == (0xF000, 0xFFFF_0000, 0xFFFF)
    assert reset.linear_ip == RESET_VECTOR
    running = ArchState.long_mode_entry(0x100_0000, cr3=0x1000)
    running.cr0 &= ~(1 << 30 | 1 << 29)                 # the OS enabled caching
    init = running.after_init()
    assert init.cr0 == 0x10 and init.efer == 0 and init.cr3 == 0 and init.mode == "real"
    assert ArchState.reset().after_init().cr0 == 0x6000_0010        # CD and NW kept
    sipi = init.after_sipi(0x9A)
    assert (sipi.cs.selector, sipi.cs.base, sipi.rip) == (0x9A00, 0x9A000, 0)
    assert sipi.linear_ip == TRAMPOLINE and sipi.cr0 == init.cr0
    with pytest.raises(ValueError, match="SIPI vector must be 0 to 0xFF, not 256"):
        init.after_sipi(0x100)


def test_mailbox_sev_es_and_smm_states():
    wake = ArchState.long_mode_entry(0x9A000, cr3=0x80_0000)
    assert wake.mode == "64-bit" and wake.linear_ip == 0x9A000 and not wake.interrupts_enabled
    assert wake.cs.base == 0 and wake.cr0 & 1 << 31 and wake.efer & 1 << 10
    sev = ArchState.sev_es_launch(SEV_ES_RESET)
    assert (sev.cs.selector, sev.cs.base, sev.rip) == (0xF000, 0x80_0000, 0xB000)
    assert sev.linear_ip == SEV_ES_RESET and sev.mode == "real"
    smm = wake.smm_entry(SMBASE)
    assert smm.mode == "real" and smm.linear_ip == SMBASE + 0x8000 and smm.efer == 0
    assert smm.cs.limit == 0xFFFF_FFFF and not smm.cr0 & 1 and not smm.cr0 & 1 << 31


def test_context_state_and_report_form():
    """A launch record's state (as the start-context unit unpacks it) becomes the CPU's state;
    the report form lists every register the issue names."""
    seg = lambda sel, base: {"selector": sel, "base": base, "limit": 0xFFFF_FFFF,
                             "attrib": segment_attrib(type=0x3, db=1, g=1)}
    context = {"cr0": 0x8005_0023, "cr2": 0, "cr3": 0x3000, "cr4": 0x690, "efer": 0,
               "eip": 0x100_0100, "esp": 0x2C0_8000, "eflags": 2,
               "cs": {**seg(0x60, 0), "attrib": segment_attrib(type=0xB, db=1, g=1)},
               "ss": seg(0x68, 0), "ds": seg(0x7B, 0), "es": seg(0x7B, 0),
               "fs": seg(0xD8, 0x260_1000), "gs": {"selector": 0, "base": 0, "limit": 0, "attrib": 0},
               "gdtr": {"base": 0x250_0100, "limit": 255}, "idtr": {"base": 0x204_0000, "limit": 2047}}
    state = ArchState.from_context(context)
    assert state.mode == "protected+paging" and state.linear_ip == 0x100_0100
    assert state.value("fs.base") == 0x260_1000 and state.value("gdtr.limit") == 255
    report = state.as_dict()
    assert set(report) == {"mode", "cr0", "cr3", "cr4", "efer", "rip", "rsp", "rflags", "cs", "ss",
                           "ds", "es", "fs", "gs", "gdtr", "idtr"}
    assert report["fs"] == {"selector": 0xD8, "base": 0x260_1000, "limit": 0xFFFF_FFFF,
                            "attrib": segment_attrib(type=0x3, db=1, g=1)}
    with pytest.raises(KeyError, match="no register 'fs.bas'"):
        state.value("fs.bas")
    with pytest.raises(ValueError, match="field dpl = 4 does not fit in 2 bits"):
        segment_attrib(type=3, dpl=4)


def test_entry_failures_name_the_register_and_value():
    percpu = EntryRequirement("per-CPU FS", (
        lambda cpu, s: None if s.fs.base else ("fs.base", "per-CPU segment missing"),))
    state = ArchState.long_mode_entry(0x1000, cr3=0)
    assert percpu.failure(CPU, state, "start_secondary") == (
        "CPU 3 (APIC ID 0x3) entered start_secondary with FS base 0: per-CPU segment missing")
    state.fs = Segment(selector=0xD8, base=0x260_1000)
    assert percpu.failure(CPU, state, "start_secondary") is None
    with pytest.raises(ValueError, match="checks or alternatives"):
        EntryRequirement("neither")


def test_trampoline_takes_real_mode_or_64_bit_entry():
    """The trampoline page: a SIPI's real mode at its page, or the mailbox's 64-bit entry; a
    real-mode entry elsewhere is named with CS:IP."""
    sipi = ArchState.reset().after_init().after_sipi(TRAMPOLINE >> 12)
    assert TRAMPOLINE_ENTRY.failure(CPU, sipi, "kernel: trampoline") is None
    wake = ArchState.long_mode_entry(TRAMPOLINE, cr3=0x80_0000)
    assert TRAMPOLINE_ENTRY.failure(CPU, wake, "kernel: trampoline") is None
    wrong = ArchState.reset().after_init().after_sipi(0x9B)
    message = TRAMPOLINE_ENTRY.failure(CPU, wrong, "kernel: trampoline")
    assert message == ("CPU 3 (APIC ID 0x3) entered kernel: trampoline with CS base 0x9b000: the "
                       "real-mode trampoline must be entered at 0x9a000, CS:IP gives 0x9b000")
    # 64-bit mode with interrupts on: the 64-bit entry's problem is named, not real mode's
    wake.set_interrupt_flag(True)
    assert TRAMPOLINE_ENTRY.failure(CPU, wake, "kernel: trampoline").endswith(
        "with RFLAGS 0x202: trampoline_start64 must be entered with interrupts off (RFLAGS.IF = 0)")
    assert real_mode_at(TRAMPOLINE, "x").failure(CPU, wake, "t").endswith(
        "x runs in real mode (CR0.PE = 0)")


def test_reset_vector_environment():
    """docs/spec mpwk §7 #14: the OS must send an AP back to the mailbox's ResetVector with
    interrupts off, in 64-bit mode, paging on, a flat code segment: each broken in turn is named."""
    ok = ArchState.long_mode_entry(0x7F_F000, cr3=0x3000)
    assert RESET_VECTOR_ENTRY.failure(CPU, ok, "the mailbox ResetVector") is None
    on = ArchState.long_mode_entry(0x7F_F000, cr3=0x3000)
    on.set_interrupt_flag(True)
    assert RESET_VECTOR_ENTRY.failure(CPU, on, "the mailbox ResetVector").endswith(
        "with RFLAGS 0x202: the mailbox ResetVector must be entered with interrupts off (RFLAGS.IF = 0)")
    compat = ArchState.long_mode_entry(0x7F_F000, cr3=0x3000)
    compat.cs = Segment(selector=0x10, base=0, limit=0xFFFF_FFFF, attrib=segment_attrib(type=0xB, db=1, g=1))
    assert "CS attrib 0xc9b: the mailbox ResetVector needs 64-bit mode" in RESET_VECTOR_ENTRY.failure(
        CPU, compat, "the mailbox ResetVector")
    based = ArchState.long_mode_entry(0x7F_F000, cr3=0x3000)
    based.cs = Segment(selector=0x10, base=0x1000, limit=0xFFFF_FFFF, attrib=based.cs.attrib)
    # in 64-bit mode a CS base is ignored by the CPU, but the flat-selector rule names it
    assert "CS base 0x1000: the mailbox ResetVector needs a flat code segment" in \
        RESET_VECTOR_ENTRY.failure(CPU, based, "the mailbox ResetVector")
    assert long_mode_flat("x", interrupts_off=False).failure(CPU, on, "x") is None


def test_return_to_firmware_checks_the_state_it_jumps_in():
    """CpuModel.return_to_firmware refuses to go back through ResetVector with interrupts on (a
    kernel that forgot its cli): the failure names RFLAGS and the CPU stops there, before the
    mailbox is touched; with the state Linux's asm_acpi_mp_play_dead leaves it goes on."""
    import asyncio

    from apwake.sim.models.cpu.model import CpuModel, _BackToFirmware

    failures, returned = [], []

    class Mailbox:
        async def return_to_firmware(self):
            returned.append(True)

    def cpu_with(state):
        cpu = SimpleNamespace(name="CPU 2 (APIC ID 0x2)", mailbox=Mailbox(), arch=state, where="",
                              fail=failures.append, cli=lambda: state.set_interrupt_flag(False),
                              _set_state=lambda *a: None)
        return cpu

    on = ArchState.long_mode_entry(0x7F_F000, cr3=0x9000)
    on.set_interrupt_flag(True)
    with pytest.raises(_BackToFirmware):
        asyncio.run(CpuModel.return_to_firmware(cpu_with(on)))
    assert failures == ["CPU 2 (APIC ID 0x2) entered the mailbox ResetVector with RFLAGS 0x202: the "
                        "mailbox ResetVector must be entered with interrupts off (RFLAGS.IF = 0)"]
    assert returned == []
    with pytest.raises(_BackToFirmware):
        asyncio.run(CpuModel.return_to_firmware(cpu_with(ArchState.long_mode_entry(0x7F_F000, cr3=0x9000))))
    assert returned == [True] and len(failures) == 1


def test_a_segment_and_a_descriptor_table_report_every_field():
    """``as_dict`` is written out by hand (each CPU start records its state): it must name every
    field of the dataclass, with its value."""
    for value in (Segment(0x10, 0x1000, 0xFFF, 0x93), DescriptorTable(0x2000, 0x27)):
        assert value.as_dict() == {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
