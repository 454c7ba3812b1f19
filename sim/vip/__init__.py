"""Verification IP, one package per RTL block and named like its ``rtl/`` folder: the design a
testbench builds, drivers, monitors, reference models and scoreboards (:mod:`.lapic`,
:mod:`.mpwk_mailbox`, :mod:`.ghcb_msr`, :mod:`.soc`), and the guest memory the memory
responders serve (:mod:`.memory`).  Built on :mod:`apwake.sim.harness` and, for the SoC's
firmware image, :mod:`apwake.firmware`.
"""
