"""The iCEBreaker SoC synthesises for the iCE40UP5K with the YoWASP tools (CI), and its bitstream
builds (issue 6 §4, §6: synthesis, place and route, about 6 minutes on one core as the design fills
99% of the device; under -m slow for the CI budget, docs/PERFORMANCE.md "Test runs")."""

import re
import pytest

from apwake.firmware.build import build_firmware
from apwake.synth.boards import BOARDS, build_board, format_report, per_block_utilisation, tool_env, write_report
from apwake.synth.cores import core_utilisation


@pytest.mark.synth
def test_icebreaker_synthesises(tmp_path):
    """Yosys's iCE40 mapping of the SoC with the hierarchy kept: one PicoRV32 and one APIC per
    core, the RAM in 4-Kbit block RAMs.

    Whether it fits is place and route's answer: this pass counts LUTs before nextpnr packs them
    with carries and flip-flops into the 5280 logic cells, so its count is above the packed one;
    the bitstream test checks the fit."""
    board = BOARDS["icebreaker"]
    firmware = build_firmware(board.apic_ids, isa=board.isa).words
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


@pytest.mark.synth
def test_serv_is_a_fraction_of_picorv32_on_ice40():
    """Each core as the SoC instantiates it, alone, in Yosys's iCE40 mapping (synth/cores.py,
    the figures of synth/REPORT.md "cores-ice40"): SERV keeps its register file in one 4-Kbit
    block RAM and needs under a quarter of PicoRV32's LUTs and under half its flip-flops."""
    serv, pico = core_utilisation("serv"), core_utilisation("picorv32")
    assert serv["BRAM"] == 1 and pico["BRAM"] >= 1, (serv, pico)
    assert 0 < 4 * serv["LUT"] < pico["LUT"] and 0 < 2 * serv["FF"] < pico["FF"], (serv, pico)


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
