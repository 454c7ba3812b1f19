"""The iCEBreaker bitstream builds from the repository with the YoWASP tools (issue 6 §4, §6):
about 2.5 minutes, part of CI."""

import re
import pytest

from apwake.synth.boards import BOARDS, build_board, format_report


@pytest.mark.synth
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
