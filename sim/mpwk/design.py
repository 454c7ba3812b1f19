"""The MP wakeup mailbox alone as a simulation design (block tests)."""

import json
import os
from dataclasses import asdict, dataclass

from rtl.mpwk_mailbox import MpwkMailbox

from ..build import Design

__all__ = ["MailboxConfig", "MailboxDesign", "CONFIG_ENV"]

CONFIG_ENV = "APWAKE_MAILBOX_CONFIG"


@dataclass(frozen=True)
class MailboxConfig:
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

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls):
        return cls(**json.loads(os.environ[CONFIG_ENV]))


class MailboxDesign(Design):
    name = "apwake_mailbox"
    config_env = CONFIG_ENV

    def __init__(self, config):
        self.config = config

    def parameters(self):
        return asdict(self.config)

    def top(self):
        return self.config.component()

    def wave_groups(self, top):
        names = ["__".join(str(p) for p in path) for path, _, _ in top.signature.flatten(top)]
        return [("bus", ["clk", "rst"] + [n for n in names if n.startswith("bus__")] + ["status"]),
                *[(f"AP {i} (ID {apic_id:#x})", [n for n in names if n.startswith(f"ap__{i}__")])
                  for i, apic_id in enumerate(self.config.apic_ids)]]
