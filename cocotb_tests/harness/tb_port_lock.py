"""sim/harness/handshake.py ``PortLock``: one holder at a time, first come first served, taken
at once when free, and never lost by a waiter that is cancelled (a CPU reset mid-access).
tests/test_harness.py runs it (on a one-CPU fabric, whose clock it does not need)."""

import cocotb
from cocotb.triggers import Event, NullTrigger, Timer

from apwake.sim.harness.handshake import PortLock

#: every test ends within nanoseconds; a lock that never passes on fails here instead of hanging
TIMEOUT = dict(timeout_time=1, timeout_unit="us")


async def _holder(lock, name, log, release, *, inside_check):
    async with lock:
        inside_check.append(name)
        assert len(inside_check) == 1, f"two holders at once: {inside_check}"
        log.append(name)
        await release.wait()
        inside_check.remove(name)


async def _release(releases, names):
    """Let the holders named finish, in turn, a step apart."""
    for name in names:
        releases[name].set()
        await Timer(1, "ns")


@cocotb.test(**TIMEOUT)
async def test_a_free_lock_is_taken_without_yielding(dut):
    lock, ran = PortLock(), []

    async def other():
        ran.append(True)

    cocotb.start_soon(other())          # runs at the first yield of this task
    async with lock:
        assert lock.locked() and not ran, "taking a free lock let another task run"
    assert not lock.locked()
    await NullTrigger()
    assert ran


@cocotb.test(**TIMEOUT)
async def test_waiters_are_served_in_arrival_order(dut):
    lock, log, inside = PortLock(), [], []
    releases = {name: Event() for name in "abcd"}
    for name in "abcd":
        cocotb.start_soon(_holder(lock, name, log, releases[name], inside_check=inside))
        await Timer(1, "ns")
    assert lock.waiting == 3
    await _release(releases, "abcd")
    assert log == list("abcd") and not lock.locked()


@cocotb.test(**TIMEOUT)
async def test_a_cancelled_waiter_leaves_the_queue(dut):
    lock, log, inside = PortLock(), [], []
    releases = {name: Event() for name in "abc"}
    tasks = {}
    for name in "abc":
        tasks[name] = cocotb.start_soon(_holder(lock, name, log, releases[name], inside_check=inside))
        await Timer(1, "ns")
    tasks["b"].cancel()                 # waiting behind a
    await Timer(1, "ns")
    assert lock.waiting == 1, "the cancelled waiter is still queued"
    await _release(releases, "ac")
    assert log == ["a", "c"] and not lock.locked()


@cocotb.test(**TIMEOUT)
async def test_a_waiter_cancelled_after_the_hand_over_passes_the_lock_on(dut):
    lock, log, inside = PortLock(), [], []
    releases = {name: Event() for name in "abc"}
    tasks = {}

    async def a_then_cancel_b():
        async with lock:
            log.append("a")
            await releases["a"].wait()
        # the lock is b's now (its turn is set), and b has not run yet
        assert lock.locked()
        tasks["b"].cancel()

    tasks["a"] = cocotb.start_soon(a_then_cancel_b())
    await Timer(1, "ns")
    for name in "bc":
        tasks[name] = cocotb.start_soon(_holder(lock, name, log, releases[name], inside_check=inside))
        await Timer(1, "ns")
    await _release(releases, "ac")
    assert log == ["a", "c"] and not lock.locked()


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(how=["raises", "cancelled"])
async def test_a_holder_that_raises_or_is_cancelled_releases(dut, how):
    """A CPU reset mid-access cancels the task holding the port; an error inside the access
    raises through it: either way the next waiter gets the lock."""
    lock, log, inside = PortLock(), [], []
    releases = {name: Event() for name in "ab"}

    async def failing_holder():
        try:
            async with lock:
                log.append("a")
                await releases["a"].wait()
                raise ValueError("the access failed")
        except ValueError:
            log.append("raised")        # after the lock's exit, before b runs

    holder = cocotb.start_soon(failing_holder())
    await Timer(1, "ns")
    cocotb.start_soon(_holder(lock, "b", log, releases["b"], inside_check=inside))
    await Timer(1, "ns")
    if how == "cancelled":
        holder.cancel()
    else:
        releases["a"].set()
    await Timer(1, "ns")
    assert log == (["a", "b"] if how == "cancelled" else ["a", "raised", "b"]), log
    assert lock.locked() and lock.waiting == 0 and holder.done()
    releases["b"].set()
    await Timer(1, "ns")
    assert not lock.locked()
