"""Starts a fabric testbench: clock, reset, one :class:`ApicPort` per CPU, optional monitor."""

import time

from apwake.sim.harness import pins
from apwake.sim.harness.clocking import CLOCK_NS, start_clock_and_reset
from apwake.sim.harness.timeskip import TimeSkipper
from apwake.sim.harness.watch import WatchedOutputs
from .bfm import ApicPort
from .design import FabricConfig
from .monitor import FabricMonitor

__all__ = ["FabricEnv"]


class FabricEnv:
    """Handles to a running ``apwake_fabric`` (or a system around one): ``ports[i]`` per CPU,
    ``config``, ``monitor``, ``clock`` (the running :class:`cocotb.clock.Clock`, after
    :meth:`start`) and ``clock_started`` (the ``time.monotonic()`` seconds at which :meth:`start`
    started it, after the ports' set-up: where a scenario's wall time begins, as the benchmark's
    ceilings, which time clocked cycles only, begin theirs)."""

    def __init__(self, dut, config):
        self.dut = dut
        self.config = config
        #: the top's watched outputs (one simulator callback for every port's events), or None
        self.watched = WatchedOutputs.of(dut)
        self.ports = [ApicPort(dut, i, apic_id, clock_ns=CLOCK_NS, watched=self.watched)
                      for i, apic_id in enumerate(config.apic_ids)]
        self.monitor = FabricMonitor(dut, clock_ns=CLOCK_NS, senders=self.ports)
        self.clock = None
        self.clock_started = None
        # Time skipping's input starts at 0 whether or not a skipper runs: Icarus leaves an
        # undriven input X, and an X advance makes the TSC X (read back by RDMSR).
        advance = pins.port(dut, "advance", None)
        if advance is not None:
            advance.value = 0

    @classmethod
    async def start(cls, dut, *, config=None, monitor=True):
        env = cls(dut, config or FabricConfig.from_env())
        env.clock_started = time.monotonic()
        env.clock = await start_clock_and_reset(dut, CLOCK_NS)
        if monitor:
            env.monitor.start()
        return env

    def time_skipper(self, **kwargs):
        """A :class:`apwake.sim.harness.timeskip.TimeSkipper` for this design (not started)."""
        return TimeSkipper(self.dut.clk, self.clock, pins.port(self.dut, "advance"),
                           self.dut.quiescent, clock_ns=CLOCK_NS, **kwargs)

    @property
    def n(self):
        return self.config.n_cpus
