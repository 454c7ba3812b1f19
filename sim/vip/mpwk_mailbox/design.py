"""The MP wakeup mailbox alone as a simulation design (block tests)."""

from dataclasses import asdict, dataclass

from apwake.rtl.mpwk_mailbox import MpwkMailbox
from apwake.rtl.mpwk_mailbox.mailbox import madt_entry
from apwake.rtl.system.mpwk import MpwkSystem

from apwake.sim.harness.build import ComponentDesign, port_names
from apwake.sim.harness.config import EnvConfig
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["MailboxConfig", "MailboxDesign", "CONFIG_ENV", "MpwkSystemConfig", "MpwkSystemDesign",
           "MPWK_SYSTEM_ENV"]

MPWK_SYSTEM_ENV = "APWAKE_MPWK_SYSTEM_CONFIG"

CONFIG_ENV = "APWAKE_MAILBOX_CONFIG"


@dataclass(frozen=True)
class MailboxConfig(EnvConfig):
    ENV = CONFIG_ENV
    apic_ids: tuple = (1, 2, 3)
    base: int = 0x7FFF_D000
    version: int = 1
    reset_vector: int = 0x7FFF_E068
    ack_bytes: int = 8
    ack_latency: int = 4
    no_target_timeout: int = 200
    reset_latency: int = 16

    def __post_init__(self):
        object.__setattr__(self, "apic_ids", tuple(self.apic_ids))
        self.component()          # validates every parameter with the RTL's own messages

    def component(self):
        return MpwkMailbox(**{k: v for k, v in asdict(self).items()})

    @property
    def label(self):
        return f"v{self.version}-ack{self.ack_bytes}-n{len(self.apic_ids)}"



class MailboxDesign(ComponentDesign):
    name = "apwake_mailbox"

    def wave_groups(self, top):
        names = port_names(top)
        return [("bus", ["clk", "rst"] + [n for n in names if n.startswith("bus__")] + ["status"]),
                *[(f"AP {i} (ID {apic_id:#x})", [n for n in names if n.startswith(f"ap__{i}__")])
                  for i, apic_id in enumerate(self.config.apic_ids)]]


@dataclass(frozen=True)
class MpwkSystemConfig(OnFabricConfig):
    """A TDX-style system: the fabric's CPUs, the APs parked on an MPWK mailbox."""

    ENV = MPWK_SYSTEM_ENV
    fabric: FabricConfig
    version: int = 1
    base: int = 0x7FFF_D000
    reset_vector: int = 0x7FFF_E068
    ack_bytes: int = 8
    ack_clears: str = "command"      # "wakeup_vector": the edk2 acknowledge bug (docs/spec/mpwk.md §7 #21)

    def mailbox_parameters(self):
        return {"base": self.base, "version": self.version, "ack_bytes": self.ack_bytes,
                "ack_clears": self.ack_clears,
                "reset_vector": self.reset_vector if self.version == 1 else 0}

    def madt_entry(self):
        return madt_entry(version=self.version, base=self.base,
                          reset_vector=self.mailbox_parameters()["reset_vector"])

    @property
    def label(self):
        bug = "" if self.ack_clears == "command" else f"-clears-{self.ack_clears}"
        return f"{self.fabric.label}-mpwk-v{self.version}{bug}"



class MpwkSystemDesign(OnFabricDesign):
    """:class:`apwake.rtl.system.mpwk.MpwkSystem`."""

    name = "apwake_mpwk_system"

    def wrap(self, fabric):
        return MpwkSystem(fabric, **self.config.mailbox_parameters())

    def watched_outputs(self):
        # each parked AP's wakeup (mailbox_ap, one per AP in port order without the BSP)
        n_aps = self.config.fabric.n_cpus - 1
        return [*super().watched_outputs(), *(f"mailbox_ap__{k}__wake" for k in range(n_aps))]
