"""The build and run harness: cache keys and reuse, waveforms with their GTKWave view, and the
error a machine without g++ or make gets."""

import logging

import pytest
import pywellen

from sim import toolchain
from sim.build import build, cache_paths
from sim.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
from sim.run import run_cocotb


def test_cache_key_follows_parameters_and_waves():
    a = FabricDesign(FabricConfig.contiguous(2))
    b = FabricDesign(FabricConfig.contiguous(2, n_vectors=64))
    assert cache_paths(a) == cache_paths(FabricDesign(FabricConfig.contiguous(2)))
    assert cache_paths(a)[0] != cache_paths(b)[0]
    assert cache_paths(a, waves=True)[0] == cache_paths(a)[0], "waves must share the Verilog"
    assert cache_paths(a, waves=True)[1] != cache_paths(a)[1], "waves need their own binary"


def test_second_build_neither_converts_nor_compiles(caplog):
    design = FabricDesign(FabricConfig.contiguous(1))
    first = build(design)
    caplog.set_level(logging.INFO, logger="apwake.build")
    second = build(design)
    assert second.verilog_reused and second.binary_reused
    assert second.build_dir == first.build_dir and second.convert_s == second.compile_s == 0
    assert "reusing cached Verilog" in caplog.text
    assert "reusing cached Verilator build" in caplog.text


def test_waveform_has_per_apic_groups():
    config = FabricConfig((0x05, 0x22))
    the_build = build(FabricDesign(config), waves=True)
    result = run_cocotb(the_build, "cocotb_tests.lapic.tb_ipi", names=["test_init_sipi"],
                        label="harness-waves", extra_env={CONFIG_ENV: config.to_json()})
    assert result.outcomes["test_init_sipi"].passed, result.log_tail()
    assert result.waves.exists() and result.gtkw.exists()
    gtkw = result.gtkw.read_text()
    assert "-APIC 0 (ID 0x5)" in gtkw and "-APIC 1 (ID 0x22)" in gtkw and "-fabric" in gtkw
    traces = [line.strip() for line in gtkw.splitlines() if line.startswith("apwake_fabric.")]
    widths = {str(var)[4:-1]: var.bitwidth
              for var in pywellen.Waveform(str(result.waves)).all_vars()}

    def in_file(trace):   # "name" for one bit, "name[msb:0]" for vectors, as GTKWave wants
        name, _, bits = trace.partition("[")
        width = int(bits.split(":")[0]) + 1 if bits else 1
        return widths.get(name) == width

    wrong = [t for t in traces if not in_file(t)]
    assert traces and not wrong, f"traces in the .gtkw that the FST lacks: {wrong}"
    assert "apwake_fabric.apic1.irr[255:0]" in traces and "not in the waveform" not in gtkw


def test_missing_compiler_is_named(monkeypatch):
    real_which = toolchain.shutil.which
    monkeypatch.setattr(toolchain.shutil, "which",
                        lambda tool: None if tool in ("g++", "make") else real_which(tool))
    with pytest.raises(toolchain.ToolchainError, match=r"needs g\+\+ and make .* apt-get install g\+\+ make"):
        toolchain.check_build_tools()
    monkeypatch.setattr(toolchain.shutil, "which",
                        lambda tool: None if tool == "make" else real_which(tool))
    with pytest.raises(toolchain.ToolchainError, match=r"needs make to compile"):
        toolchain.check_build_tools()
