"""Scenarios: named, parameterised runs on the APIC fabric.

:mod:`.options` declares what a run can vary and the request that carries it to the simulator,
:mod:`.bringup` holds the registry and the INIT-SIPI and mailbox scenarios, :mod:`.sev` the
SEV-ES ones, :mod:`.soc` the soft-SoC demo, :mod:`.report` turns a run into a timeline, a
summary, JSON (``report.schema.json``) and a picture, :mod:`.entry` is the cocotb module the
command line runs them in.
"""

# importing the package registers every scenario, in the order `apwake list` shows them
from . import bringup, mailbox, storm, sev, soc

__all__ = ["bringup", "mailbox", "storm", "sev", "soc"]
