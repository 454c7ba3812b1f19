"""Verification IP, one package per RTL block and named like its ``rtl/`` folder: the design a
testbench builds, drivers, monitors, reference models and scoreboards (:mod:`.lapic`,
:mod:`.mpwk_mailbox`, :mod:`.ghcb_msr`, :mod:`.start_context`, :mod:`.soc`); the guest memory
(:mod:`.memory`) and the responder that serves it to a block's memory initiator
(:mod:`.memory_bus`), shared by the blocks' verification IP.  Built on :mod:`apwake.sim.harness`
and, for the SoC's firmware image, :mod:`apwake.firmware`.
"""
