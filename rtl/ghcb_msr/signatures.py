"""Typed interfaces of the GHCB MSR unit.

* :class:`VcpuPortSignature`, :class:`ApicEventsSignature`: the unit's ports to each vCPU and to
  its local APIC.
* :class:`VcpuControlSignature`: inside the unit, the exit dispatcher's commands to the vCPU it
  serves (:mod:`apwake.rtl.ghcb_msr.vcpu`).
* :class:`PageJobSignature`: inside the unit, one GHCB-page exchange handed by the dispatcher to
  the page engine (:mod:`apwake.rtl.ghcb_msr.page`).
* :class:`ApAcceptSignature`, :class:`VmsaJobSignature`: inside an SNP unit, an accepted AP
  Creation request from the page engine, and the dispatcher's jobs on the VMSA table
  (:mod:`apwake.rtl.ghcb_msr.ap_creation`).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import VMSA_GFN_BITS, HoldType, VcpuState

__all__ = ["VcpuPortSignature", "ApicEventsSignature", "VcpuControlSignature", "PageJobSignature",
           "ApAcceptSignature", "VmsaJobSignature"]


class VcpuPortSignature(wiring.Signature):
    """One vCPU's link to the unit, vCPU view.

    ``msr_write``/``msr_wdata``: WRMSR to the GHCB MSR; ``msr_rdata``: what RDMSR returns.
    ``vmgexit``: one-cycle strobe.  ``exit_done``: one-cycle pulse, the hypervisor resumes the
    vCPU after its VMGEXIT (never while it is held or after termination).  ``launch``: one-cycle
    pulse, the vCPU's first SIPI: it starts from its launch state (the vector is ignored).
    ``state``: KVM's mp_state for this vCPU.  ``irq_allowed``: the guest would take an
    interrupt now (RFLAGS.IF, KVM's ``interrupt_allowed``); a pending interrupt ends an AP reset
    hold only then, an NMI always.

    SEV-SNP AP Creation (docs/spec/ghcb.md §6; an SNP unit only, 0 otherwise): ``vmsa_launch``,
    one-cycle pulse: the vCPU starts from the VMSA a guest handed over with AP Creation, the page
    at guest-physical ``vmsa_gpa`` (valid in that cycle; page-aligned, below 4 GiB, never 2
    MiB-aligned).  The vCPU loads its whole register state from it, as VMRUN loads a VMSA.  An
    AP Creation that drops the vCPU's VMSA shows as ``state`` HALTED.
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
            "vmsa_launch": In(1),
            "vmsa_gpa": In(32),
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
    ``take_release`` (the queued page reply of a SIPI is being served); for an SNP unit
    ``vmsa_apply`` (the AP Creation reset is done: a new VMSA was installed when
    ``vmsa_installed``, else the vCPU has none) and ``vmsa_start`` (start from the installed
    VMSA now).  The vCPU shows its ``msr``, whether a ``release`` is queued, the GHCB page of its
    hold (``held_page``), and whether it waits for a VMSA job (``ap_job``: the reset, or with
    ``ap_launch`` the start) and has no VMSA (``no_vmsa``).

    Members (dispatcher view): ``load_msr`` Out(1), ``msr_value`` Out(64), ``finish`` Out(1),
    ``hold`` Out(1), ``hold_kind`` Out(HoldType), ``hold_page`` Out(32), ``stop`` Out(1),
    ``take_release`` Out(1), ``vmsa_apply`` Out(1), ``vmsa_installed`` Out(1), ``vmsa_start``
    Out(1), ``msr`` In(64), ``release`` In(1), ``held_page`` In(32), ``ap_job`` In(1),
    ``ap_launch`` In(1), ``no_vmsa`` In(1).
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
            "vmsa_apply": Out(1),
            "vmsa_installed": Out(1),
            "vmsa_start": Out(1),
            "msr": In(64),
            "release": In(1),
            "held_page": In(32),
            "ap_job": In(1),
            "ap_launch": In(1),
            "no_vmsa": In(1),
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


def _check_n_vcpus(n_vcpus):
    if not isinstance(n_vcpus, int) or isinstance(n_vcpus, bool) or n_vcpus < 1:
        raise ValueError(f"n_vcpus must be a positive int, not {n_vcpus!r}")


class ApAcceptSignature(wiring.Signature):
    """An AP Creation request the page engine accepted, engine view: in the one cycle of
    ``accept``, the target vCPU (``target``, and one-hot ``target_1h``), whether the request
    carries a VMSA (``vmsa_valid``: CREATE or CREATE_ON_INIT; DESTROY clears it) and its page
    frame ``gfn``, and whether the target is kicked at once (``kick``: not CREATE_ON_INIT).

    Members (engine view): ``accept`` Out(1), ``target`` Out(range(n)), ``target_1h`` Out(n),
    ``vmsa_valid`` Out(1), ``gfn`` Out(VMSA_GFN_BITS), ``kick`` Out(1).
    """

    def __init__(self, n_vcpus):
        _check_n_vcpus(n_vcpus)
        self.n_vcpus = n_vcpus
        super().__init__({
            "accept": Out(1),
            "target": Out(range(max(n_vcpus, 2))),
            "target_1h": Out(n_vcpus),
            "vmsa_valid": Out(1),
            "gfn": Out(VMSA_GFN_BITS),
            "kick": Out(1),
        })


class VmsaJobSignature(wiring.Signature):
    """One job on the VMSA table for the vCPU the dispatcher serves, dispatcher view.

    ``start`` (one cycle) with ``vcpu`` and ``launch``: low, the AP Creation reset (the pending
    GPA, if any, becomes the installed VMSA); high, the start (the installed VMSA's GPA goes to
    every vCPU port's ``vmsa_gpa``).  ``done`` pulses in the job's last cycle; ``installed`` says
    the reset found a VMSA to install.

    Members (dispatcher view): ``start`` Out(1), ``vcpu`` Out(range(n)), ``launch`` Out(1),
    ``done`` In(1), ``installed`` In(1).
    """

    def __init__(self, n_vcpus):
        _check_n_vcpus(n_vcpus)
        self.n_vcpus = n_vcpus
        super().__init__({
            "start": Out(1),
            "vcpu": Out(range(max(n_vcpus, 2))),
            "launch": Out(1),
            "done": In(1),
            "installed": In(1),
        })
