"""Bring-up scenarios: named, parameterised runs of the CPU models on the APIC fabric.

:mod:`.bringup` defines them, :mod:`.report` turns a run into a timeline, a summary, JSON and a
picture, :mod:`.entry` is the cocotb module the command line runs them in.
"""

# importing the package registers every scenario: INIT-SIPI and mailbox ones in .bringup,
# SEV-ES ones in .sev
from . import bringup, sev

__all__ = ["bringup", "sev"]
