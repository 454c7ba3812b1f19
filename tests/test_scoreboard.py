"""The storm scoreboard and the monitor's send ledger themselves: they must pass good traffic and
name each kind of bad traffic, a duplicated message above all (issue 10)."""

import pytest

from apwake.rtl.lapic.layouts import DeliveryMode, DestMode, Level, Shorthand, Trigger
from apwake.sim.vip.lapic.model import ApicState
from apwake.sim.vip.lapic.monitor import BusCycle, SendLedger
from apwake.sim.vip.lapic.scoreboard import IpiScoreboard


def msg(vector, dest, shorthand=Shorthand.NONE):
    return {"vector": vector, "delivery_mode": DeliveryMode.FIXED, "dest_mode": DestMode.PHYSICAL,
            "level": Level.ASSERT, "trigger": Trigger.EDGE, "shorthand": shorthand,
            "destination": dest, "x2apic": 0}


def board():
    states = [ApicState(apic_id=i, sw_enabled=True) for i in range(3)]
    b = IpiScoreboard(states, spurious_vector=0xFF)
    b.expect(0, vector=0x40, destination=1)
    b.expect(0, vector=0x80, destination=1)
    b.expect(2, vector=0x40, destination=1)
    return b


def good_cycles():
    return [BusCycle(100, 0, msg(0x40, 1), frozenset({1})),
            BusCycle(110, 2, msg(0x40, 1), frozenset({1})),     # merges with the pending 0x40
            BusCycle(120, 0, msg(0x80, 1), frozenset({1}))]


def test_good_traffic_passes_and_counts_merges():
    b = board()
    b.receivers[1].intas = [(130, 0x80), (150, 0x40)]
    b.receivers[1].eois = [(140), (160)]
    stats = b.check(good_cycles())
    assert stats == {"messages": 3, "accepts": 3, "delivered": 2, "merged": 1}


def test_lost_message():
    b = board()
    with pytest.raises(AssertionError, match=r"port 0 wrote 2 IPIs, the bus carried 1"):
        b.check(good_cycles()[:2])


def test_misrouted_message():
    b = board()
    cycles = good_cycles()
    cycles[0] = BusCycle(100, 0, msg(0x40, 1), frozenset({1, 2}))
    with pytest.raises(AssertionError, match=r"accepted by ports \[1, 2\]; the reference model expects \[1\]"):
        b.check(cycles)


def test_priority_inversion():
    b = board()
    b.receivers[1].intas = [(130, 0x40), (150, 0x80)]
    b.receivers[1].eois = [140, 160]
    with pytest.raises(AssertionError, match=r"INTA at 130 ns returned 0x40, expected 0x80"):
        b.check(good_cycles())


def test_left_pending():
    b = board()
    b.receivers[1].intas = [(130, 0x80)]
    b.receivers[1].eois = [140]
    with pytest.raises(AssertionError, match=r"left pending \[64\]"):
        b.check(good_cycles())


def test_duplicated_message():
    """One ICR write carried twice (a driver's write sampled by two edges) fails the check."""
    b = board()
    cycles = good_cycles()
    cycles.insert(1, BusCycle(105, 0, msg(0x40, 1), frozenset({1})))
    with pytest.raises(AssertionError, match=r"port 0 wrote 2 IPIs, the bus carried 3 \(lost or duplicated\)"):
        b.check(cycles)


def ledger():
    sends = SendLedger("CPU port 0")
    sends.add(0x40, DeliveryMode.FIXED, Shorthand.NONE)
    sends.add(0x05, DeliveryMode.FIXED, Shorthand.SELF)      # refused by the APIC: never sent
    sends.add(0x40, DeliveryMode.FIXED, Shorthand.NONE)
    return sends


def test_ledger_matches_each_write_once_and_skips_refused_ones():
    sends = ledger()
    sends.attribute(BusCycle(100, 0, msg(0x40, 1), frozenset({1})))
    sends.attribute(BusCycle(120, 0, msg(0x40, 1), frozenset({1})))     # the third write
    with pytest.raises(AssertionError, match=r"matches no ICR write of that port still to be sent"):
        sends.attribute(BusCycle(130, 0, msg(0x05, 1, Shorthand.SELF), frozenset()))


def test_ledger_fails_a_duplicated_message():
    sends = SendLedger("CPU port 0")
    sends.add(0x50, DeliveryMode.FIXED, Shorthand.NONE)
    sends.attribute(BusCycle(100, 0, msg(0x50, 1), frozenset({1})))
    with pytest.raises(AssertionError, match=r"message from CPU port 0 at 130 ns \(vector 0x50, "
                                             r"delivery mode 0, shorthand 0\) matches no ICR write"):
        sends.attribute(BusCycle(130, 0, msg(0x50, 1), frozenset({1})))
