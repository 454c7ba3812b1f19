"""apwake simulation side: build/run harness, bus-functional models, CPU models, command line.

Models and tests know the RTL only through its signatures (:mod:`rtl.lapic.signatures`) and
register layouts (:mod:`rtl.lapic.layouts`, :mod:`rtl.lapic.registers`).
"""
