"""The GHCB MSR trap unit alone (block tests) and the SEV-ES system (scenarios) as
simulation designs."""

from dataclasses import asdict, dataclass

from apwake.rtl.ghcb_msr import GhcbMsrUnit
from apwake.rtl.system.sev import SevSystem

from apwake.sim.harness.build import ComponentDesign, port_names
from apwake.sim.harness.config import EnvConfig
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["GhcbConfig", "GhcbDesign", "SevSystemConfig", "SevSystemDesign"]


@dataclass(frozen=True)
class GhcbConfig(EnvConfig):
    """The unit's parameters (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`; the CPUID table is the default)."""

    ENV = "APWAKE_GHCB_CONFIG"
    n_vcpus: int = 3
    bsp_index: int = 0
    min_version: int = 1
    max_version: int = 2
    cbit: int = 51
    snp: bool = False

    def __post_init__(self):
        self.component()          # the RTL's own parameter checks

    def component(self):
        return GhcbMsrUnit(**asdict(self))

    @property
    def label(self):
        return f"ghcb-v{self.min_version}-{self.max_version}-n{self.n_vcpus}" + ("-snp" if self.snp else "")


class GhcbDesign(ComponentDesign):
    name = "apwake_ghcb"

    def wave_groups(self, top):
        names = port_names(top)
        return [("memory", ["clk", "rst"] + [n for n in names if n.startswith(("memory__", "term"))]),
                *[(f"vCPU {i}", [n for n in names if n.startswith((f"vcpu__{i}__", f"apic__{i}__"))])
                  for i in range(self.config.n_vcpus)]]


@dataclass(frozen=True)
class SevSystemConfig(OnFabricConfig):
    """An SEV-ES guest: the fabric's CPUs as vCPUs of one VM, the GHCB MSR unit of its hypervisor."""

    ENV = "APWAKE_SEV_SYSTEM_CONFIG"
    fabric: FabricConfig
    min_version: int = 1
    max_version: int = 2
    cbit: int = 51

    def unit_parameters(self):
        return {"min_version": self.min_version, "max_version": self.max_version, "cbit": self.cbit}

    @property
    def label(self):
        return f"{self.fabric.label}-sev-es-v{self.min_version}-{self.max_version}"


class SevSystemDesign(OnFabricDesign):
    """:class:`apwake.rtl.system.sev.SevSystem`."""

    name = "apwake_sev_system"

    def wrap(self, fabric):
        return SevSystem(fabric, **self.config.unit_parameters())
