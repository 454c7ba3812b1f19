"""A pinned top (sim/harness/pins.py: its inputs as registers the simulator writes, the way a
fabric past Amaranth's 65536 input bits is converted) behaves exactly as the ordinary top."""

import json

import pytest

from apwake.sim.harness.build import build, pins_top, top_input_bits
from apwake.sim.harness.run import run_cocotb
from apwake.sim.scenarios.options import ScenarioRequest
from apwake.sim.scenarios.report import RUN_DEPENDENT
from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign

#: two xAPIC CPUs and two x2APIC-only ones, so that both register formats cross the pins (the
#: configuration of cocotb_tests/bringup's x2APIC tests: its plain build is shared)
CONFIG = FabricConfig((0, 0x100, 0x123_4567, 7))


class PinnedFabricDesign(FabricDesign):
    """The fabric converted with its inputs as pins, whatever its size."""

    pinned = True


def test_only_an_oversized_top_is_pinned():
    small = FabricDesign(FabricConfig.contiguous(617))
    large = FabricDesign(FabricConfig.contiguous(618))
    assert top_input_bits(small.top()) == 2 + 32 + 106 * 617 <= 65536 < top_input_bits(large.top())
    assert not pins_top(small, small.top()) and pins_top(large, large.top())


def test_no_gate_level_netlist_of_a_pinned_top():
    """Yosys would make the pins' undriven registers constants: refused by name, before any
    conversion."""
    from apwake.sim.harness.build import BuildError
    from apwake.sim.harness.gate_level import GateLevelDesign
    with pytest.raises(BuildError, match=r"apwake_fabric: no gate-level netlist of a top with its "
                                         r"inputs as pins \(more than 65536 input bits"):
        GateLevelDesign(PinnedFabricDesign(CONFIG)).top()
    assert GateLevelDesign(FabricDesign(CONFIG)).top() is not None


def _run(design, tmp_path, label):
    the_build = build(design)
    path = tmp_path / f"{label}.json"
    env = {CONFIG_ENV: CONFIG.to_json(),
           **ScenarioRequest("init-sipi-parallel", report=str(path)).env()}
    run_cocotb(the_build, "apwake.sim.scenarios.entry", label=label, extra_env=env)
    report = json.loads(path.read_text())
    for varying in RUN_DEPENDENT:
        report.pop(varying, None)
    return the_build, report


@pytest.mark.verilator
def test_pinned_top_runs_the_scenario_as_the_ordinary_one(tmp_path):
    plain_build, plain = _run(FabricDesign(CONFIG), tmp_path, "plain")
    pinned_build, pinned = _run(PinnedFabricDesign(CONFIG), tmp_path, "pinned")
    assert (pinned_build.verilog_dir / "apwake_pin.v").exists()
    assert not (plain_build.verilog_dir / "apwake_pin.v").exists()
    text = (pinned_build.verilog_dir / "apwake_fabric.v").read_text()
    top_module = text[text.index("module apwake_fabric("):text.index("endmodule")]
    # the wrapper's inputs are pins (the design inside it, `apwake_fabric.top`, keeps its ports)
    assert "input cpu__0__reg__req_valid" not in top_module and "output cpu__0__init" in top_module
    assert plain["passed"] and sorted(plain["online"]) == [0, 7, 0x100, 0x123_4567]
    assert pinned == plain, "the same timeline, cycles and bus messages"
