"""The iCEBreaker SoC synthesises for the iCE40UP5K with the YoWASP tools (CI), and its bitstream
builds (issue 6 §4, §6: synthesis, place and route, about 6 minutes on one core as the design fills
99% of the device; under -m slow for the CI budget, docs/PERFORMANCE.md "Test runs")."""

import re
import pytest

from apwake.firmware.build import build_firmware
from apwake.synth.boards import BOARDS, build_board, format_report, per_block_utilisation, tool_env


@pytest.mark.synth
def test_icebreaker_synthesises(tmp_path):
    """Yosys's iCE40 mapping of the SoC with the hierarchy kept: one PicoRV32 and one APIC per
    core, the RAM in 4-Kbit block RAMs.

    Whether it fits is place and route's answer: this pass counts LUTs before nextpnr packs them
    with carries and flip-flops into the 5280 logic cells, so its count is above the packed one;
    the bitstream test checks the fit."""
    board = BOARDS["icebreaker"]
    firmware = build_firmware(board.apic_ids).words
    blocks = per_block_utilisation(board, firmware, tool_env(), tmp_path)
    assert sum(name.startswith("picorv32") for name in blocks) == board.n_cores
    # one block per APIC (its parts are blocks of their own below it: ...apic0.receiver)
    assert sum(re.fullmatch(r".*\.fabric\.apic\d+", name) is not None for name in blocks) == board.n_cores
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
    assert sum(re.fullmatch(r".*\.fabric\.apic\d+", name) is not None for name in blocks) == board.n_cores
    assert blocks["apwake_soc"]["BRAM"] == board.ram_bytes // 512      # 4 Kbit block RAMs
    assert "| ICESTORM_LC |" in format_report(result)
