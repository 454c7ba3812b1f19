"""Watched outputs (sim/harness/watch.py): the edges the models wait on, from one simulator
callback.  The top gains one output and nothing else changes; a scenario gives the same report
with the hub and with a callback per signal on the same binary."""

import json
import re

import pytest
from amaranth import Module, Mux
from amaranth.lib import enum
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.sim.harness import watch
from apwake.sim.harness.build import build
from apwake.sim.scenarios.report import RUN_DEPENDENT
from apwake.sim.vip.ghcb_msr.design import VCPU_WATCHED
from apwake.sim.vip.lapic.design import CPU_EVENTS, FabricConfig, FabricDesign


class _Mode(enum.Enum, shape=3):
    OFF = 0
    ON = 5


class _Block(wiring.Component):
    a: In(1)
    b: Out(1)
    c: Out(1)
    wide: Out(2)
    mode: Out(_Mode)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.b.eq(self.a), self.c.eq(~self.a), self.wide.eq(self.a),
                     self.mode.eq(Mux(self.a, _Mode.ON, _Mode.OFF))]
        return m


@pytest.mark.parametrize("names, complaint", [
    (["d"], "'d' is not an output of its top"),
    (["a"], "'a' is not an output of its top (it is an input)"),
    (["b", "b"], "'b' is named twice"),
])
def test_bad_watched_outputs_are_named(names, complaint):
    with pytest.raises(ValueError, match="^" + re.escape(f"block: watched output {complaint}")):
        watch.check_watched("block", _Block(), names)


def test_a_top_with_a_watch_port_is_refused():
    class Clashing(wiring.Component):
        watch: Out(1)

        def elaborate(self, platform):
            return Module()

    with pytest.raises(ValueError, match="^clash: its top has a port named 'watch'"):
        watch.check_watched("clash", Clashing(), [])


def test_watched_values_in_order():
    block = _Block()
    values = watch.check_watched("block", block, ["c", "wide", "mode", "b"])
    # an enum output is watched as its bits
    assert [v.name for v in values] == ["c", "wide", "mode", "b"] and [len(v) for v in values] == [1, 2, 3, 1]


def test_rising_edge_only_of_one_bit():
    outputs = watch.WatchedOutputs(None, [["c", 1], ["wide", 2]])
    with pytest.raises(ValueError, match="'wide' is 2 bits wide"):
        outputs.rising_edge("wide", None)
    with pytest.raises(KeyError):
        outputs.value_change("d", None)


class _Handle:
    """Stands for a cocotb handle: ``value`` reads as its bits' text."""

    def __init__(self, width, value=0):
        self.width, self.bits = width, value

    @property
    def value(self):
        return format(self.bits, f"0{self.width}b")

    def __len__(self):
        return self.width


class _Seen:
    """Stands for a waiter's Event: records that it was set."""

    def __init__(self):
        self.fired = False

    def set(self):
        self.fired = True


FIELDS = [["a", 1], ["mode", 3], ["b", 1]]      # bits 0, 1-3, 4


def test_a_vector_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="watch is 4 bits wide but its watch.json names 5 bits"):
        watch.WatchedOutputs(_Handle(4), FIELDS)


def test_each_change_reaches_its_waiters_once():
    outputs = watch.WatchedOutputs(_Handle(5), FIELDS)
    a_rise, mode_change, b_rise, b_change = _Seen(), _Seen(), _Seen(), _Seen()
    outputs._rises.update({0: a_rise, 2: b_rise})
    outputs._changes.update({1: mode_change, 2: b_change})
    outputs._deliver(0b0_101_1)              # a rises, mode changes in two bits, b stays low
    assert a_rise.fired and mode_change.fired and not b_rise.fired and not b_change.fired
    assert outputs._rises == {2: b_rise} and outputs._changes == {2: b_change}
    outputs._deliver(0b1_101_0)              # a falls (nobody waits), b rises
    assert b_rise.fired and b_change.fired and not outputs._rises and not outputs._changes


class _Running:
    def done(self):
        return False


def test_an_edge_before_the_wait_is_not_the_next_edge():
    """A task woken earlier in the pass of an evaluation that also raised ``a`` waits for the
    next rise of ``a``, as RisingEdge registered then would: the rise goes to the waiters from
    before (here ``earlier``), not to the new one."""
    vector = _Handle(5, 0b0_000_1)
    outputs = watch.WatchedOutputs(vector, FIELDS)
    outputs._task = _Running()
    earlier = _Seen()
    outputs._rises[0] = earlier
    trigger = outputs.rising_edge("a", _Handle(1, 1))
    assert earlier.fired and outputs._last == 0b0_000_1
    new = outputs._rises[0]
    assert new is not earlier and not new.is_set() and trigger is not None
    # no change since: a second waiter joins the same Event
    outputs.rising_edge("a", _Handle(1, 1))
    assert outputs._rises[0] is new and not new.is_set()


def test_a_notified_event_is_set_at_every_rise():
    """notify (one Event for many outputs, CpuModel._events): set at each rise of any of its
    outputs, not at a fall or a change of a wider output, and again at the next rise."""
    vector = _Handle(5)
    outputs = watch.WatchedOutputs(vector, FIELDS)
    outputs._task = _Running()
    seen = _Seen()
    outputs.notify("a", _Handle(1), seen)
    outputs.notify("b", _Handle(1), seen)
    with pytest.raises(ValueError, match="'mode' is 3 bits wide"):
        outputs.notify("mode", _Handle(3), seen)
    for now, fired in ((0b0_111_0, False),       # mode changes: no rise of a or b
                       (0b0_111_1, True),        # a rises
                       (0b0_111_0, False),       # a falls
                       (0b1_111_0, True),        # b rises
                       (0b1_111_1, True)):       # a rises again: still notified
        seen.fired = False
        outputs._deliver(now)
        assert seen.fired == fired, bin(now)
    assert outputs._notified == {0: [seen], 2: [seen]}


#: (scenario, CPUs, options): on systems other tests build (the CI budget): INIT, SIPI and INTR
#: of every CPU; call-function IPIs to every CPU at once; the parked APs' mailbox wakeups; the
#: vCPUs' launch, VMGEXIT completions and state changes (GHCB version 1: the AP reset hold)
CASES = [
    ("init-sipi-parallel", 8, {}),
    ("ipi-storm", 8, {"ipis": 6}),
    ("mpwk-wakeup", 8, {}),
    ("sev-es-offline-online", 2, {"ghcb_version": 1}),
]


#: watched outputs per CPU of each case's system: the CPU port's events, with a parked AP's wake
#: (none for the BSP) or a vCPU's launch, vmsa_launch, exit_done and state
WATCHED_PER_CPU = {"init-sipi-parallel": len(CPU_EVENTS), "ipi-storm": len(CPU_EVENTS),
                   "mpwk-wakeup": len(CPU_EVENTS) + 1,
                   "sev-es-offline-online": len(CPU_EVENTS) + len(VCPU_WATCHED)}


@pytest.mark.verilator
@pytest.mark.parametrize("name, cpus, fields", CASES, ids=[name for name, _, _ in CASES])
def test_same_report_with_one_callback(name, cpus, fields, monkeypatch):
    from apwake.sim.cli import run_scenario_cli
    from apwake.sim.scenarios.options import ScenarioOptions
    hub = run_scenario_cli(name, cpus=cpus, options=ScenarioOptions(**fields), label=f"watch-on-{name}")
    monkeypatch.setenv(watch.WATCH_ENV, "0")
    per_signal = run_scenario_cli(name, cpus=cpus, options=ScenarioOptions(**fields),
                                  label=f"watch-off-{name}")
    assert hub["passed"] and len(hub["online"]) == cpus, hub["failures"]
    # the first run waited through the hub, on every watched output of its system; the second not
    assert hub.pop("watched_outputs") == WATCHED_PER_CPU[name] * cpus - (name == "mpwk-wakeup")
    assert per_signal.pop("watched_outputs") == 0
    for report in (hub, per_signal):
        for varying in RUN_DEPENDENT:
            report.pop(varying, None)
    assert hub == per_signal, "the same timeline, cycles and bus messages"


@pytest.mark.verilator
def test_the_top_gains_one_output():
    """The fabric's top has the watched outputs' vector as its last port, named in watch.json."""
    the_build = build(FabricDesign(FabricConfig.contiguous(8)))
    watched = [f"cpu__{i}__{e}" for i in range(8) for e in CPU_EVENTS]
    folder = the_build.verilog_dir
    assert json.loads((folder / watch.WATCH_JSON).read_text()) == [[name, 1] for name in watched]
    assert json.loads((folder / "ports.json").read_text())[-1] == watch.WATCH_PORT
    top = (folder / "apwake_fabric.v").read_text()
    assert f"output [{len(watched) - 1}:0] {watch.WATCH_PORT};" in top


def test_watch_output_is_the_outputs_concatenated(simulate):
    """The added output follows the watched ones in the same module (simulated with Amaranth)."""
    block = _Block()
    values = watch.check_watched("block", block, ["c", "mode", "b"])
    top, vector = watch.watched_top(block, values)
    seen = {}

    async def bench(ctx):
        for a in (0, 1):
            ctx.set(block.a, a)
            seen[a] = ctx.get(vector)

    simulate(top, bench, clocked=False)
    # bit 0: c = ~a; bits 1-3: mode (OFF 0 / ON 5); bit 4: b = a
    assert seen == {0: 0b0_000_1, 1: 0b1_101_0}
