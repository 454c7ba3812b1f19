"""The APIC fabric as a simulation design (configuration, Verilog top, waveform groups)."""

from dataclasses import asdict, dataclass

from apwake.rtl.lib.instance import SeparateModule
from apwake.rtl.lapic import ApicFabric, LocalApic
from apwake.rtl.lapic.local_apic import check_n_vectors, local_apic_signature

from apwake.sim.harness.build import Design, port_names
from apwake.sim.harness.config import EnvConfig

__all__ = ["FabricConfig", "FabricDesign", "CONFIG_ENV", "OnFabricConfig", "OnFabricDesign"]

CONFIG_ENV = "APWAKE_FABRIC_CONFIG"


@dataclass(frozen=True)
class FabricConfig(EnvConfig):
    """Parameters of one fabric build (see :class:`apwake.rtl.lapic.ApicFabric`)."""

    ENV = CONFIG_ENV
    apic_ids: tuple
    n_vectors: int = 256
    bsp_index: int = 0
    allow_duplicate_ids: bool = False
    local_interrupts: bool = True

    def __post_init__(self):
        object.__setattr__(self, "apic_ids", tuple(self.apic_ids))
        check_n_vectors(self.n_vectors)

    @classmethod
    def contiguous(cls, n_cpus, **kwargs):
        if not isinstance(n_cpus, int) or n_cpus < 1:
            raise ValueError(f"n_cpus must be a positive integer, not {n_cpus!r}")
        return cls(tuple(range(n_cpus)), **kwargs)

    @property
    def n_cpus(self):
        return len(self.apic_ids)

    @property
    def label(self):
        contiguous = self.apic_ids == tuple(range(self.n_cpus))
        parts = [f"n{self.n_cpus}" + ("" if contiguous else "-sparse")]
        if self.n_vectors != 256:
            parts.append(f"v{self.n_vectors}")
        if self.bsp_index:
            parts.append(f"bsp{self.bsp_index}")
        if not self.local_interrupts:
            parts.append("nolvt")
        return "-".join(parts)



class FabricDesign(Design):
    """:class:`~apwake.rtl.lapic.ApicFabric` with one separately converted APIC module."""

    name = "apwake_fabric"

    def __init__(self, config):
        self.config = config

    @property
    def apic_module(self):
        suffix = "" if self.config.local_interrupts else "_nolvt"
        return f"apwake_lapic_v{self.config.n_vectors}{suffix}"

    def parameters(self):
        return asdict(self.config)

    def separate_modules(self):
        return {self.apic_module: LocalApic(n_vectors=self.config.n_vectors,
                                            local_interrupts=self.config.local_interrupts)}

    def top(self):
        c = self.config
        return ApicFabric(c.apic_ids, n_vectors=c.n_vectors, bsp_index=c.bsp_index,
                          allow_duplicate_ids=c.allow_duplicate_ids,
                          local_interrupts=c.local_interrupts,
                          apic_factory=lambda **_: SeparateModule(local_apic_signature(),
                                                                  self.apic_module))

    def wave_groups(self, top):
        names = port_names(top)
        groups = [("fabric", ["clk", "rst"] + [n for n in names if n.startswith("trace__")])]
        for i, apic_id in enumerate(self.config.apic_ids):
            ports = [n for n in names if n.startswith(f"cpu__{i}__")]
            # inside the APIC's parts (rtl/lapic/local_apic.py names them)
            internals = [f"apic{i}.{n}" for n in (
                "interrupts.irr", "interrupts.isr", "errors.esr_pending", "errors.value",
                "sender.tx_valid", "sender.tx_msg", "registers.tpr", "registers.svr",
                "registers.ldr")]
            groups.append((f"APIC {i} (ID {apic_id:#x})", ports + internals))
        return groups


class OnFabricConfig(EnvConfig):
    """Mixin for the configurations of designs built around the fabric (the mailbox, SEV-ES and
    SoC systems): a frozen dataclass with a ``fabric`` field, which arrives as a dict from JSON."""

    def __post_init__(self):
        if isinstance(self.fabric, dict):
            object.__setattr__(self, "fabric", FabricConfig(**self.fabric))

    @property
    def n_cpus(self):
        return self.fabric.n_cpus


class OnFabricDesign(Design):
    """A design whose top wraps the fabric (``config.fabric``), with the APIC converted once as
    in :class:`FabricDesign`; subclasses give ``name`` and :meth:`wrap`."""

    def __init__(self, config):
        self.config = config
        self._fabric = FabricDesign(config.fabric)

    def parameters(self):
        return asdict(self.config)

    def separate_modules(self):
        return self._fabric.separate_modules()

    def top(self):
        return self.wrap(self._fabric.top())

    def wrap(self, fabric):
        """The top-level component around ``fabric`` (not yet elaborated)."""
        raise NotImplementedError

    def wave_groups(self, top):
        return self._fabric.wave_groups(top)
