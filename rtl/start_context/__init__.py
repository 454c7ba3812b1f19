"""The start-context unit: state-carrying AP start-up on the hypervisor's side (VMI
SetInitialAPState, a direct start with a context), docs/spec/lapic.md §7."""

from .unit import MAX_VCPUS, StartContextUnit

__all__ = ["StartContextUnit", "MAX_VCPUS"]
