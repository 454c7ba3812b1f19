"""An absolute deadline for a wait that wakes and re-checks several times.

A cocotb :class:`~cocotb.triggers.Timer` counts from the moment it is awaited (``Timer._prime``
registers the simulator callback ``sim_steps`` after the current time, cocotb 2.1), so one Timer
made before a loop and awaited in each pass (``First(event.wait(), deadline)``) restarted the
wait's watchdog at every wake-up: a wait that other activity kept waking timed out only after
``timeout`` without a wake-up, or never.  :class:`Deadline` fixes the end once and gives each
pass a Timer to it.  ``cocotb_tests/harness/tb_deadline.py`` checks it in a simulation.
"""

from cocotb.triggers import First, Timer
from cocotb.utils import get_sim_steps, get_sim_time

__all__ = ["Deadline"]


class Deadline:
    """``timeout_ns`` simulated nanoseconds from its creation.

    In each pass of a wait: ``if not await deadline.wait(trigger):`` the deadline has passed;
    else ``trigger`` (an awaitable: an Event's ``wait()``, an edge) fired first.

    Parameters
    ----------
    timeout_ns : float
        Positive; rounded up to the simulator's precision.

    Raises
    ------
    ValueError
        ``timeout_ns`` is not positive.
    """

    def __init__(self, timeout_ns):
        if not timeout_ns > 0:
            raise ValueError(f"a deadline needs a positive timeout_ns, not {timeout_ns!r}")
        self.timeout_ns = timeout_ns
        #: the end, in simulator steps
        self.end = get_sim_time("step") + get_sim_steps(timeout_ns, "ns", round_mode="ceil")

    async def wait(self, trigger):
        """Wait for ``trigger`` or the end, whichever comes first: True when ``trigger`` fired
        first, False at the end (at once when it has passed)."""
        left = self.end - get_sim_time("step")
        if left <= 0:
            return False
        timer = Timer(left, "step")
        return await First(trigger, timer) is not timer
