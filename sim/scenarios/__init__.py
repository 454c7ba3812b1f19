"""Scenarios: named, parameterised runs on the APIC fabric.

:mod:`.options` declares what a run can vary and the request that carries it to the simulator,
:mod:`.registry` holds the registry and the run, :mod:`.boot` what the families share, one
module per family registers its scenarios (:mod:`.bringup` INIT-SIPI, :mod:`.mailbox` the MP
wakeup mailbox, :mod:`.storm`, :mod:`.sev` SEV-ES, :mod:`.soc` the soft-SoC demo, whose cocotb
module is :mod:`.soc_entry`), :mod:`.report` turns a run into a timeline, a
summary, JSON (``report.schema.json``) and a picture, :mod:`.entry` is the cocotb module the
command line runs them in.
"""

# importing the package registers every scenario, in the order `apwake list` shows them
from . import bringup, mailbox, storm, sev, pvstart, tdx_host, soc

__all__ = ["bringup", "mailbox", "storm", "sev", "pvstart", "tdx_host", "soc"]
