"""The clustered fabric (rtl/lapic/cluster.py) behaves cycle for cycle as one cluster of every
APIC: the same scenario gives the same report (timeline, cycles, bus messages) whatever the
cluster size, and the Verilog has the structure the build relies on."""

import json
import random

import pytest
from amaranth import Array, Const, Module
from amaranth.lib import wiring

from apwake.rtl.lib.instance import PACKED_IN, PACKED_OUT, PackedPorts, packed_widths
from apwake.rtl.lapic import ApicFabric
from apwake.rtl.lapic.cluster import ApicCluster, cluster_signature, lp_group_size
from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.rtl.lapic.receiver import ACCEPT_DELAYS
from apwake.rtl.lapic.local_apic import LocalApic, local_apic_signature
from apwake.sim.harness.build import build
from apwake.sim.harness.run import run_cocotb
from apwake.sim.scenarios.options import ScenarioOptions, ScenarioRequest
from apwake.sim.scenarios.report import RUN_DEPENDENT
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
    for varying in RUN_DEPENDENT:
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
    exactly once), each five cycles from grant to done instead of one and each register access
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
    assert "stage4_" in top and "apwake_lapic_cluster3_v256_pipe " in top


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


class _Answers(wiring.Component):
    """An APIC whose answers are a fixed function of the message's vector (``table[vector]`` is
    ``(match, priority)``), so that a test knows what every message's acceptance must be; with
    no table, what the test sets on ``link.rx_match`` and ``link.rx_priority`` (undriven)."""

    def __init__(self, table, *, pipelined, **_):
        self.table, self.pipelined = table, pipelined
        super().__init__(local_apic_signature())

    def elaborate(self, platform):
        m = Module()
        if self.table is not None:
            vector = self.link.rx_msg.vector
            m.d.comb += [self.link.rx_match.eq(Array(Const(match, 1) for match, _ in self.table)[vector]),
                         self.link.rx_priority.eq(Array(Const(priority, 4) for _, priority in self.table)[vector])]
        return m


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 17, 32])
def test_pipelined_cluster_picks_the_lowest_priority_candidate(simulate, size):
    """A pipelined cluster (rtl/lapic/cluster.py) picks, ``ACCEPT_DELAYS[-1]`` cycles after the
    APICs' answers, the same candidate as one tree over all of them (lowest PPR class, ties to
    the lowest slot), through its groups of :func:`lp_group_size` (size 3: groups of 2 and 1;
    32: four of 8), and accepts with ``lp_grant`` (given when it has a candidate, as the fabric
    of one cluster does) exactly that one; a fixed message is accepted by every match; the
    sender's ``tx_done`` comes in the same cycle, and nothing without a message.  Random
    answers, a message in most cycles."""
    apics = []

    def factory(**parameters):
        apics.append(_Answers(None, **parameters))
        return apics[-1]

    dut = ApicCluster(size, pipelined=True, apic_factory=factory)
    rng = random.Random(size)
    delay = ACCEPT_DELAYS[-1]
    assert lp_group_size(32) == 8 and lp_group_size(3) == 2 and lp_group_size(2) == 2

    async def bench(ctx):
        ctx.set(dut.present, (1 << size) - 1)
        sent, checked = [], 0
        for cycle in range(200):
            # a few candidates or many, and now and then none
            a, b = rng.getrandbits(size), rng.getrandbits(size)
            matches = (a & b if cycle % 2 else a | b) if cycle % 7 else 0
            priorities = [rng.randrange(4) for _ in range(size)]
            lowest = rng.random() < 0.7
            valid = rng.random() < 0.8
            source = 1 << rng.randrange(size) if rng.random() < 0.7 else 0     # or from another cluster
            ctx.set(dut.rx_valid, valid)
            ctx.set(dut.rx_source, source)
            ctx.set(dut.rx_msg.delivery_mode, DeliveryMode.LOWEST_PRIORITY if lowest else DeliveryMode.FIXED)
            for j, apic in enumerate(apics):
                ctx.set(apic.link.rx_match, matches >> j & 1)
                ctx.set(apic.link.rx_priority, priorities[j])
            sent.append((matches, priorities, lowest, valid, source))
            ctx.set(dut.lp_grant, ctx.get(dut.lp_any))     # as the fabric of one cluster grants
            if cycle >= delay:
                matches, priorities, lowest, valid, source = sent[cycle - delay]
                candidates = [j for j in range(size) if matches >> j & 1]
                winner = min(candidates, key=lambda j: (priorities[j], j)) if candidates else None
                assert ctx.get(dut.lp_any) == (winner is not None), (cycle, matches)
                if winner is not None:
                    assert ctx.get(dut.lp_index) == winner, (cycle, matches, priorities)
                    assert ctx.get(dut.lp_priority) == priorities[winner]
                    checked += 1
                expected = (1 << winner if winner is not None else 0) if lowest else matches
                assert ctx.get(dut.accept) == (expected if valid else 0), (cycle, valid, lowest, matches)
                done = sum(ctx.get(apic.link.tx_done) << j for j, apic in enumerate(apics))
                assert done == (source if valid else 0), (cycle, valid, source)
            await ctx.tick()
        assert checked > 60

    simulate(dut, bench)


@pytest.mark.parametrize("cluster_size", [5, 3, 2, 1])
def test_pipelined_fabric_answers_each_message_in_its_trace_cycle(simulate, cluster_size):
    """On the pipelined fabric (rtl/lapic/fabric.py) the trace, the acceptances, ``lp_grant``,
    ``tx_done`` and ``tx_accepted`` all belong to the same message: five senders with a message
    in most cycles, APICs whose answers depend on the message alone, in clusters of 5 (groups of
    4 and 1), 3, 2 and 1; each message is on the trace once, with exactly its receivers (its
    lowest-priority winner), and its sender alone gets ``tx_done`` then."""
    n = 5
    rng = random.Random(cluster_size)
    tables = [[(rng.random() < 0.5, rng.randrange(3)) for _ in range(256)] for _ in range(n)]
    apics = []

    def factory(**parameters):
        # (no table for a cluster's unused slot)
        apics.append(_Answers(tables[len(apics)] if len(apics) < n else None, **parameters))
        return apics[-1]

    dut = ApicFabric(list(range(n)), n_vectors=256, local_interrupts=False, cluster_size=cluster_size,
                     pipelined=True, apic_factory=factory)

    def receivers(vector, lowest):
        candidates = [j for j in range(n) if tables[j][vector][0]]
        if lowest and candidates:
            return {min(candidates, key=lambda j: (tables[j][vector][1], j))}
        return set(candidates)

    async def bench(ctx):
        waiting = [None] * n            # each sender's message: (vector, lowest)
        sent = on_trace = 0
        for cycle in range(400):
            for j in range(n):
                if waiting[j] is None and rng.random() < 0.6:
                    waiting[j] = (rng.randrange(16, 256), rng.random() < 0.6)
                    sent += 1
                link = apics[j].link
                ctx.set(link.tx_valid, waiting[j] is not None)
                if waiting[j] is not None:
                    ctx.set(link.tx_msg.vector, waiting[j][0])
                    ctx.set(link.tx_msg.delivery_mode,
                            DeliveryMode.LOWEST_PRIORITY if waiting[j][1] else DeliveryMode.FIXED)
            trace = dut.trace
            done = [ctx.get(apics[j].link.tx_done) for j in range(n)]
            if ctx.get(trace.valid):
                source, vector = ctx.get(trace.source), ctx.get(trace.msg.vector)
                lowest = ctx.get(trace.msg.delivery_mode) == DeliveryMode.LOWEST_PRIORITY
                assert waiting[source] == (vector, lowest), (cycle, source)
                expected = receivers(vector, lowest)
                assert {j for j in range(n) if ctx.get(trace.accept) >> j & 1} == expected, (cycle, source)
                assert done == [j == source for j in range(n)], (cycle, source)
                # pipelined: "some APIC is a candidate", in every mode (rtl/lapic/fabric.py)
                assert ctx.get(apics[source].link.tx_accepted) == any(t[vector][0] for t in tables)
                if lowest:
                    assert [ctx.get(apics[j].link.lp_grant) for j in range(n)] == [j in expected for j in range(n)]
                waiting[source] = None
                on_trace += 1
            else:
                assert not any(done), cycle
            await ctx.tick()
        in_flight = sum(w is not None for w in waiting)
        assert on_trace > 250 and on_trace + in_flight == sent

    simulate(dut, bench)
