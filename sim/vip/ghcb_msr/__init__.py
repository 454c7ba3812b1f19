"""Simulation side of the GHCB MSR trap unit: designs, bus-functional models."""
