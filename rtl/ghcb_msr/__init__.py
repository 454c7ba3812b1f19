"""The GHCB MSR trap unit (``docs/spec/ghcb.md``)."""

from .unit import ApicEventsSignature, GhcbMsrUnit, VcpuPortSignature, connect_apic_events

__all__ = ["GhcbMsrUnit", "VcpuPortSignature", "ApicEventsSignature", "connect_apic_events"]
