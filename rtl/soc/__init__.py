"""The soft-SoC: PicoRV32 cores with the local APIC fabric (issue 6)."""

from .soc import Soc

__all__ = ["Soc"]
