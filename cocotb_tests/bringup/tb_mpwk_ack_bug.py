"""Firmware that acknowledges by clearing WakeupVector instead of Command (the edk2 bug fixed in
9c733f0b90, docs/spec/mpwk.md §7 #21): a negative test of the OS side's spin."""

import cocotb

from apwake.sim.vip.mpwk_mailbox.design import MpwkSystemConfig
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import run_scenario


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_ack_clears_wakeup_vector(dut):
    """The first AP is woken but Command never reads 0, so Linux would spin for ever on it; the
    model names that AP after the callin timeout, and no later Wakeup starts (Command is still
    set, so the mailbox sees no new request): the other APs never leave the firmware loop."""
    assert MpwkSystemConfig.from_env().ack_clears == "wakeup_vector"
    report = await run_scenario(dut, "mpwk-wakeup", ScenarioOptions(callin_timeout_us=200_000))
    assert not report["passed"]
    first, *rest = report["timeline"][1:]
    failed = {f["cpu"]: f["message"] for f in report["failures"]}
    assert sorted(failed) == sorted(c["cpu"] for c in [first, *rest])
    assert all("never acknowledged" in m for m in failed.values()), failed
    wakes = lambda cpu: [e for e in cpu["events"] if e[2].startswith("mailbox Wakeup")]
    assert len(wakes(first)) == 1, "the first AP was not woken at all"
    for cpu in rest:
        assert wakes(cpu) == [] and cpu["where"] == "firmware: mailbox poll loop", cpu
