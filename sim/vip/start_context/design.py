"""The start-context unit alone (block tests) as a simulation design."""

import zlib
from dataclasses import dataclass

from apwake.rtl.start_context import StartContextUnit
from apwake.rtl.system.pvstart import PvStartSystem

from apwake.sim.harness.build import ComponentDesign, port_names
from apwake.sim.harness.config import EnvConfig
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["StartContextConfig", "StartContextDesign", "PvStartSystemConfig", "PvStartSystemDesign"]


@dataclass(frozen=True)
class StartContextConfig(EnvConfig):
    """The unit's parameters (:class:`apwake.rtl.start_context.StartContextUnit`)."""

    ENV = "APWAKE_START_CONTEXT_CONFIG"
    apic_ids: tuple = (0, 1, 2)
    bsp_index: int = 0

    def __post_init__(self):
        if isinstance(self.apic_ids, list):       # from JSON
            object.__setattr__(self, "apic_ids", tuple(self.apic_ids))
        self.component()          # the RTL's own parameter checks

    def component(self):
        return StartContextUnit(apic_ids=self.apic_ids, bsp_index=self.bsp_index)

    @property
    def n_vcpus(self):
        return len(self.apic_ids)

    @property
    def label(self):
        n = self.n_vcpus
        if self.apic_ids == tuple(range(n)):
            ids = ""
        elif n <= 8:
            ids = "-ids" + "_".join(f"{i:x}" for i in self.apic_ids)
        else:
            ids = f"-ids{zlib.crc32(repr(self.apic_ids).encode()):08x}"
        return f"start-context-n{n}-bsp{self.bsp_index}{ids}"


class StartContextDesign(ComponentDesign):
    name = "apwake_start_context"

    def wave_groups(self, top):
        names = port_names(top)
        first = [n for n in names if n.startswith(("call__", "memory__", "idle"))]
        return [("calls and memory", ["clk", "rst"] + first),
                ("launch", [n for n in names if n.startswith("launch__")]),
                *[(f"vCPU {i}", [n for n in names if n.startswith(f"apic__{i}__")])
                  for i in range(self.config.n_vcpus)]]


@dataclass(frozen=True)
class PvStartSystemConfig(OnFabricConfig):
    """A paravirtualised guest: the fabric's CPUs as vCPUs, the start-context unit of their
    hypervisor (its APIC IDs and BSP are the fabric's)."""

    ENV = "APWAKE_PVSTART_SYSTEM_CONFIG"
    fabric: FabricConfig

    @property
    def label(self):
        return f"{self.fabric.label}-pvstart"


class PvStartSystemDesign(OnFabricDesign):
    """:class:`apwake.rtl.system.pvstart.PvStartSystem`."""

    name = "apwake_pvstart_system"

    def wrap(self, fabric):
        return PvStartSystem(fabric)
