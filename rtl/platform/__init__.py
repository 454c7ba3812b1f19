"""Simulation platforms joining blocks: the APIC fabric with the MP wakeup mailbox
(:mod:`.mpwk`) and with the GHCB MSR unit (:mod:`.sev`)."""

from .mpwk import X86Platform
from .sev import SevPlatform

__all__ = ["X86Platform", "SevPlatform"]
