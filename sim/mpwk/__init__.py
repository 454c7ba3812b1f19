"""Simulation-side view of :mod:`rtl.mpwk_mailbox`: design, bus-functional models, MADT parsing."""
