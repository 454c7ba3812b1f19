"""Marks the fabric's testbenches share (:func:`apwake.sim.harness.pytest_plugin.applies_to`)."""

from apwake.sim.harness.pytest_plugin import applies_to

__all__ = ["needs_x2apic"]

#: tests that use x2APIC mode, which an APIC built without it (x2apic_support=False) refuses
needs_x2apic = applies_to(lambda config: config.x2apic_support)
