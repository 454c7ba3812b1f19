"""Typed interfaces of the start-context unit.

* :class:`StartCallSignature`: the guest's calls (VMI SetInitialAPState, a direct start, the
  paravirtual switch), caller view.
* :class:`LaunchSignature`: the launch records the unit emits, one per SIPI it takes and per
  START, source view (a stream: the sink may stall).
* :class:`SipiEventsSignature`: one vCPU's INIT and SIPI as its local APIC and CPU give them, APIC
  view.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import LaunchKind, StartOp, StartState, StartStatus, StateField

__all__ = ["StartCallSignature", "LaunchSignature", "SipiEventsSignature"]


class StartCallSignature(wiring.Signature):
    """One call at a time, caller view.

    The call is taken in the cycle ``valid`` and ``ready`` are both high (``ready`` is low while
    the unit is busy); ``op``, ``address`` and ``apic_id`` need only be valid then.  ``done``
    pulses for one cycle when it completes; ``status`` and ``field`` are valid in that cycle and
    held until the next call completes.

    Members (caller view): ``valid`` Out(1), ``ready`` In(1), ``op`` Out(:class:`StartOp`),
    ``address`` Out(32) (guest-physical address of the ``struct vmi_ap_state``), ``apic_id``
    Out(32) (the target), ``done`` In(1), ``status`` In(:class:`StartStatus`), ``field``
    In(:class:`StateField`).
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "ready": In(1),
            "op": Out(StartOp),
            "address": Out(32),
            "apic_id": Out(32),
            "done": In(1),
            "status": In(StartStatus),
            "field": In(StateField),
        })


class LaunchSignature(wiring.Signature):
    """Launch records, source (unit) view: a stream, the payload stable while ``valid`` and not
    ``ready``; a record is taken in the cycle both are high.

    Members (source view): ``valid`` Out(1), ``ready`` In(1), ``vcpu`` Out(12) (port index),
    ``kind`` Out(:class:`LaunchKind`), ``vector`` Out(8) (the SIPI's; 0 for a START),
    ``via_sipi`` Out(1) (1: a SIPI caused it; 0: a START call), ``state``
    Out(:class:`StartState`) (the carried state for CONTEXT, all 0 otherwise).
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "ready": In(1),
            "vcpu": Out(12),
            "kind": Out(LaunchKind),
            "vector": Out(8),
            "via_sipi": Out(1),
            "state": Out(StartState),
        })


class SipiEventsSignature(wiring.Signature):
    """One vCPU's INIT and SIPI, APIC view.

    ``init_taken`` pulses for one cycle when the CPU takes an INIT from its APIC (an AP then waits
    for SIPI).  ``sipi`` is the APIC's pending SIPI (a level) with ``sipi_vector``; the unit takes
    it with a one-cycle ``sipi_ack``.

    Members (APIC view): ``init_taken`` Out(1), ``sipi`` Out(1), ``sipi_vector`` Out(8),
    ``sipi_ack`` In(1).
    """

    def __init__(self):
        super().__init__({
            "init_taken": Out(1),
            "sipi": Out(1),
            "sipi_vector": Out(8),
            "sipi_ack": In(1),
        })
