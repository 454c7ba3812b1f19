"""Simulation-side view of :mod:`apwake.rtl.lapic`: design description, bus-functional model,
fabric monitor and a reference model of destination matching."""
