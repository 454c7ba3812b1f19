"""Simulation-side view of :mod:`apwake.rtl.mpwk_mailbox`: design, bus-functional models, MADT parsing."""
