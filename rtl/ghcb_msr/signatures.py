"""Typed interfaces of the GHCB MSR unit.

* :class:`VcpuPortSignature`, :class:`ApicEventsSignature`: the unit's ports to each vCPU and to
  its local APIC.
* :class:`VcpuControlSignature`: inside the unit, the exit dispatcher's commands to the vCPU it
  serves (:mod:`apwake.rtl.ghcb_msr.vcpu`).
* :class:`PageJobSignature`: inside the unit, one GHCB-page exchange handed by the dispatcher to
  the page engine (:mod:`apwake.rtl.ghcb_msr.page`).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import HoldType, VcpuState

__all__ = ["VcpuPortSignature", "ApicEventsSignature", "VcpuControlSignature", "PageJobSignature"]


class VcpuPortSignature(wiring.Signature):
    """One vCPU's link to the unit, vCPU view.

    ``msr_write``/``msr_wdata``: WRMSR to the GHCB MSR; ``msr_rdata``: what RDMSR returns.
    ``vmgexit``: one-cycle strobe.  ``exit_done``: one-cycle pulse, the hypervisor resumes the
    vCPU after its VMGEXIT (never while it is held or after termination).  ``launch``: one-cycle
    pulse, the vCPU's first SIPI: it starts from its launch state (the vector is ignored).
    ``state``: KVM's mp_state for this vCPU.  ``irq_allowed``: the guest would take an
    interrupt now (RFLAGS.IF, KVM's ``interrupt_allowed``); a pending interrupt ends an AP reset
    hold only then, an NMI always.
    """

    def __init__(self):
        super().__init__({
            "msr_write": Out(1),
            "msr_wdata": Out(64),
            "msr_rdata": In(64),
            "vmgexit": Out(1),
            "irq_allowed": Out(1),
            "exit_done": In(1),
            "launch": In(1),
            "state": In(VcpuState),
        })


class ApicEventsSignature(wiring.Signature):
    """What the unit takes from one vCPU's local APIC, APIC view: INIT and SIPI as pending levels
    with acknowledges (as on :class:`apwake.rtl.lapic.signatures.CpuPortSignature`); ``nmi`` and
    ``intr`` are only looked at (a pending event releases an AP reset hold)."""

    def __init__(self):
        super().__init__({
            "init": Out(1),
            "init_ack": In(1),
            "sipi": Out(1),
            "sipi_vector": Out(8),
            "sipi_ack": In(1),
            "nmi": Out(1),
            "intr": Out(1),
        })


class VcpuControlSignature(wiring.Signature):
    """The dispatcher's hold on the vCPU it serves, dispatcher view.

    Commands (one-cycle, applied at the end of the cycle): ``load_msr`` (the MSR takes
    ``msr_value``), ``finish`` (the exit is done: resume the vCPU), ``hold`` (enter AP reset
    hold of ``hold_kind``; a page-form hold remembers ``hold_page``), ``stop`` (terminated),
    ``take_release`` (the queued page reply of a SIPI is being served).  The vCPU shows its
    ``msr``, whether a ``release`` is queued and the GHCB page of its hold (``held_page``).

    Members (dispatcher view): ``load_msr`` Out(1), ``msr_value`` Out(64), ``finish`` Out(1),
    ``hold`` Out(1), ``hold_kind`` Out(HoldType), ``hold_page`` Out(32), ``stop`` Out(1),
    ``take_release`` Out(1), ``msr`` In(64), ``release`` In(1), ``held_page`` In(32).
    """

    def __init__(self):
        super().__init__({
            "load_msr": Out(1),
            "msr_value": Out(64),
            "finish": Out(1),
            "hold": Out(1),
            "hold_kind": Out(HoldType),
            "hold_page": Out(32),
            "stop": Out(1),
            "take_release": Out(1),
            "msr": In(64),
            "release": In(1),
            "held_page": In(32),
        })


class PageJobSignature(wiring.Signature):
    """One GHCB-page exchange, dispatcher view.

    ``start`` (one cycle) hands over the page at ``gpa``: an exit to serve (``release`` low:
    the engine reads the request, answers it and writes the reply) or the SIPI release of a
    page-form hold (``release`` high: the engine writes SW_EXITINFO1 = 0, SW_EXITINFO2 = 1 and
    their valid bits).  ``done`` pulses in the engine's last cycle with the outcome: ``hold``
    (the request was AP_HLT_LOOP: enter a page-form hold of ``page``, the page served), or
    ``terminate`` with
    ``reason_set``/``reason_code`` (a termination request, nothing written), otherwise resume.

    Members (dispatcher view): ``start`` Out(1), ``gpa`` Out(32), ``release`` Out(1), ``done``
    In(1), ``hold`` In(1), ``page`` In(32), ``terminate`` In(1), ``reason_set`` In(4),
    ``reason_code`` In(8).
    """

    def __init__(self):
        super().__init__({
            "start": Out(1),
            "gpa": Out(32),
            "release": Out(1),
            "done": In(1),
            "hold": In(1),
            "page": In(32),
            "terminate": In(1),
            "reason_set": In(4),
            "reason_code": In(8),
        })
