"""Multithreaded models (``apwake run --threads N``, ``build(threads=N)``): a binary of its own,
the same results as the single-threaded one."""

import pytest

from apwake.sim.harness.build import MAX_THREADS, cache_paths, check_threads
from apwake.sim.scenarios.report import RUN_DEPENDENT
from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign


@pytest.mark.parametrize("threads", [0, MAX_THREADS + 1, 1.5, True, "2"])
def test_threads_out_of_range_are_named(threads):
    with pytest.raises(ValueError, match=f"threads must be a whole number from 1 to {MAX_THREADS}, "
                                         f"not {threads!r}"):
        check_threads(threads)


def test_a_threaded_model_is_a_build_of_its_own():
    design = FabricDesign(FabricConfig.contiguous(2))
    verilog, single = cache_paths(design)
    assert cache_paths(design, threads=1) == (verilog, single)
    threaded_verilog, threaded = cache_paths(design, threads=2)
    assert threaded_verilog == verilog and threaded != single and threaded.name.endswith("-t2")


@pytest.mark.verilator
def test_same_report_on_two_threads():
    from apwake.sim.cli import run_scenario_cli
    reports = [run_scenario_cli("ipi-storm", cpus=8, threads=threads, label=f"threads-{threads}")
               for threads in (1, 2)]
    assert [r["threads"] for r in reports] == [1, 2]
    # the second model was built multithreaded: Verilator gives it a thread pool
    design = FabricDesign(FabricConfig.contiguous(8))
    for threads, pooled in ((1, False), (2, True)):
        _, folder = cache_paths(design, threads=threads)
        assert ("VlThreadPool" in (folder / "Vtop__Syms.h").read_text()) is pooled, folder
    one, two = ({k: v for k, v in r.items() if k not in (*RUN_DEPENDENT, "threads")}
                for r in reports)
    assert one["passed"] and len(one["online"]) == 8 and one["bus_messages"] > 0
    assert two == one, "the same timeline, cycles and bus messages"
