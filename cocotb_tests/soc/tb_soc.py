"""The whole soft-SoC under Verilator running its firmware (issue 6 §3): the BSP wakes every AP
with INIT-SIPI-SIPI through its APIC, or (mailbox start) through the MP wakeup mailbox and then
offlines/onlines each AP and kexecs, or (SEV-ES start) through the GHCB MSR unit, or (context
start, issue 13) in a state it gives the start-context unit; the UART transcript and the LEDs
are checked.  The same tests run on PicoRV32 and on SERV cores (``SocConfig.core``): the same
firmware source, built for the core's ISA, and the same transcript checks; only the time budget
grows with SERV's cycles per instruction."""

import re

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from apwake.firmware.build import build_firmware
from apwake.rtl.soc.cores import core_choice
from apwake.rtl.start_context.layouts import LaunchKind
from apwake.sim.harness.clocking import start_clock_and_reset
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.vip.soc.design import SocConfig
from apwake.sim.harness.pytest_plugin import applies_to
from apwake.sim.vip.soc.uart import UartMonitor


def _assert_no_fault(dut, bus_error_expected=0):
    """No core trapped (PicoRV32's trap; SERV has none) and none made an access that no window
    answers (the interconnect's sticky ``bus_error``: a runaway fetch or a store to nowhere),
    but those of ``bus_error_expected`` (bit i = core i), which must have."""
    trap, bus_error = int(dut.trap.value), int(dut.bus_error.value)
    assert trap == 0 and bus_error == bus_error_expected, (
        f"cores trapped: {trap:#b}, cores with an access no window answers: {bus_error:#b} "
        f"(bit i = core i; expected {bus_error_expected:#b})")


@cocotb.test(timeout_time=2000, timeout_unit="ms")   # a backstop: config.budget_ns is the watchdog
@applies_to(lambda c: c.ap_start == "sipi")
async def test_firmware_wakes_every_ap(dut):
    """INIT-SIPI-SIPI from the BSP: the first AP through the xAPIC MMIO window, the others in
    x2APIC mode through the MSR window (without one, or with APICs without x2APIC mode: all in
    xAPIC mode); each AP prints once under the lock.  Built with ``probe_bus_error``, the BSP
    then loads from a window no SoC has: the load reads 0 and sets the BSP's ``bus_error`` bit
    alone, which stays set."""
    config = SocConfig.from_env()
    n, ids = config.n_cpus, config.fabric.apic_ids
    monitor = UartMonitor(dut)
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    running = [int(dut.running.value) >> i & 1 for i in range(n)]
    assert running == [int(i == config.fabric.bsp_index) for i in range(n)], "APs must wait for SIPI"
    finished = await monitor.wait_for(" cores online\n", timeout_ns=config.budget_ns)
    transcript = monitor.text
    assert finished, f"no summary line; transcript so far:\n{transcript}"
    if config.probe_bus_error:
        # no stray access before the probe: only the probe may set the BSP's bit
        _assert_no_fault(dut)
        probed = await monitor.wait_for(", probe done\n", timeout_ns=config.budget_ns)
        transcript = monitor.text
        assert probed, f"no probe line after the summary; transcript so far:\n{transcript}"
    lines = transcript.splitlines()
    if config.probe_bus_error:
        assert lines.pop() == "bus error probe: read 0x00000000, probe done", transcript
    assert not any(line.startswith("bus error probe") for line in lines), transcript
    assert lines[0] == f"apwake soc: BSP up, {n} cores", transcript
    for core, apic_id in enumerate(ids):
        if core == config.fabric.bsp_index:
            continue
        assert lines.count(f"AP {apic_id} online") == 1, transcript
    assert lines[-1] == f"all {n} of {n} cores online", transcript
    assert "boot ROM is writable" not in lines, transcript
    # after the first AP the BSP switches to x2APIC (MSR window) and wakes the rest by MSR 0x830;
    # a SoC built without the MSR window, or with APICs without x2APIC mode (CONTROL FEATURES
    # tells the firmware), stays in xAPIC mode
    x2apic = config.msr_window and config.fabric.x2apic_support
    if x2apic:
        assert lines.index("BSP: x2APIC mode") == 2, transcript
    assert len(lines) == n + 1 + x2apic, f"unexpected lines (lock broken?):\n{transcript}"
    assert int(dut.leds.value) == config.leds_all_online
    assert int(dut.running.value) == (1 << n) - 1
    _assert_no_fault(dut, bus_error_expected=config.probe_bus_error << config.fabric.bsp_index)


@cocotb.test(timeout_time=2000, timeout_unit="ms")   # a backstop: config.budget_ns is the watchdog
@applies_to(lambda c: c.ap_start == "mailbox")
async def test_mailbox_wakeup_offline_and_kexec(dut):
    """TDX style: every AP starts parked on the mailbox; the BSP wakes each (acpi_wakeup_cpu),
    then offlines each (the AP jumps to ResetVector, Test is acknowledged) and wakes it again,
    then parks all of them and "kernel 2" wakes them all: each AP online three times, offline
    twice, and the mailbox raised no error."""
    config = SocConfig.from_env()
    n, ids, bsp = config.n_cpus, config.fabric.apic_ids, config.fabric.bsp_index
    monitor = UartMonitor(dut)
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    assert await monitor.wait_for(f"kernel 2: all {n} of {n} cores online\n",
                                  timeout_ns=config.budget_ns), monitor.text
    lines = monitor.text.splitlines()
    assert lines[0] == f"apwake soc: BSP up, {n} cores (mailbox)", monitor.text
    summary = f"all {n} of {n} cores online"
    kexec = lines.index("kexec: kernel 2")
    before, after = lines[:kexec], lines[kexec + 1:]
    assert before.count(summary) == 2 and after[-1] == f"kernel 2: {summary}", monitor.text
    for core, apic_id in enumerate(ids):
        if core == bsp:
            continue
        assert before.count(f"AP {apic_id} online") == 2, monitor.text
        assert before.count(f"AP {apic_id} offline") == 2, monitor.text
        assert after.count(f"kernel 2: AP {apic_id} online") == 1, monitor.text
    assert not [line for line in lines if "did not" in line or "Failed" in line], monitor.text
    assert int(dut.leds.value) == config.leds_all_online
    _assert_no_fault(dut)


@cocotb.test(timeout_time=2000, timeout_unit="ms")   # a backstop: config.budget_ns is the watchdog
@applies_to(lambda c: c.ap_start == "ghcb")
async def test_sev_es_launch_and_reset_hold(dut):
    """SEV-ES style: the BSP negotiates the GHCB protocol through its MSR window (the SEV
    information reply, bit-exact fields printed), INIT-SIPI launches every AP through the GHCB
    unit, then each AP parks in the MSR-form AP reset hold (its VMGEXIT store stalls the core)
    and only the BSP's INIT-SIPI releases it with 0x007/data 1."""
    config = SocConfig.from_env()
    n, ids, bsp = config.n_cpus, config.fabric.apic_ids, config.fabric.bsp_index
    monitor = UartMonitor(dut)
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    summary = f"all {n} of {n} cores online"
    assert await monitor.wait_for(f"woken from reset hold\n{summary}\n", timeout_ns=config.budget_ns), monitor.text
    lines = monitor.text.splitlines()
    assert lines[:2] == [f"apwake soc: BSP up, {n} cores (SEV-ES)", "GHCB protocol 1-2, C-bit 51"], lines
    assert lines.count(summary) == 2
    first = lines.index(summary)
    for core, apic_id in enumerate(ids):
        if core == bsp:
            continue
        assert lines[:first].count(f"AP {apic_id} online") == 1, monitor.text
        held = lines.index(f"AP {apic_id} offline: AP reset hold")
        woken = lines.index(f"AP {apic_id} woken from reset hold")
        assert first < held < woken, monitor.text
    assert not [line for line in lines if "did not" in line], monitor.text
    assert int(dut.leds.value) == config.leds_all_online
    _assert_no_fault(dut)


async def _launch_records(dut, records):
    """Every launch record the SoC takes: ``(core, kind, via_sipi, eip, esp)``."""
    trace = dut.start_trace__valid
    while True:
        await RisingEdge(trace)             # a record is one cycle; two are never back to back
        await ReadOnly()
        records.append((int(dut.start_trace__vcpu.value), LaunchKind(int(dut.start_trace__kind.value)),
                        int(dut.start_trace__via_sipi.value), int(dut.start_trace__eip.value),
                        int(dut.start_trace__esp.value)))
        await RisingEdge(dut.clk)


async def _inits(dut, counts):
    """Count, per core, the INITs taken (woken only when the trace changes)."""
    signal = dut.start_trace__init_taken
    while True:
        await signal.value_change
        value = int(signal.value)
        for core in range(len(counts)):
            counts[core] += value >> core & 1


def _text_high(elf_path):
    """``(start, end)`` of the firmware's .text_high section, where the context entry lives."""
    from elftools.elf.elffile import ELFFile
    with open(elf_path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".text_high")
        return section["sh_addr"], section["sh_addr"] + section["sh_size"]


@cocotb.test(timeout_time=2000, timeout_unit="ms")   # a backstop: config.budget_ns is the watchdog
@applies_to(lambda c: c.ap_start == "context")
async def test_context_start_at_the_given_entry_and_stack(dut):
    """State-carrying start through the start-context unit: the BSP goes paravirtual (a
    real-mode INIT-SIPI is REFUSED), then starts each AP in an x86 state it writes in RAM (its
    own GDT and stack at the top of that core's stack block): even cores by START (no INIT, no
    SIPI), odd ones by SET_INITIAL_AP_STATE and INIT-SIPI-SIPI (the second SIPI DROPPED).  Each
    AP prints the pc and sp it found, which must be the EIP and ESP the BSP gave and the launch
    record carried; every call is OK and LAUNCHES counts what the records say."""
    config = SocConfig.from_env()
    n, ids, bsp = config.n_cpus, config.fabric.apic_ids, config.fabric.bsp_index
    monitor = UartMonitor(dut)
    records, inits = [], [0] * n
    await start_clock_and_reset(dut, CLOCK_NS)
    cocotb.start_soon(monitor.run())
    cocotb.start_soon(_launch_records(dut, records))
    cocotb.start_soon(_inits(dut, inits))
    summary = f"all {n} of {n} cores online"
    assert await monitor.wait_for(f" dropped\n{summary}\n", timeout_ns=config.budget_ns), monitor.text
    lines = monitor.text.splitlines()
    aps = [core for core in range(n) if core != bsp]
    by_sipi = [core for core in aps if core & 1]
    entry = re.search(r" eip 0x([0-9a-f]{8}) ", monitor.text)
    assert entry, monitor.text
    eip = int(entry.group(1), 16)
    low, high = _text_high(build_firmware(ids, isa=core_choice(config.core).isa).elf)
    assert low <= eip < high, f"EIP {eip:#x} is not the context entry (.text_high {low:#x}-{high:#x})"

    def stack(core):                        # the GDT at the top of the core's stack block, sp below
        return (config.ram_bytes - core * config.stack_bytes - 24) & ~15

    expected = [f"apwake soc: BSP up, {n} cores (context)", "context: PARAVIRT: OK",
                f"context: INIT-SIPI without a context to AP {ids[aps[0]]}: refused"]
    for core in aps:
        call = "SET_INITIAL_AP_STATE" if core in by_sipi else "START"
        expected += [f"context: {call} AP {ids[core]} eip 0x{eip:08x} esp 0x{stack(core):08x}: OK",
                     f"AP {ids[core]}: started by context at 0x{eip:08x} sp 0x{stack(core):08x}"]
    expected += [f"context: launches 0 real-mode, {len(aps)} context, 1 refused, {len(by_sipi)} dropped",
                 summary]
    assert lines == expected, monitor.text

    # the unit's records: the refused SIPI, one CONTEXT per AP at its EIP and ESP (by SIPI or by
    # START), a DROPPED second SIPI; a START-started AP saw no INIT and no SIPI
    want = [(aps[0], LaunchKind.REFUSED, 1, 0, 0)]
    for core in aps:
        if core in by_sipi:
            want += [(core, LaunchKind.CONTEXT, 1, eip, stack(core)), (core, LaunchKind.DROPPED, 1, 0, 0)]
        else:
            want.append((core, LaunchKind.CONTEXT, 0, eip, stack(core)))
    assert records == want, records
    for core in aps:
        if core in by_sipi:
            assert inits[core] >= 1, (core, inits)
        else:
            assert inits[core] == 0 and not [r for r in records if r[0] == core and r[2]], (core, inits, records)
    assert int(dut.leds.value) == config.leds_all_online
    assert int(dut.running.value) == (1 << n) - 1
    _assert_no_fault(dut)
