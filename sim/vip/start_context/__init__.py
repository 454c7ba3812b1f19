"""Simulation side of the start-context unit: its design, bus-functional models and reference
model."""
