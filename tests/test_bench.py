"""``apwake bench``'s Icarus comparison (sim/bench.py): a run that fails or gives another result
than Verilator's is reported as such, never as a figure; and where Icarus is installed, the same
scenario on the same Verilog gives the same report on both simulators."""

import json
import shutil

import pytest

from apwake.sim import bench
from apwake.sim.harness.build import build
from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign

REPORT = {"cycles": 468, "online": [0, 1], "bus_messages": 7, "failures": [],
          "timeline": [{"cpu": 0}], "wall_s": 0.1}


def test_a_failed_or_timed_out_icarus_run_is_named_not_measured():
    assert bench._icarus_row(REPORT, None, "no result within 600 s") == {"icarus": "no result within 600 s"}


def test_the_same_result_gives_the_slowdown():
    assert bench._icarus_row(REPORT, dict(REPORT, wall_s=1.5), None) == {
        "icarus_wall_s": 1.5, "icarus_slowdown": 15.0}


@pytest.mark.parametrize("change, named", [
    ({"cycles": 469}, "cycles 469 against 468"),
    ({"online": [0]}, "online"),
    ({"timeline": []}, "timeline"),
])
def test_another_result_is_a_finding_not_a_figure(change, named):
    row = bench._icarus_row(REPORT, dict(REPORT, **change), None)
    assert list(row) == ["icarus"]
    assert row["icarus"].startswith("result differs from Verilator's") and named in row["icarus"]


def _row(**fields):
    return {"cpus": 8, "build_cold_s": 1.0, "build_cached_s": 0.1, "scenario_wall_s": 0.1,
            "cycles": 10, "cycles_per_s": 100, "idle_cycles_per_s": 200, "fraction_of_idle": 0.5,
            **fields}


@pytest.mark.parametrize("threads, said", [(1, False), (2, True)])
def test_the_table_says_when_the_model_ran_on_threads(capsys, threads, said):
    bench._print_table([_row(threads=threads)])
    out = capsys.readouterr().out
    assert ("a model with 2 threads (--threads)" in out) is said


def test_the_table_gives_the_access_cost(capsys):
    bench._print_table([_row(access_us=22.5, access_beyond_idle_us=12.5)])
    assert ("8 CPUs: a register access (back-to-back ESR reads of port 0 after the idle run) 22.5 us, "
            "12.5 us of it beyond its two cycles of idle clocking (the drivers' Python") in capsys.readouterr().out


def test_the_table_gives_the_set_up_apart(capsys):
    bench._print_table([_row(scenario_setup_s=0.016, scenario_process_s=0.72)])
    assert ("8 CPUs: the scenario's wall time is from the clock's start; before it, 0.016 s of set-up "
            "(the ports' handle lookups); the whole simulator process 0.72 s") in capsys.readouterr().out


@pytest.mark.verilator
def test_the_idle_run_measures_register_accesses(tmp_path):
    """sim/scenarios/idle.py's access phase: the given number of reads, each taking time."""
    config = FabricConfig.contiguous(2)
    cycles_per_s, access_s = bench._idle(build(FabricDesign(config)), config, "n2", tmp_path, cycles=1000,
                                         accesses=40)
    assert cycles_per_s > 0 and access_s > 0
    report = json.loads((tmp_path / "n2-idle.json").read_text())
    assert report["accesses"] == 40 and report["cycles"] == 1000
    assert bench._idle(build(FabricDesign(config)), config, "n2", tmp_path, cycles=1000)[1] is None


def test_the_last_error_of_the_log_is_the_reason(tmp_path):
    log = tmp_path / "sim.log"
    log.write_text("INFO start\nTypeError: first\n  ValueError: time skipping needs the GPI clock\nINFO end\n")
    assert bench._last_error(log) == "ValueError: time skipping needs the GPI clock"
    log.write_text("INFO start\n  1.00ns ERROR    cocotb  the scenario hung\nINFO end\n")
    assert bench._last_error(log) == "1.00ns ERROR    cocotb  the scenario hung"
    # a run that died before writing its log: the process's own last line
    assert bench._last_error(tmp_path / "absent.log", "loading\nSegmentation fault\n") == "Segmentation fault"
    assert bench._last_error(tmp_path / "absent.log") == "no simulator log"


@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) is not installed")
def test_icarus_runs_the_bench_scenario_with_verilators_result(tmp_path):
    # the 8-CPU fabric the bring-up tests build; the bench's scenario with time skipping on
    config = FabricConfig.contiguous(8)
    the_build = build(FabricDesign(config))
    report, _ = bench._scenario(the_build, config, config.label, tmp_path)
    icarus, problem = bench._icarus(the_build, config, config.label, tmp_path, timeout_s=600)
    assert problem is None, problem
    row = bench._icarus_row(report, icarus, problem)
    assert "icarus_slowdown" in row, row
    assert len(icarus["online"]) == 8
