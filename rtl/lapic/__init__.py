"""Local APICs and the ICR/IPI fabric (``docs/spec/lapic.md``)."""

from .fabric import ApicFabric, MAX_APICS
from .local_apic import LocalApic

__all__ = ["ApicFabric", "LocalApic", "MAX_APICS"]
