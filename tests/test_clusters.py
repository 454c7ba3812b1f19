"""The clustered fabric (rtl/lapic/cluster.py) behaves cycle for cycle as one cluster of every
APIC: the same scenario gives the same report (timeline, cycles, bus messages) whatever the
cluster size, and the Verilog has the structure the build relies on."""

import json

import pytest

from apwake.rtl.lib.instance import PACKED_IN, PACKED_OUT, PackedPorts, packed_widths
from apwake.rtl.lapic.cluster import cluster_signature
from apwake.rtl.lapic.local_apic import LocalApic, local_apic_signature
from apwake.sim.harness.build import build
from apwake.sim.harness.run import run_cocotb
from apwake.sim.scenarios.options import ScenarioOptions, ScenarioRequest
from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign

#: 8 CPUs: one cluster of 8 (the default below 32), and clusters of 3 with an unused slot in the
#: last; the one-cluster build is the one the bring-up tests share
ONE = FabricConfig.contiguous(8)
CLUSTERED = FabricConfig.contiguous(8, cluster_size=3)


def _report(config, scenario, tmp_path, options):
    the_build = build(FabricDesign(config))
    path = tmp_path / f"{config.label}-{scenario}.json"
    env = {CONFIG_ENV: config.to_json(),
           **ScenarioRequest(scenario, ScenarioOptions(**options), report=str(path)).env()}
    run = run_cocotb(the_build, "apwake.sim.scenarios.entry", label=f"{config.label}-{scenario}",
                     extra_env=env)
    assert path.exists(), run.log_tail(40)
    report = json.loads(path.read_text())
    for varying in ("wall_s", "build_s", "build_reused"):
        report.pop(varying, None)
    return the_build, report


@pytest.mark.verilator
@pytest.mark.parametrize("scenario, options", [
    ("init-sipi-parallel", {}),
    # every CPU sends call-function IPIs at once: the arbiter's order decides the timeline
    ("ipi-storm", {"ipis": 6}),
])
def test_cluster_size_changes_nothing(scenario, options, tmp_path):
    one_build, one = _report(ONE, scenario, tmp_path, options)
    clustered_build, clustered = _report(CLUSTERED, scenario, tmp_path, options)
    assert one["passed"] and len(one["online"]) == 8 and one["bus_messages"] > 0
    assert clustered == one, "the same timeline, cycles and bus messages"
    top = (clustered_build.verilog_dir / "apwake_fabric.v").read_text()
    assert top.count("apwake_lapic_cluster3_v256 ") == 3       # 8 CPUs in three clusters
    assert "apwake_lapic_v256 " not in top                     # the APICs are inside them
    # one cluster is elaborated in the top: the APICs are the top's instances, no cluster module
    top = (one_build.verilog_dir / "apwake_fabric.v").read_text()
    assert top.count("apwake_lapic_v256 ") == 8 and "apwake_lapic_cluster" not in top


#: the pipelined fabric (rtl/lapic/fabric.py ``pipelined``) in the clusters above
PIPELINED = FabricConfig.contiguous(8, cluster_size=3, pipelined=True)


@pytest.mark.verilator
def test_pipelined_fabric_delivers_the_same_messages_later(tmp_path):
    """Every CPU sends call-function IPIs at once: on the pipelined fabric the same messages
    are delivered and acknowledged (the models' scoreboards count each, and every call runs
    exactly once), each four cycles from grant to done instead of one and each register access
    a cycle longer, so the run takes longer."""
    _, one = _report(ONE, "ipi-storm", tmp_path, {"ipis": 6})
    pipelined_build, pipelined = _report(PIPELINED, "ipi-storm", tmp_path, {"ipis": 6})
    assert one["passed"] and pipelined["passed"]
    assert pipelined["bus_messages_by_mode"] == one["bus_messages_by_mode"]
    assert pipelined["bus_messages_by_mode"]["FIXED"] == pipelined["storm"]["calls"] == 48
    assert pipelined["storm"]["ran"] == 48 and pipelined["storm"]["lost"] == pipelined["storm"]["duplicated"] == 0
    assert pipelined["online"] == one["online"]
    assert pipelined["cycles"] > one["cycles"]
    top = (pipelined_build.verilog_dir / "apwake_fabric.v").read_text()
    assert "stage3_" in top and "apwake_lapic_cluster3_v256_pipe " in top


def test_packed_ports_keep_every_bit():
    """A packed module has two ports whose widths are the signature's inputs and outputs."""
    from amaranth.back import verilog
    n_in, n_out = packed_widths(local_apic_signature())
    # the CPU port's requests and acknowledges, LINT, the ID, BSP, TSC, advance and the link's inputs
    assert n_in > 32 + 64 + 32 and n_out > 64
    text = verilog.convert(PackedPorts(LocalApic(n_vectors=32, local_interrupts=False)),
                           name="packed", emit_src=False)
    header = text[:text.index(";")]
    assert f"{PACKED_IN}" in header and f"{PACKED_OUT}" in header and "cpu__" not in header
    assert f"input [{n_in - 1}:0] {PACKED_IN};" in text and f"output [{n_out - 1}:0] {PACKED_OUT};" in text
    assert packed_widths(cluster_signature(4))[0] > 4 * n_in // 2
