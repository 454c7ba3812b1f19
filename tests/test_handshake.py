"""The seeded jitter and stall machinery of :mod:`apwake.sim.harness.handshake`, outside the simulator."""

import itertools
import random

import pytest

from apwake.sim.harness import handshake
from apwake.sim.harness.handshake import JITTER_ENV, STALL_ENV, random_pauses, seed_note, seeds


def test_random_pauses_are_deterministic_and_bounded():
    take = lambda seed: list(itertools.islice(random_pauses(random.Random(seed), stall=0.5,
                                                            max_burst=3), 400))
    first = take(7)
    assert first == take(7) and first != take(8)
    assert 0 < sum(first) < len(first), "a pause generator must both stall and let through"
    longest = max(len(list(run)) for stalled, run in itertools.groupby(first) if stalled)
    assert longest <= 3


def test_random_pauses_never_stall_at_zero():
    assert not any(itertools.islice(random_pauses(random.Random(1), stall=0), 200))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(stall=1), r"stall must be a probability in \[0, 1\), not 1"),
    (dict(stall=-0.1), r"stall must be a probability in \[0, 1\), not -0.1"),
    (dict(max_burst=0), r"max_burst must be a whole number of cycles >= 1, not 0"),
])
def test_random_pauses_check_their_arguments_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_pauses(random.Random(1), **kwargs)


def test_seeds_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(JITTER_ENV, raising=False)
    monkeypatch.delenv(STALL_ENV, raising=False)
    assert seeds() == {} and seed_note() == ""
    assert handshake._rng(JITTER_ENV, "CPU port 0") is None
    monkeypatch.setenv(JITTER_ENV, "3")
    monkeypatch.setenv(STALL_ENV, "off")
    assert seeds() == {JITTER_ENV: "3"}
    assert seed_note() == " [seeded run: APWAKE_JITTER=3 (pytest --jitter 3)]"
    # one generator per driver name, the same in every simulator process
    a, b = handshake._rng(JITTER_ENV, "CPU port 0"), handshake._rng(JITTER_ENV, "CPU port 0")
    assert a.random() == b.random()
    assert handshake._rng(JITTER_ENV, "CPU port 1").random() != handshake._rng(JITTER_ENV, "CPU port 0").random()


def test_a_bad_seed_is_named(monkeypatch):
    monkeypatch.setenv(STALL_ENV, "fast")
    with pytest.raises(ValueError, match=r"APWAKE_STALL='fast': the seed must be an integer"):
        seeds()


def test_a_pause_generator_that_never_lets_through_is_caught(monkeypatch):
    monkeypatch.delenv(STALL_ENV, raising=False)
    driver = handshake.Driver(None, "guest memory ghcb_memory")
    driver.set_pause_generator(itertools.repeat(True))
    for _ in range(handshake.MAX_PAUSE_CYCLES):
        assert driver._stalled()
    with pytest.raises(handshake.SimTimeout, match=r"guest memory ghcb_memory: its pause generator "
                                                   r"stalled for more than 10000 cycles in a row"):
        driver._stalled()
    driver.set_pause_generator(None)
    assert not driver._stalled()
