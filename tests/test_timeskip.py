"""Time skipping (sim/harness/timeskip.py): one clock edge with ``advance = K`` leaves the design
exactly where K + 1 edges would, and ``quiescent``/``quiet`` say when it may be taken.

The APIC timer is checked against itself clocked cycle by cycle in Amaranth's simulator, over
random modes, divisors, counts, phases and skips; the scenarios are run with and without
skipping and their reports compared (everything but the wall time and the skip counts)."""

import pytest
from hypothesis import given, settings, strategies as st

from apwake.rtl.lapic.layouts import Lvt, TIMER_DIVIDE_VALUES, TimerMode
from apwake.rtl.lapic.registers import BY_NAME
from apwake.rtl.lapic.timer import ApicTimer
from apwake.sim.harness.codec import pack
from apwake.sim.scenarios.report import RUN_DEPENDENT
from amaranth_sim import simulate

#: cycles the timers are followed after the skip point
FOLLOW = 400


def _timer_trace(mode, divisor, count, pre, skip_at, k, *, follow):
    """Run one timer: ``pre`` idle cycles (the prescaler's phase), arm it (``count`` in count
    modes, a deadline ``count`` cycles ahead in TSC-deadline mode), then clock it, with one edge
    of ``advance = k`` at cycle ``skip_at`` after arming when ``k`` is not None.  Returns the
    fire cycles (absolute), the ``quiet`` seen at the skip point, and (current, deadline) at
    every cycle from the skip's end on, up to ``follow`` cycles after the skip point."""
    dut = ApicTimer()
    out = {"fires": [], "states": {}, "quiet": None}

    async def bench(ctx):
        cycle = 0

        async def tick(advance=0):
            nonlocal cycle
            ctx.set(dut.advance, advance)
            ctx.set(dut.tsc, cycle)
            if ctx.get(dut.fire):
                out["fires"].append(cycle)
            await ctx.tick()
            cycle += advance + 1
            ctx.set(dut.tsc, cycle)

        async def write(name, data):
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.index, BY_NAME[name].index)
            ctx.set(dut.write.data, data)
            await tick()
            ctx.set(dut.write.valid, 0)

        ctx.set(dut.divide, TIMER_DIVIDE_VALUES[divisor])
        for _ in range(pre):
            await tick()
        if mode is TimerMode.TSC_DEADLINE:
            await write("LVT_TIMER", pack(Lvt, timer_mode=TimerMode.TSC_DEADLINE))
            ctx.set(dut.mode, mode)
            ctx.set(dut.deadline_write, 1)
            ctx.set(dut.write.data, cycle + count)
            await tick()
            ctx.set(dut.deadline_write, 0)
        else:
            ctx.set(dut.mode, mode)
            ctx.set(dut.initial, count)
            await write("TIMER_INITIAL", count)
        start = cycle
        while cycle < start + skip_at:
            await tick()
        if k is not None:
            ctx.set(dut.advance, k)
            out["quiet"] = bool(ctx.get(dut.quiet))
            if out["quiet"]:
                await tick(k)
        end = start + skip_at + follow
        while cycle < end:
            out["states"][cycle] = (ctx.get(dut.current), ctx.get(dut.deadline))
            await tick()

    simulate(dut, bench)
    return out


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from([TimerMode.ONE_SHOT, TimerMode.PERIODIC, TimerMode.TSC_DEADLINE]),
       divisor=st.sampled_from(sorted(TIMER_DIVIDE_VALUES)), count=st.integers(1, 12),
       pre=st.integers(0, 130), skip_at=st.integers(0, 20), k=st.integers(0, 300))
def test_timer_skip_is_exact_and_quiet_says_when(mode, divisor, count, pre, skip_at, k):
    reference = _timer_trace(mode, divisor, count, pre, skip_at, None, follow=k + 1 + FOLLOW)
    skipped = _timer_trace(mode, divisor, count, pre, skip_at, k, follow=k + 1 + FOLLOW)
    fires = reference["fires"]
    skip_from = min(skipped["states"]) - (k + 1) if skipped["quiet"] else None
    if skipped["quiet"]:
        # nothing fires in the K + 1 cycles the edge stands for ...
        assert not [c for c in fires if skip_from <= c <= skip_from + k]
        # ... and afterwards both timers are in the same state and fire on the same cycles
        assert {c: s for c, s in reference["states"].items() if c in skipped["states"]} == \
            {c: s for c, s in skipped["states"].items() if c in reference["states"]}
        assert [c for c in skipped["fires"] if c > skip_from] == [c for c in fires if c > skip_from]
    else:
        # not quiet: a fire falls inside the window the skip would have covered
        states = sorted(skipped["states"])
        window_start = states[0]
        assert [c for c in fires if window_start <= c <= window_start + k]


def test_timer_skip_of_a_long_count():
    """A one-shot count of 5000 ticks at divide-by-16 skipped to just before it fires: it fires
    on the same cycle as the cycle-by-cycle timer."""
    # armed at cycle 5 (current 5000 from cycle 6); the prescaler counts from 0 at cycle 0, so
    # the ticks are the cycles 15, 31, ... and the 5000th fires
    skipped = _timer_trace(TimerMode.ONE_SHOT, 16, 5000, 5, 0, 16 * 5000 - 100, follow=16 * 5000 + 50)
    assert skipped["quiet"] and skipped["fires"] == [15 + 4999 * 16]
    too_far = _timer_trace(TimerMode.ONE_SHOT, 16, 5000, 5, 0, 16 * 5000, follow=1)
    assert not too_far["quiet"]


#: (scenario, CPUs, options): every system, the long guest waits (Linux's INIT delay, the call-in
#: timeout of a dead AP, an SMI handler's hold, a request nobody answers), the APIC timer in
#: each mode, and the hardware counters that bound a skip (the mailbox's no-target count, an AP
#: returning through ResetVector, the GHCB unit's holds).  The INIT-SIPI and SEV cases run on 4
#: and 2 CPUs, fabrics and systems other tests build (the CI budget); the mailbox cases on 8, the
#: system the x2APIC command-line test builds.
SCENARIO_CASES = [
    ("init-sipi", 4, {"method": "legacy"}),
    ("init-sipi", 4, {"method": "legacy", "lapic_timer": "oneshot"}),
    ("init-sipi", 4, {"method": "legacy", "lapic_timer": "periodic"}),
    ("init-sipi-smm", 4, {"callin_timeout_us": 100_000}),
    ("init-sipi", 4, {"unresponsive": [2], "callin_timeout_us": 20_000}),
    # the OS spins on the mailbox's Command through the bus (one read per 10 cycles): activity,
    # never skipped; the case checks that the skipper sees it.  20 ms of guest time, 2,000
    # cycles, is past every live AP's wake-up (the clocked pair took 46 s in CI at 100 ms)
    ("mpwk-wakeup", 8, {"unresponsive": [3], "callin_timeout_us": 20_000}),
    ("mpwk-offline-online", 8, {"time_scale": 1.0}),
    ("kexec-mpwk-v1", 8, {"time_scale": 1.0}),
    # GHCB version 1 on 2 CPUs: the version-1 system the cocotb tests build (its 8-CPU runs are
    # under -m slow, for the CI budget)
    ("sev-es-offline-online", 2, {"ghcb_version": 1, "time_scale": 1.0}),
    ("kexec-sev-es-v2", 2, {"time_scale": 1.0}),
    ("kexec-sev-es-v1", 2, {"force_kexec": True, "callin_timeout_us": 100_000}),
]
#: the cases whose waits are all spent spinning on hardware
NOTHING_TO_SKIP = {"mpwk-wakeup"}
#: who is online in the cases with a dead AP: every live AP came up within the short call-in
#: timeout (the mailbox is one for all APs: Command stays set for the dead AP 3, so the later
#: wakeups go unanswered too, as the 8-CPU report says)
ONLINE_WITH_A_DEAD_AP = {"init-sipi": [0, 1, 3], "mpwk-wakeup": [0, 1, 2]}


def _comparable(report):
    """The report without what may differ: wall time, build figures, the skip counts and the
    option that asked for them."""
    report = {k: v for k, v in report.items()
              if k not in (*RUN_DEPENDENT, "time_skip")}
    report["options"] = {k: v for k, v in report["options"].items() if k != "time_skip"}
    return report


@pytest.mark.verilator
@pytest.mark.parametrize("name, cpus, fields", SCENARIO_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in f.items()) or 'default'}"
                              for n, _, f in SCENARIO_CASES])
def test_scenario_report_is_the_same_with_and_without_skipping(name, cpus, fields):
    from apwake.sim.cli import run_scenario_cli
    from apwake.sim.scenarios.options import ScenarioOptions
    clocked = run_scenario_cli(name, cpus=cpus, options=ScenarioOptions(time_skip=False, **fields),
                               label=f"timeskip-off-{name}")
    skipped = run_scenario_cli(name, cpus=cpus, options=ScenarioOptions(**fields),
                               label=f"timeskip-on-{name}")
    assert "time_skip" not in clocked
    if name in NOTHING_TO_SKIP:
        assert skipped["time_skip"]["cycles_skipped"] == 0
    else:
        assert skipped["time_skip"]["cycles_skipped"] > 0, "the case has long waits: some must be skipped"
    assert _comparable(skipped) == _comparable(clocked)
    if "unresponsive" in fields:
        assert sorted(clocked["online"]) == ONLINE_WITH_A_DEAD_AP[name], clocked["online"]


@pytest.mark.verilator
def test_skipping_is_exact_in_a_later_test_of_a_module(tmp_path):
    """The second test of a cocotb module starts its clock off the grid of whole periods; the
    skipped run still gives the clocked run's report (cocotb_tests/bringup/tb_timeskip.py)."""
    import json
    from apwake.sim.harness.build import build
    from apwake.sim.harness.run import run_cocotb
    from apwake.sim.scenarios.options import ScenarioOptions, ScenarioRequest
    from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
    config = FabricConfig.contiguous(8)
    the_build = build(FabricDesign(config))
    reports = {}
    for skip in (False, True):
        path = tmp_path / f"skip-{skip}.json"
        options = ScenarioOptions(method="legacy", lapic_timer="oneshot", time_skip=skip)
        env = {CONFIG_ENV: config.to_json(), **ScenarioRequest("init-sipi", options, report=str(path)).env()}
        run_cocotb(the_build, "cocotb_tests.bringup.tb_timeskip", label=f"timeskip-phase-{skip}", extra_env=env)
        reports[skip] = json.loads(path.read_text())
    times = [event[0] for cpu in reports[True]["timeline"] for event in cpu["events"]]
    assert any(t % 10 > 0.5 for t in times), "the second test's clock runs off the grid of whole periods"
    assert reports[True]["time_skip"]["cycles_skipped"] > 0
    assert _comparable(reports[True]) == _comparable(reports[False])
