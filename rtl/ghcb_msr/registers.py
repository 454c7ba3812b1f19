"""The GHCB MSR as a register description (:mod:`apwake.rtl.lib.registers`), for the firmware
header and the docs.  The unit (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`) has no register window
of its own: each vCPU reaches its GHCB MSR by WRMSR/RDMSR (the soft-SoC through its MSR window)."""

from apwake.rtl.lib.registers import Access, Register, RegisterMap, fields_of
from .layouts import MSR_GHCB, GhcbMsr

__all__ = ["MSR_MAP"]

MSR_MAP = RegisterMap(
    "ghcb_msr", MSR_GHCB, 1, [
        Register("GHCB", 0, fields_of(GhcbMsr, Access.RW, docs={
            "info": "GHCBInfo: the MSR protocol request or response code (0: data is a GHCB page GPA)",
            "data": "GHCBData: the request's or response's data, or the page frame"}), width=64,
            doc="MSR_AMD64_SEV_ES_GHCB, per vCPU; VMGEXIT hands it to the hypervisor, which may rewrite it"),
    ],
    space="msr", prefix="MSR", source="docs/spec/ghcb.md §1",
    doc="The GHCB MSR (0xC001_0130) of the GHCB MSR protocol.")
