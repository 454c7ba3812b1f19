"""The iCEBreaker SoC synthesises for the iCE40UP5K with the YoWASP tools, and its bitstream
builds (issue 6 §4, §6: synthesis, place and route, about 2.5 minutes on one core at 94% of the
device, synth/REPORT.md "icebreaker"); both under -m slow for the CI budget (docs/PERFORMANCE.md "Test runs"), where
the SoC's gate-level test (cocotb_tests/soc) synthesises the same SoC and runs its firmware, and
the per-core iCE40 and ECP5 mappings are checked here.  Board variants (`apwake build --core
--cores --ap-start --clock-mhz`) are refused before any tool runs when they cannot be built."""

import re
from pathlib import Path

import pytest

from apwake.firmware.build import build_firmware
from apwake.synth.boards import (BOARDS, board_variant, build_board, check_clock, format_report, per_block_utilisation,
                                 sim_config, tool_env, write_report)
from apwake.synth.pll import ecp5_pll_config
from apwake.synth.cores import core_utilisation


@pytest.mark.synth
@pytest.mark.slow
def test_icebreaker_synthesises(tmp_path):
    """Yosys's iCE40 mapping of the SoC with the hierarchy kept: one PicoRV32 and one APIC per
    core, the RAM in 4-Kbit block RAMs.

    Whether it fits is place and route's answer: this pass counts LUTs before nextpnr packs them
    with carries and flip-flops into the 5280 logic cells, so its count is above the packed one;
    the bitstream test checks the fit."""
    board = BOARDS["icebreaker"]
    firmware = build_firmware(board.apic_ids, isa=board.isa)
    blocks = per_block_utilisation(board, firmware, tool_env(), tmp_path)
    assert sum(name.startswith("picorv32") for name in blocks) == board.n_cores
    # one block per APIC (its parts are blocks of their own below it: ...apic0.receiver)
    assert sum(re.fullmatch(r".*\.fabric\.cluster\d+\.apic\d+", name) is not None for name in blocks) == board.n_cores
    assert blocks["apwake_soc"]["BRAM"] == board.ram_bytes // 512
    assert all(blocks[name]["LUT"] > 0 for name in blocks if name.startswith("picorv32"))


@pytest.mark.synth
@pytest.mark.slow
def test_icebreaker_bitstream(tmp_path):
    result = build_board("icebreaker", out_root=tmp_path)
    board = BOARDS["icebreaker"]
    bitstream = tmp_path / "icebreaker" / "board" / "apwake_soc.bin"
    assert result["bitstream"] == str(bitstream) and bitstream.stat().st_size > 100_000
    lc = result["totals"]["ICESTORM_LC"]
    assert 0 < lc["used"] <= lc["available"] == 5280
    (fmax,) = result["fmax_mhz"].values()
    assert fmax >= board.clock_hz / 1e6, f"timing not met: {fmax} MHz for {board.clock_hz / 1e6} MHz"
    blocks = result["blocks"]
    assert sum(name.startswith("picorv32") for name in blocks) == board.n_cores
    # one block per APIC (its parts are blocks of their own below it: ...apic0.receiver)
    assert sum(re.fullmatch(r".*\.fabric\.cluster\d+\.apic\d+", name) is not None for name in blocks) == board.n_cores
    assert blocks["apwake_soc"]["BRAM"] == board.ram_bytes // 512      # 4 Kbit block RAMs
    assert "| ICESTORM_LC |" in format_report(result)
    assert "| flops (this build) |" in format_report(result) and set(result["per_core"]) == {"flops", "ram"}


@pytest.mark.synth
def test_per_core_line_for_each_apic_option():
    """A board report's per-core table (synth/apics.py ``per_core_utilisation``): the iCEBreaker's
    4-SERV build with the MSR window, one SERV core and its APIC alone for each storage; in RAM
    the APIC trades at least 80 flip-flops for block RAM, the build's own option is marked."""
    from apwake.synth.apics import format_per_core, per_core_utilisation
    from apwake.synth.cores import core_utilisation
    board = board_variant("icebreaker", core="serv", n_cores=4, msr_window=True, x2apic=False, apic_storage="ram")
    per_core, serv = per_core_utilisation(board), core_utilisation("serv")
    assert set(per_core) == {"flops", "ram"}, per_core
    flops, ram = per_core["flops"], per_core["ram"]
    assert flops["LUT"] > serv["LUT"] and flops["FF"] > serv["FF"] and flops["BRAM"] == serv["BRAM"], (flops, serv)
    assert ram["BRAM"] > flops["BRAM"] and ram["FF"] <= flops["FF"] - 80, (flops, ram)
    lines = format_per_core(per_core, core="serv", storage="ram")
    assert [line.split(" |")[0] for line in lines if line.startswith("| flops") or line.startswith("| ram")] == [
        "| flops", "| ram (this build)"], lines


@pytest.mark.synth
def test_serv_is_a_fraction_of_picorv32_on_ice40():
    """Each core as the SoC instantiates it, alone, in Yosys's iCE40 mapping (synth/cores.py,
    the figures of synth/REPORT.md "cores-ice40"): SERV keeps its register file in one 4-Kbit
    block RAM and needs under a quarter of PicoRV32's LUTs and under half its flip-flops."""
    serv, pico = core_utilisation("serv"), core_utilisation("picorv32")
    assert serv["BRAM"] == 1 and pico["BRAM"] >= 1, (serv, pico)
    assert 0 < 4 * serv["LUT"] < pico["LUT"] and 0 < 2 * serv["FF"] < pico["FF"], (serv, pico)


@pytest.mark.synth
def test_a_large_builds_core_counts_its_reset_flip_flop():
    """The per-core line of a pipelined (large) build counts the SERV core as that build makes
    it: with the flip-flop its reset comes from (two Yosys runs of about 2 s)."""
    plain, registered = core_utilisation("serv", "ecp5"), core_utilisation("serv", "ecp5", registered_reset=True)
    assert registered["FF"] == plain["FF"] + 1, (plain, registered)


@pytest.mark.synth
@pytest.mark.slow       # two Yosys runs (30 s): the CI budget
def test_apic_in_ram_trades_flip_flops_for_block_ram_on_ice40():
    """The iCEBreaker's APIC (32 vectors, no local sources) in Yosys's iCE40 mapping
    (synth/apics.py, synth/REPORT.md "apics-ice40"): with ``storage="ram"`` its nine
    storage-only registers go to block RAM (two 256 x 16 blocks for 32-bit words), which saves
    at least 80 flip-flops, and the LUTs stay within 5%: the register decode and read-back, not
    the storage, set them."""
    from apwake.synth.apics import apic_utilisation
    flops, ram = (apic_utilisation("ice40", storage=storage) for storage in ("flops", "ram"))
    assert flops["BRAM"] == 0 and ram["BRAM"] == 2, (flops, ram)
    assert ram["FF"] <= flops["FF"] - 80, (flops, ram)
    assert abs(ram["LUT"] - flops["LUT"]) <= 0.05 * flops["LUT"], (flops, ram)


@pytest.mark.parametrize("call, message", [
    (lambda tmp: core_utilisation("serv", "xilinx"), r"family must be one of \('ice40', 'ecp5'\), not 'xilinx'"),
    (lambda tmp: core_utilisation("rocket"), r"core must be one of \('picorv32', 'serv'\), not 'rocket'"),
    (lambda tmp: write_report([], tmp / "REPORT.md", sections={"cores-ice40": "## icebreaker (...)\n"}),
     r"section 'cores-ice40' must start with '## cores-ice40'"),
])
def test_core_report_parameters(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


def test_report_rewrites_keep_one_blank_line_between_sections(tmp_path):
    """Each ``apwake build``/``synth.cores --write`` rewrites synth/REPORT.md around the sections it
    does not own: those must come back unchanged, not one blank line longer per rewrite."""
    path = tmp_path / "REPORT.md"
    write_report([], path, sections={"cores-ice40": "## cores-ice40\n\n| a |\n"})
    write_report([], path, sections={"cores-ecp5": "## cores-ecp5\n\n| b |\n"})
    write_report([], path, sections={"cores-ecp5": "## cores-ecp5\n\n| b |\n"})
    second = path.read_text()
    assert second.endswith("## cores-ecp5\n\n| b |\n\n## cores-ice40\n\n| a |\n"), second
    assert "\n\n\n" not in second, second


@pytest.mark.parametrize("variant, message", [
    (dict(name="de10"), r"board must be one of icebreaker, ulx3s, not 'de10'"),
    (dict(name="icebreaker", ap_start="ghcb"), r"icebreaker: ap_start 'ghcb' needs the MSR window"),
    (dict(name="ulx3s", ap_start="tdx"), r"ulx3s: ap_start must be one of sipi, mailbox, ghcb, context, not 'tdx'"),
    (dict(name="ulx3s", n_cores=0), r"ulx3s: n_cores must be 1 to 32 .* not 0"),
    (dict(name="ulx3s", n_cores=33), r"ulx3s: n_cores must be 1 to 32 .* not 33"),   # the firmware's 32-bit mask
    (dict(name="ulx3s", n_cores=1, ap_start="mailbox"), r"2 or more to start an AP with 'mailbox'\), not 1"),
    (dict(name="ulx3s", core="rocket"), r"core must be one of \('picorv32', 'serv'\), not 'rocket'"),
    (dict(name="ulx3s", clock_mhz=-5), r"ulx3s: clock_hz must be positive, not -5000000.0"),
    (dict(name="ulx3s", apic_storage="bram"), r"ulx3s: apic_storage must be one of flops, ram, not 'bram'"),
    (dict(name="ulx3s", ap_start="ghcb", msr_window=False), r"ulx3s: ap_start 'ghcb' needs the MSR window"),
    (dict(name="ulx3s", x2apic="no"), r"ulx3s: x2apic must be a bool, not 'no'"),
    (dict(name="ulx3s", pipelined_fabric=1), r"ulx3s: pipelined_fabric must be a bool, not 1"),
    (dict(name="ulx3s", seed=-1), r"ulx3s: seed must be an integer from 0 to 2147483647 or None, not -1"),
    (dict(name="ulx3s", seed=2**31), r"ulx3s: seed must be an integer from 0 to 2147483647 or None, not 2147483648"),
    (dict(name="ulx3s", seed="7"), r"ulx3s: seed must be an integer from 0 to 2147483647 or None, not '7'"),
])
def test_board_variant_refusals(variant, message):
    """``apwake build``'s choices are checked before any tool runs; the message names the field."""
    with pytest.raises(ValueError, match=message):
        board_variant(variant.pop("name"), **variant)


@pytest.mark.parametrize("board, clock_mhz, message", [
    ("icebreaker", 24, r"icebreaker: the clock must be the board's 12 MHz oscillator .* not 24 MHz"),
    ("ulx3s", 51.3, r"the ECP5 PLL cannot make 51.3 MHz exactly from 25 MHz"),
    ("ulx3s", 48, r"cannot make 48 MHz"),     # 25 / 25 * 48: the phase detector at 1 MHz, under 3.125
])
def test_board_clock_refusals(board, clock_mhz, message):
    with pytest.raises(ValueError, match=message):
        check_clock(board_variant(board, clock_mhz=clock_mhz))


@pytest.mark.parametrize("name, clock_mhz", [("icebreaker", None), ("ulx3s", 50), ("ulx3s", 100 / 3)])
@pytest.mark.parametrize("local_interrupts, msr_window, apic_storage, x2apic, pipelined_fabric, seed",
                         [(False, True, "ram", False, True, None), (True, False, "flops", True, False, 0),
                          (True, True, "flops", True, False, 2**31 - 1)])
def test_build_command_of_a_variant_builds_that_variant(monkeypatch, name, clock_mhz, local_interrupts, msr_window,
                                                        apic_storage, x2apic, pipelined_fabric, seed):
    """The command a report records (Board.command) parses back into the same board, with the
    local sources, the MSR window and the APIC storage changed or kept against either board's
    default, a clock that six digits do not spell (iCE40 boards run at their oscillator only)
    and a placement seed absent, 0 (which a test of its truth would drop) or the largest."""
    import shlex
    from apwake.sim.cli import main
    from apwake.synth import boards
    built = []
    monkeypatch.setattr(boards, "build_board", lambda board: built.append(board) or {
        "bitstream": "-", "board": board.label, "clock_mhz": board.clock_hz / 1e6, "fmax_mhz": {}})
    monkeypatch.setattr(boards, "write_report", lambda results: None)
    monkeypatch.setattr(boards, "format_report", lambda result: "")
    variant = board_variant(name, core="serv", n_cores=4, ap_start="context", clock_mhz=clock_mhz,
                            local_interrupts=local_interrupts, msr_window=msr_window, apic_storage=apic_storage,
                            x2apic=x2apic, pipelined_fabric=pipelined_fabric, seed=seed)
    assert ("pipe" in variant.label.split("-")) == pipelined_fabric
    assert (f"seed{seed}" in variant.label.split("-")) == (seed is not None)
    assert main(shlex.split(variant.command)[1:]) == 0
    assert built == [variant]


def test_build_command_refuses_before_building(capsys):
    from apwake.sim.cli import main
    assert main(["build", "icebreaker", "--ap-start", "ghcb"]) == 2
    assert "needs the MSR window" in capsys.readouterr().err


#: nextpnr 0.11's log lines for the 4-SERV iCEBreaker with the MSR window and its APICs' storage in
#: flip-flops, as they were before commit 292dfd4 (synth/REPORT.md "icebreaker-serv-c4-msr-nox2apic")
_NEXTPNR_DOES_NOT_FIT = ("Info: Device utilisation:\n"
                         "Info: \t         ICESTORM_LC:    5346/   5280   101%\n"
                         "Info: \t        ICESTORM_RAM:      22/     30    73%\n"
                         "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5346 ICESTORM_LCs\n")
_DOES_NOT_FIT = ("icebreaker-serv-c4-msr-nox2apic: the tool flow stopped (exit 125); the design does not fit: "
                 "ICESTORM_LC 5346 of 5280 (101%): ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5346 "
                 "ICESTORM_LCs (logs: ")


def test_a_build_that_does_not_fit_says_so(monkeypatch, tmp_path, capsys):
    """A tool flow that stops is a one-line error naming the board, nextpnr's cell count
    against the device's and its ERROR line, with exit status 1 (not a traceback)."""
    from apwake.sim.cli import main
    from apwake.synth import boards
    board = board_variant("icebreaker", core="serv", n_cores=4, msr_window=True, x2apic=False)
    (tmp_path / "apwake_soc.tim").write_text(_NEXTPNR_DOES_NOT_FIT)
    message = boards.tool_failure(board, tmp_path, 125)
    assert message == f"{_DOES_NOT_FIT}{tmp_path}/*.rpt, *.tim)"

    def failing_build(board):
        raise boards.BoardBuildError(boards.tool_failure(board, tmp_path, 125))

    monkeypatch.setattr(boards, "build_board", failing_build)
    assert main(["build", "icebreaker", "--core", "serv", "--cores", "4", "--msr-window", "--no-x2apic"]) == 1
    assert capsys.readouterr().err == f"apwake build: {message}\n"


def test_an_ice40_build_that_misses_its_clock_suggests_another_seed(tmp_path):
    """nextpnr stops an iCE40 build that misses its clock (no --timing-allow-fail there): the
    error says so from nextpnr's own line and suggests another placement seed; a build that
    stopped for another reason gets no such hint."""
    from apwake.synth import boards
    board = board_variant("icebreaker", core="serv", n_cores=4)
    (tmp_path / "apwake_soc.tim").write_text(
        "Info: Max frequency for clock 'cd_sync_clk': 13.10 MHz (PASS at 12.00 MHz)\n"
        "ERROR: Max frequency for clock 'clk12_0__io': 11.52 MHz (FAIL at 12.00 MHz)\n")
    message = boards.tool_failure(board, tmp_path, 1)
    assert message == ("icebreaker-serv-c4: the tool flow stopped (exit 1): ERROR: Max frequency for clock "
                       "'clk12_0__io': 11.52 MHz (FAIL at 12.00 MHz) "
                       f"(logs: {tmp_path}/*.rpt, *.tim); --seed N places the same netlist another way")
    (tmp_path / "apwake_soc.tim").write_text(_NEXTPNR_DOES_NOT_FIT)
    assert "--seed" not in boards.tool_failure(board, tmp_path, 125)


def test_build_board_turns_a_failed_tool_flow_into_its_error(monkeypatch, tmp_path):
    """build_board's own path: the platform's tool script exits non-zero after nextpnr wrote its
    log, and build_board raises BoardBuildError with that log's verdict (the per-block pass and
    the per-core pass and the tool versions are replaced: no Yosys here)."""
    import subprocess
    from apwake.synth import apics, boards

    class FailingPlatform:
        default_clk_frequency = 12e6
        device = "iCE40UP5K"

        def add_file(self, name, text):
            pass

        def build(self, top, *, name, build_dir, **options):
            folder = Path(build_dir)
            folder.mkdir(parents=True)
            (folder / f"{name}.tim").write_text(_NEXTPNR_DOES_NOT_FIT)
            raise subprocess.CalledProcessError(125, ["sh", f"build_{name}.sh"])

    monkeypatch.setattr(boards.Board, "make_platform", lambda self: FailingPlatform())
    monkeypatch.setattr(boards, "per_block_utilisation", lambda *args: {})
    monkeypatch.setattr(apics, "per_core_utilisation", lambda *args, **kwargs: {})
    monkeypatch.setattr(boards, "_tool_versions", lambda *args: {})
    board = board_variant("icebreaker", core="serv", n_cores=4, msr_window=True, x2apic=False)
    with pytest.raises(boards.BoardBuildError, match=re.escape(_DOES_NOT_FIT)):
        build_board(board, out_root=tmp_path)


@pytest.mark.parametrize("name, seed, expected", [
    ("icebreaker", 7, "--seed 7"), ("icebreaker", None, ""),
    # a large ECP5 build: router2 and the seed
    ("ulx3s", 0, "--router router2 --timing-allow-fail --seed 0")])
def test_build_board_gives_nextpnr_the_seed(monkeypatch, tmp_path, name, seed, expected):
    """The seed reaches nextpnr's options (after the large builds' router), the report records
    them and its command builds the same board (the board's notes kept: the seed changes the
    placement, not the design); and Amaranth's build script for the board puts
    those options on nextpnr's command line (the plan only: no tool runs)."""
    from amaranth import Module
    from apwake.synth import apics, boards
    seen = []
    real = BOARDS[name].make_platform()

    class RecordingPlatform:
        default_clk_frequency = 12e6 if name == "icebreaker" else 25e6
        device = "device"

        def add_file(self, name, text):
            pass

        def build(self, top, *, name, build_dir, **options):
            seen.append(options["nextpnr_opts"])
            folder = Path(build_dir)
            folder.mkdir(parents=True)
            (folder / "nextpnr.json").write_text('{"fmax": {}, "utilization": {}}')
            (folder / f"{name}.bit").write_text("")

    monkeypatch.setattr(boards.Board, "make_platform", lambda self: RecordingPlatform())
    monkeypatch.setattr(boards, "per_block_utilisation", lambda *args: {})
    monkeypatch.setattr(apics, "per_core_utilisation", lambda *args, **kwargs: {})
    monkeypatch.setattr(boards, "_tool_versions", lambda *args: {})
    monkeypatch.setattr(boards, "critical_path", lambda report: None)
    board = board_variant(name, **(dict(core="serv", n_cores=32) if name == "ulx3s" else {}), seed=seed)
    result = build_board(board, out_root=tmp_path)
    assert seen == [f"--report nextpnr.json {expected}".strip()]
    assert result["nextpnr_options"] == expected
    # the board's own design placed with another seed keeps its notes; a variant has none
    assert result["notes"] == (BOARDS[name].notes if name == "icebreaker" else "")
    assert (f"--seed {seed}" in result["command"]) == (seed is not None)
    plan = real.build(Module(), name="top", do_build=False, nextpnr_opts=seen[0])
    script = plan.files["build_top.sh"]
    script = script.decode() if isinstance(script, bytes) else script
    nextpnr = [line for line in script.splitlines() if line.startswith('"$NEXTPNR_')]
    assert len(nextpnr) == 1 and f" --report nextpnr.json {expected} ".replace("  ", " ") in nextpnr[0], nextpnr


@pytest.mark.parametrize("f_out_mhz", [25, 37.5, 40, 50, 60, 62.5, 75, 100])
def test_ecp5_pll_makes_the_clock_exactly(f_out_mhz):
    """The dividers give the asked frequency exactly, with the VCO in 400-800 MHz and the phase
    detector's input at 3.125 MHz or more (synth/pll.py)."""
    config = ecp5_pll_config(25e6, f_out_mhz * 1e6)
    assert config.f_out_hz == pytest.approx(f_out_mhz * 1e6, abs=1e-3)
    assert 400e6 <= config.vco_hz <= 800e6 and 25e6 / config.clki_div >= 3.125e6
    assert all(1 <= d <= 128 for d in (config.clki_div, config.clkfb_div, config.clkop_div))


def test_board_variants_are_labelled_and_simulated_as_built():
    """A variant's report section names what differs from the board's entry, and the SoC tests'
    configuration of a board (sim_config) has the board's cores, APICs, RAM and start mode."""
    assert board_variant("ulx3s").label == "ulx3s"
    variant = board_variant("ulx3s", n_cores=3, ap_start="mailbox", clock_mhz=40,
                            core="picorv32" if BOARDS["ulx3s"].core == "serv" else "serv",
                            local_interrupts=not BOARDS["ulx3s"].local_interrupts, apic_storage="ram", x2apic=False)
    local = "local" if variant.local_interrupts else "nolocal"
    assert variant.label == f"ulx3s-{variant.core}-c3-mailbox-{local}-apicram-nox2apic-40mhz"
    config = sim_config(variant)
    assert (config.fabric.apic_ids, config.fabric.n_vectors, config.fabric.local_interrupts, config.fabric.storage,
            config.fabric.x2apic_support, config.ram_bytes, config.ap_start, config.core, config.msr_window) == (
        (0, 1, 2), variant.n_vectors, variant.local_interrupts, "ram", False, variant.ram_bytes, "mailbox",
        variant.core, variant.msr_window)


def _step(kind, delay, source, sink, port="D"):
    return {"type": kind, "delay": delay, "from": {"cell": source, "port": "Q" if kind == "clk-to-q" else "F"},
            "to": {"cell": sink, "port": port}}


#: the shape of nextpnr 0.11's report (``--report``) of the 8-PicoRV32 ULX3S build
#: (synth/REPORT.md "ulx3s", 2026-12-02), its path shortened: a path to an output pin first,
#: then the one within the clock
_FF, _LUT, _CE = ("soc.fabric.cluster0.apic4.receiver.rx_msg_TRELLIS_FF_Q_27", "soc.fabric.bus_msg.x2apic_LUT4_Z",
                  "soc.ap_start.apic__2__sipi_vector_TRELLIS_FF_Q_3")
_SIPI = "soc.fabric.cluster0.apic2.events.sipi_LUT4_A"
_NEXTPNR_REPORT = {"fmax": {}, "utilization": {}, "critical_paths": [
    {"from": "posedge $glbnet$cd_sync.clk", "to": "<async>",
     "path": [_step("clk-to-q", 0.52, "led_4__o_TRELLIS_FF_Q", "led_4__o_TRELLIS_FF_Q")]},
    {"from": "posedge $glbnet$cd_sync.clk", "to": "posedge $glbnet$cd_sync.clk", "path": [
        _step("clk-to-q", 0.52, _FF, _FF, "Q"), _step("routing", 0.89, _FF, _LUT, "A"),
        _step("logic", 0.24, _LUT, _LUT, "F"), _step("routing", 3.96, _LUT, _SIPI),
        _step("logic", 0.24, _SIPI, _SIPI, "F"), _step("routing", 0.77, _SIPI, _CE, "CE"),
        _step("setup", 0.0, _CE, _CE, "CE")]}]}


def test_critical_path_is_the_one_within_the_clock():
    from apwake.synth.timing import critical_path, format_critical_path
    path = critical_path(_NEXTPNR_REPORT)
    assert path == {"clock": "$glbnet$cd_sync.clk", "ns": 6.62, "logic_ns": 1.0, "routing_ns": 5.62, "cells": 2,
                    "start": f"{_FF}.Q", "end": f"{_CE}.CE",
                    "modules": ["soc.fabric.bus_msg", "soc.fabric.cluster0.apic2.events"]}
    assert format_critical_path(path).startswith("Critical path (nextpnr, routed): 6.62 ns (1.00 ns logic, "
                                                 "5.62 ns routing, 2 logic cells)")
    assert critical_path({**_NEXTPNR_REPORT, "critical_paths": _NEXTPNR_REPORT["critical_paths"][:1]}) is None
    assert critical_path({"fmax": {}, "utilization": {}}) is None


def test_report_says_when_the_clock_is_missed():
    from apwake.synth.boards import format_report
    from apwake.synth.timing import critical_path
    result = {"board": "ulx3s-x", "device": "LFE5U-85F", "clock_mhz": 50.0, "command": "apwake build ulx3s",
              "wall_s": 1.0, "tools": {}, "cores": 32, "core": "serv", "n_vectors": 32, "ram_bytes": 16384,
              "notes": "", "fmax_mhz": {"$glbnet$cd_sync.clk": 34.13}, "totals": {}, "blocks": {},
              "critical_path": critical_path(_NEXTPNR_REPORT)}
    text = format_report(result)
    assert "(target 50 MHz; MISSED)." in text and "Critical path (nextpnr, routed): 6.62 ns" in text
    result.update(fmax_mhz={"$glbnet$cd_sync.clk": 51.0}, critical_path=None)
    text = format_report(result)
    assert "(target 50 MHz)." in text and "Critical path" not in text


def test_a_build_that_misses_its_clock_exits_1(monkeypatch, capsys):
    """A routed build under its target Fmax (large ECP5 builds pass --timing-allow-fail) keeps
    its report, and `apwake build` says it missed and exits 1."""
    from apwake.sim.cli import main
    from apwake.synth import boards
    written = []
    result = {"board": "ulx3s-serv-c32-50mhz", "clock_mhz": 50.0, "fmax_mhz": {"$glbnet$cd_sync.clk": 41.5},
              "bitstream": "-"}
    monkeypatch.setattr(boards, "build_board", lambda board: result)
    monkeypatch.setattr(boards, "write_report", written.append)
    monkeypatch.setattr(boards, "format_report", lambda result: "")
    assert main(["build", "ulx3s", "--core", "serv", "--cores", "32", "--clock-mhz", "50"]) == 1
    assert written == [[result]]
    assert capsys.readouterr().err == ("apwake build: ulx3s-serv-c32-50mhz missed its 50 MHz clock: "
                                       "$glbnet$cd_sync.clk 41.5 MHz (the critical path is in synth/REPORT.md; "
                                       "--seed N places the same netlist another way)\n")
    result["fmax_mhz"] = {"$glbnet$cd_sync.clk": 50.2}
    assert main(["build", "ulx3s", "--core", "serv", "--cores", "32", "--clock-mhz", "50"]) == 0
