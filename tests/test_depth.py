"""synth/depth.py: logic levels between flip-flops in an ECP5 netlist."""

import subprocess

import pytest

from apwake.sim.harness.toolchain import yowasp_tool
from apwake.synth.depth import endpoint_depths, flatten, main


def _cell(kind, inputs, outputs):
    """A Yosys JSON cell: ``inputs``/``outputs`` map ports to lists of net bits."""
    return {"type": kind, "port_directions": {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}},
            "connections": {**inputs, **outputs}}


def test_levels_count_luts_slices_carries_and_cut_loops():
    cells = {
        "ff1": _cell("TRELLIS_FF", {"DI": [20], "CLK": [1]}, {"Q": [2]}),
        "lut_a": _cell("LUT4", {"A": [2], "B": ["0"]}, {"Z": [3]}),
        "mux": _cell("PFUMX", {"ALUT": [3], "BLUT": [3], "C0": [2]}, {"Z": [4]}),
        "lut_b": _cell("LUT4", {"A": [4]}, {"Z": [5]}),
        "ff2": _cell("TRELLIS_FF", {"DI": [5], "CLK": [1]}, {"Q": [6]}),
        # a carry chain entered from ff2 and stepped once; its second half's input (from ff1's
        # two LUTs) reaches COUT and S1, not S0
        "carry0": _cell("CCU2C", {"A0": [6], "A1": [5], "CIN": ["0"]}, {"COUT": [7], "S0": [8], "S1": [14]}),
        "ff5": _cell("TRELLIS_FF", {"DI": [8], "CLK": [1]}, {"Q": [15]}),
        "ff6": _cell("TRELLIS_FF", {"DI": [14], "CLK": [1]}, {"Q": [16]}),
        # an asynchronous LUT RAM read, its write side an endpoint
        "ram": _cell("TRELLIS_DPR16X4", {"RAD": [13], "DI": [5], "WAD": [2], "WRE": [2], "WCK": [1]}, {"DO": [17]}),
        "mux6": _cell("L6MUX21", {"D0": [17], "D1": [17], "SD": [2]}, {"Z": [18]}),
        "ff7": _cell("TRELLIS_FF", {"DI": [18], "CLK": [1]}, {"Q": [19]}),
        "carry1": _cell("CCU2C", {"A0": ["0"], "CIN": [7]}, {"S0": [9]}),
        "ff3": _cell("TRELLIS_FF", {"DI": [9], "CLK": [1]}, {"Q": [10]}),
        # a combinational loop (cut where it closes) into ff4
        "loop_a": _cell("LUT4", {"A": [12], "B": [10]}, {"Z": [11]}),
        "loop_b": _cell("LUT4", {"A": [11]}, {"Z": [12]}),
        "ff4": _cell("TRELLIS_FF", {"DI": [12], "CLK": [1]}, {"Q": [13]}),
    }
    netlist = {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": cells},
                           "other": {"attributes": {}, "cells": {}}}}
    by_end = {(e.cell, e.port): e for e in endpoint_depths(netlist)}
    assert by_end["ff2", "DI"].levels == 2.15            # LUT, PFUMX in its slice, LUT
    assert by_end["ff2", "DI"].start == "ff1" and by_end["ff2", "DI"].path == ("lut_a", "mux", "lut_b")
    assert by_end["ff3", "DI"].levels == 3.2             # ff1's two LUTs and a slice, into the chain, a step
    assert by_end["ff3", "DI"].start == "ff1" and by_end["ff3", "DI"].path[-2:] == ("carry0", "carry1")
    assert by_end["ff5", "DI"].levels == 1.0 and by_end["ff5", "DI"].start == "ff2"     # S0: its half only
    assert by_end["ff6", "DI"].levels == 3.15 and by_end["ff6", "DI"].start == "ff1"    # S1: both halves
    assert by_end["ff7", "DI"].levels == 1.15 and by_end["ff7", "DI"].path == ("ram", "mux6")   # from ff4
    assert ("ram", "RAD") not in by_end and by_end["ram", "DI"].levels == 2.15           # the write side ends
    assert ("ff2", "CLK") not in by_end
    assert by_end["ff4", "DI"].levels == 2.0             # ff3 -> loop_a -> loop_b, the loop cut
    assert by_end["ff4", "DI"].start == "ff3"            # (the finished input, not the loop)
    assert by_end["ff1", "DI"].levels == 0 and by_end["ff1", "DI"].start is None
    with pytest.raises(ValueError, match="one top module, not 0"):
        endpoint_depths({"modules": {"top": {"attributes": {}, "cells": {}}}})


@pytest.mark.slow
def test_a_synthesised_adder_between_registers(tmp_path, capsys):
    """Yosys's own ECP5 netlist, a module kept by keep_hierarchy: flattened, its 8-bit adder
    between two registers is one carry chain deep and the registers' inputs are found."""
    (tmp_path / "t.v").write_text(
        "(* keep_hierarchy *) module add(input [7:0] a, b, output [7:0] s); assign s = a + b; endmodule\n"
        "module t(input clk, input [7:0] x, output reg [7:0] q);\n"
        "  reg [7:0] a, b; wire [7:0] s; add u(a, b, s);\n"
        "  always @(posedge clk) begin a <= x; b <= a; q <= s; end\nendmodule\n")
    yosys = yowasp_tool("yosys")
    subprocess.run([yosys, "-q", "-p", "read_verilog t.v; synth_ecp5 -top t; write_json t.json"], cwd=tmp_path,
                   check=True, capture_output=True)
    flat = flatten(tmp_path / "t.json", yosys)
    cells = next(m for m in flat["modules"].values() if m.get("attributes", {}).get("top"))["cells"]
    assert not [c for c in cells.values() if c["type"] == "add"], "the kept module was not flattened"
    endpoints = endpoint_depths(flat)
    deepest = max((e for e in endpoints if cells[e.cell]["type"] == "TRELLIS_FF"), key=lambda e: e.levels)
    # one entry into the adder's carry chain, then steps along it (a LUT level at most after it)
    assert 1.0 < deepest.levels < 2.5 and any(cells[c]["type"] == "CCU2C" for c in deepest.path), deepest
    assert main([str(tmp_path / "t.json"), "--min-levels", "1"]) == 0
    assert "endpoints by logic levels" in capsys.readouterr().out
