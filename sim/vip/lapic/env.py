"""Starts a fabric testbench: clock, reset, one :class:`ApicPort` per CPU, optional monitor."""

from apwake.sim.harness.clocking import CLOCK_NS, start_clock_and_reset
from .bfm import ApicPort
from .design import FabricConfig
from .monitor import FabricMonitor

__all__ = ["FabricEnv"]


class FabricEnv:
    """Handles to a running ``apwake_fabric``: ``ports[i]`` per CPU, ``config``, ``monitor``."""

    def __init__(self, dut, config):
        self.dut = dut
        self.config = config
        self.ports = [ApicPort(dut, i, apic_id, clock_ns=CLOCK_NS)
                      for i, apic_id in enumerate(config.apic_ids)]
        self.monitor = FabricMonitor(dut, clock_ns=CLOCK_NS, senders=self.ports)

    @classmethod
    async def start(cls, dut, *, config=None, monitor=True):
        env = cls(dut, config or FabricConfig.from_env())
        await start_clock_and_reset(dut, CLOCK_NS)
        if monitor:
            env.monitor.start()
        return env

    @property
    def n(self):
        return self.config.n_cpus
