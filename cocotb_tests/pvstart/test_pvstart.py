"""State-carrying AP start-up scenarios on 2 CPUs (8 under ``-m slow``, for the CI budget; the
three start methods are compared on 2 in CI, on 8 under ``-m slow``) on the fabric with the
start-context unit."""

import pytest

from apwake.sim.cli import run_scenario_cli
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.vip.start_context.design import PvStartSystemConfig, PvStartSystemDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [PvStartSystemConfig(FabricConfig.contiguous(n)) for n in (2, 8)]

test_pvstart = cocotb_tests("cocotb_tests.pvstart.tb_pvstart", CONFIGS[:1], design=PvStartSystemDesign, jitter=True)
test_pvstart_8 = cocotb_tests("cocotb_tests.pvstart.tb_pvstart", CONFIGS[1:], design=PvStartSystemDesign,
                              marks=[pytest.mark.slow])


@pytest.mark.verilator
@pytest.mark.parametrize("cpus", [2, pytest.param(8, marks=pytest.mark.slow)])
def test_direct_start_against_vmi_and_classic(cpus):
    """Biederman's direct start against the VMI hook and the classic INIT-SIPI-SIPI, each run from
    the command line's entry point on its own machine: no INIT or SIPI message where the other
    two send four per AP (INIT, INIT de-assert, SIPI, SIPI), the same start state as VMI, and, in
    real guest time (``--time-scale 1``: Linux 2.6.2x's 10 ms after INIT and 300/200 us around
    each SIPI unscaled, ``init-sipi --method legacy`` for the classic start), smp_init done sooner
    than both, VMI slower than the classic start by the hypervisor's decoding of each map."""
    options = ScenarioOptions(time_scale=1.0)
    reports = {name: run_scenario_cli(name, cpus=cpus, options=options)
               for name in ("pv-startup-direct", "pv-startup-vmi")}
    # the classic start of the same era: Linux 2.6.2x's timing, as the VMI kernel's
    reports["init-sipi"] = run_scenario_cli("init-sipi", cpus=cpus,
                                            options=ScenarioOptions(time_scale=1.0, method="legacy"))
    for name, report in reports.items():
        assert report["passed"], (name, report["failures"])
    direct, vmi, classic = reports.values()
    assert direct["bus_messages_by_mode"] == {}
    for report in (vmi, classic):
        modes = report["bus_messages_by_mode"]
        assert modes["INIT"] == modes["STARTUP"] == 2 * (cpus - 1), (report["scenario"], modes)
    for d, v in zip(direct["timeline"][1:], vmi["timeline"][1:]):
        assert d["started"]["state"] == v["started"]["state"]

    def bring_up(report):
        """smp_init to "smp booted" on the BSP, simulated ns."""
        events = {note.split(":")[0]: t for t, _, note in report["timeline"][0]["events"]}
        return events["smp booted"] - events["smp_init"]
    assert bring_up(direct) == direct["pv_start"]["smp_boot_ns"]
    assert bring_up(direct) < bring_up(classic) < bring_up(vmi)
