"""The GHCB MSR trap unit (``../shared/spec/ghcb.md``)."""

from .unit import ApicEventsSignature, GhcbMsrUnit, VcpuPortSignature

__all__ = ["GhcbMsrUnit", "VcpuPortSignature", "ApicEventsSignature"]
