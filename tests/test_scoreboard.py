"""The storm scoreboard itself: it must pass good traffic and name each kind of bad traffic."""

import pytest

from rtl.lapic.layouts import DeliveryMode, DestMode, Level, Shorthand, Trigger
from sim.lapic.model import ApicState
from sim.lapic.monitor import BusCycle
from sim.lapic.scoreboard import IpiScoreboard


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
