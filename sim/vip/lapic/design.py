"""The APIC fabric as a simulation design (configuration, Verilog top, waveform groups)."""

from dataclasses import asdict, dataclass

from apwake.rtl.lib.instance import PackedPorts, SeparateModule
from apwake.rtl.lapic import ApicFabric, LocalApic
from apwake.rtl.lapic.cluster import ApicCluster, check_cluster_size, cluster_count, cluster_signature
from apwake.rtl.lapic.local_apic import check_n_vectors, local_apic_signature
from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lapic.fabric import check_apic_ids_fit
from apwake.rtl.lapic.register_file import check_storage, check_x2apic_support

from apwake.sim.harness.build import Design, port_names, recipe_digest
from apwake.sim.harness.config import EnvConfig

__all__ = ["FabricConfig", "FabricDesign", "CONFIG_ENV", "OnFabricConfig", "OnFabricDesign",
           "CPU_EVENTS", "cpu_event_outputs"]

CONFIG_ENV = "APWAKE_FABRIC_CONFIG"

#: APICs per cluster unless a configuration says otherwise: 255 CPUs build in 77-82 s with 16
#: or 32 (274 s with one hierarchical block per APIC) and run at the same speed; 32 keeps a
#: 1024-CPU top at 32 instances (docs/PERFORMANCE.md, "Clusters")
CLUSTER_SIZE = 32

#: the APIC's outputs to its CPU whose rising edges a CPU model waits on
#: (:class:`apwake.sim.vip.lapic.bfm.ApicPort`)
CPU_EVENTS = ("init", "sipi", "nmi", "smi", "intr")


def cpu_event_outputs(n_cpus):
    """The port names of every CPU port's :data:`CPU_EVENTS` (``cpu__3__sipi``): a fabric
    top's watched outputs (:meth:`apwake.sim.harness.build.Design.watched_outputs`)."""
    return [f"cpu__{i}__{event}" for i in range(n_cpus) for event in CPU_EVENTS]


@dataclass(frozen=True)
class FabricConfig(EnvConfig):
    """Parameters of one fabric build (see :class:`apwake.rtl.lapic.ApicFabric`).

    ``cluster_size`` 0 lets the design choose (:data:`CLUSTER_SIZE` APICs per cluster, or one
    cluster of every CPU when there are fewer); the fabric behaves the same for every size.
    """

    ENV = CONFIG_ENV
    apic_ids: tuple
    n_vectors: int = 256
    bsp_index: int = 0
    allow_duplicate_ids: bool = False
    local_interrupts: bool = True
    cluster_size: int = 0
    storage: str = "flops"
    x2apic_support: bool = True
    pipelined: bool = False

    def __post_init__(self):
        object.__setattr__(self, "apic_ids", tuple(self.apic_ids))
        check_n_vectors(self.n_vectors)
        check_storage(self.storage)
        check_x2apic_support(self.x2apic_support)
        check_bool("pipelined", self.pipelined)
        check_apic_ids_fit(self.apic_ids, x2apic_support=self.x2apic_support)
        check_cluster_size(self.cluster_size, len(self.apic_ids), zero_means="the harness's choice")

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
        if self.cluster_size:
            parts.append(f"c{self.cluster_size}")
        if self.storage != "flops":
            parts.append(self.storage)
        if not self.x2apic_support:
            parts.append("nox2apic")
        if self.pipelined:
            parts.append("pipe")
        return "-".join(parts)



class FabricDesign(Design):
    """:class:`~apwake.rtl.lapic.ApicFabric` with the APIC and the cluster converted once each
    (ports packed) and compiled as nested hierarchical blocks."""

    name = "apwake_fabric"

    def __init__(self, config):
        self.config = config

    @property
    def _suffix(self):
        c = self.config
        return (("" if c.local_interrupts else "_nolvt") + ("" if c.storage == "flops" else f"_{c.storage}")
                + ("" if c.x2apic_support else "_nox2apic") + ("_pipe" if c.pipelined else ""))

    @property
    def apic_module(self):
        return f"apwake_lapic_v{self.config.n_vectors}{self._suffix}"

    @property
    def cluster_size(self):
        return self.config.cluster_size or min(self.config.n_cpus, CLUSTER_SIZE)

    @property
    def cluster_module(self):
        return f"apwake_lapic_cluster{self.cluster_size}_v{self.config.n_vectors}{self._suffix}"

    def parameters(self):
        return asdict(self.config)

    def _apic(self, **_):
        return SeparateModule(local_apic_signature(), self.apic_module, packed=True)

    def _cluster(self, size, **_):
        return SeparateModule(cluster_signature(size), self.cluster_module, packed=True)

    @property
    def n_clusters(self):
        return cluster_count(self.config.n_cpus, self.cluster_size)

    @property
    def _apic_parameters(self):
        c = self.config
        return dict(n_vectors=c.n_vectors, local_interrupts=c.local_interrupts, storage=c.storage,
                    x2apic_support=c.x2apic_support, pipelined=c.pipelined)

    def separate_module_keys(self):
        # what each module is made from (separate_modules, this file): equal keys, equal Verilog
        recipe = {"recipe": recipe_digest(__file__)}
        keys = {self.apic_module: {**self._apic_parameters, **recipe}}
        if self.n_clusters > 1:
            keys[self.cluster_module] = {**self._apic_parameters, **recipe, "cluster_size": self.cluster_size,
                                         "apic_module": self.apic_module}
        return keys

    def separate_modules(self):
        # Both compiled as hierarchical blocks, nested: the APIC once, each cluster calling its
        # instances; the cluster once, the top calling N/CLUSTER_SIZE of them.  Measured at 64
        # CPUs (docs/PERFORMANCE.md, "Clusters"): APICs inlined into the cluster run slower
        # (7,169 idle cycles/s against 11,938) and compile longer (46 s against 27 s).  One
        # cluster (up to CLUSTER_SIZE CPUs: most test configurations) is elaborated in the top
        # instead: a cluster module would cost a conversion and a block build for one instance
        # (8 CPUs cold: 40.3 s as a nested block, 28.7 s without, measured).
        modules = {self.apic_module: PackedPorts(LocalApic(**self._apic_parameters))}
        if self.n_clusters > 1:
            modules[self.cluster_module] = PackedPorts(ApicCluster(
                self.cluster_size, **self._apic_parameters, apic_factory=self._apic))
        return modules

    def top(self):
        c = self.config
        factory = (dict(cluster_factory=self._cluster) if self.n_clusters > 1
                   else dict(apic_factory=self._apic))
        return ApicFabric(c.apic_ids, n_vectors=c.n_vectors, bsp_index=c.bsp_index,
                          allow_duplicate_ids=c.allow_duplicate_ids,
                          local_interrupts=c.local_interrupts, storage=c.storage,
                          x2apic_support=c.x2apic_support, cluster_size=self.cluster_size,
                          pipelined=c.pipelined, **factory)

    def watched_outputs(self):
        return cpu_event_outputs(self.config.n_cpus)

    def wave_groups(self, top):
        names = port_names(top)
        groups = [("fabric", ["clk", "rst"] + [n for n in names if n.startswith("trace__")])]
        for i, apic_id in enumerate(self.config.apic_ids):
            ports = [n for n in names if n.startswith(f"cpu__{i}__")]
            # inside the APIC's parts (rtl/lapic/local_apic.py names them)
            cluster, slot = divmod(i, self.cluster_size)
            inside = f"cluster{cluster}.inner." if self.n_clusters > 1 else f"cluster{cluster}."
            internals = [f"{inside}apic{slot}.inner.{n}" for n in (
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

    def separate_module_keys(self):
        return self._fabric.separate_module_keys()

    def top(self):
        return self.wrap(self._fabric.top())

    def wrap(self, fabric):
        """The top-level component around ``fabric`` (not yet elaborated)."""
        raise NotImplementedError

    def watched_outputs(self):
        # the systems pass each CPU's port through (rtl/system/cpu_port.py); a system whose top
        # has no CPU ports must override this (SocDesign), or its conversion fails naming them
        return self._fabric.watched_outputs()

    def wave_groups(self, top):
        return self._fabric.wave_groups(top)
