"""Simulation systems joining blocks: the APIC fabric with the MP wakeup mailbox
(:mod:`.mpwk`) and with the GHCB MSR unit (:mod:`.sev`)."""

from .mpwk import MpwkSystem
from .sev import SevSystem

__all__ = ["MpwkSystem", "SevSystem"]
