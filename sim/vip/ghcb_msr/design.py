"""The GHCB MSR trap unit alone (block tests) and the SEV-ES/SEV-SNP system (scenarios) as
simulation designs."""

from dataclasses import asdict, dataclass

from apwake.rtl.ghcb_msr import GhcbMsrUnit
from apwake.rtl.ghcb_msr.layouts import DEFAULT_VMSA_FEATURES
from apwake.rtl.system.sev import SevSystem

from apwake.sim.harness.build import ComponentDesign, port_names
from apwake.sim.harness.config import EnvConfig
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["GhcbConfig", "GhcbDesign", "SevSystemConfig", "SevSystemDesign", "VCPU_WATCHED"]


@dataclass(frozen=True)
class GhcbConfig(EnvConfig):
    """The unit's parameters (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`; the CPUID table is the
    default).  ``apic_ids``: None is ``0 .. n_vcpus - 1``."""

    ENV = "APWAKE_GHCB_CONFIG"
    n_vcpus: int = 3
    bsp_index: int = 0
    min_version: int = 1
    max_version: int = 2
    cbit: int = 51
    snp: bool = False
    apic_ids: tuple | None = None
    vmsa_features: int = DEFAULT_VMSA_FEATURES

    def __post_init__(self):
        if isinstance(self.apic_ids, list):          # from JSON
            object.__setattr__(self, "apic_ids", tuple(self.apic_ids))
        self.component()._MustUse__silence = True    # the RTL's own parameter checks

    def component(self):
        return GhcbMsrUnit(**asdict(self))

    @property
    def vcpu_apic_ids(self):
        """The vCPUs' APIC IDs in port order."""
        return self.apic_ids if self.apic_ids is not None else tuple(range(self.n_vcpus))

    @property
    def label(self):
        label = f"ghcb-v{self.min_version}-{self.max_version}-n{self.n_vcpus}" + ("-snp" if self.snp else "")
        if self.apic_ids is not None:
            label += "-ids" + "_".join(f"{a:x}" for a in self.apic_ids)
        if self.vmsa_features != DEFAULT_VMSA_FEATURES:
            label += f"-f{self.vmsa_features:x}"
        return label


class GhcbDesign(ComponentDesign):
    name = "apwake_ghcb"

    def wave_groups(self, top):
        names = port_names(top)
        return [("memory", ["clk", "rst"] + [n for n in names if n.startswith(("memory__", "term"))]),
                *[(f"vCPU {i}", [n for n in names if n.startswith((f"vcpu__{i}__", f"apic__{i}__"))])
                  for i in range(self.config.n_vcpus)]]


@dataclass(frozen=True)
class SevSystemConfig(OnFabricConfig):
    """An SEV-ES guest, or with ``snp`` an SEV-SNP guest (AP Creation): the fabric's CPUs as
    vCPUs of one VM, the GHCB MSR unit of its hypervisor."""

    ENV = "APWAKE_SEV_SYSTEM_CONFIG"
    fabric: FabricConfig
    min_version: int = 1
    max_version: int = 2
    cbit: int = 51
    snp: bool = False
    vmsa_features: int = DEFAULT_VMSA_FEATURES

    def unit_parameters(self):
        return {"min_version": self.min_version, "max_version": self.max_version, "cbit": self.cbit,
                "snp": self.snp, "vmsa_features": self.vmsa_features}

    @property
    def label(self):
        kind = "sev-snp" if self.snp else "sev-es"
        label = f"{self.fabric.label}-{kind}-v{self.min_version}-{self.max_version}"
        if self.vmsa_features != DEFAULT_VMSA_FEATURES:
            label += f"-f{self.vmsa_features:x}"
        return label


#: the outputs of a vCPU port the CPU models wait on: the hypervisor's starts, the end of each
#: VMGEXIT, and the vCPU's state
VCPU_WATCHED = ("launch", "vmsa_launch", "exit_done", "state")


class SevSystemDesign(OnFabricDesign):
    """:class:`apwake.rtl.system.sev.SevSystem`."""

    name = "apwake_sev_system"

    def wrap(self, fabric):
        return SevSystem(fabric, **self.config.unit_parameters())

    def watched_outputs(self):
        # what each vCPU's model waits on (apwake.sim.vip.ghcb_msr.bfm.VcpuPort)
        return [*super().watched_outputs(),
                *(f"vcpu__{i}__{name}" for i in range(self.config.fabric.n_cpus) for name in VCPU_WATCHED)]
