"""Proof harness of the GHCB MSR unit (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`).

The replies come from an independent reference written for the proof from the AMD GHCB
specification (publication 56421, §2.3.1 "GHCB MSR Protocol": the request and response codes
and their fields) and KVM ``arch/x86/kvm/svm/sev.c`` (``sev_handle_vmgexit_msr_protocol``: an
unknown code leaves the MSR unchanged; the SNP-only codes end an SEV-ES VM; the AP reset hold
and ``sev_vcpu_deliver_sipi_vector``'s "woken" reply).  The hold rules follow KVM
``arch/x86/kvm/x86.c`` (``kvm_vcpu_has_events``, ``vcpu_block``) and ``lapic.c``
(``kvm_apic_accept_events``: INIT, then SIPI only in INIT_RECEIVED).

The solver plays each vCPU (WRMSR of any 64-bit value, VMGEXIT, RFLAGS.IF) and its local APIC
(INIT and SIPI as pending levels held until acknowledged, NMI and INTR freely).  The guest does
not run while its exit is outstanding, and never hands a GHCB page (the page protocol is the
page engine's, outside this proof): every other value of the MSR is covered.
"""

from amaranth import Cat, Const, Module, Mux, Signal

from apwake.rtl.ghcb_msr import GhcbMsrUnit
from apwake.rtl.ghcb_msr.layouts import VcpuState
from apwake.sim.harness.formal import elaborate_once
from ..props import HarnessBase

__all__ = ["GhcbProof", "reference_reply", "N_VCPUS"]

N_VCPUS = 2
#: steps within which a served request is answered (round robin over the N_VCPUS vCPUs)
SERVICE_BOUND = 5      # measured: the cover ``cover_served_late`` reaches it
#: steps within which a hold ends "woken" once its APIC had an INIT and then a SIPI pending
WAKE_BOUND = 6         # measured: the cover ``cover_wake_late`` reaches it

# The request and response codes, from the GHCB specification's table (not from the RTL's enum).
_SEV_INFO_REQ, _SEV_INFO_RESP = 0x002, 0x001
_CPUID_REQ, _CPUID_RESP = 0x004, 0x005
_HOLD_REQ, _HOLD_RESP = 0x006, 0x007
_PREF_GPA_REQ, _PREF_GPA_RESP = 0x010, 0x011
_REG_GPA_REQ, _REG_GPA_RESP = 0x012, 0x013
_PSC_REQ, _PSC_RESP = 0x014, 0x015
_HV_FEATURES_REQ, _HV_FEATURES_RESP = 0x080, 0x081
_TERM_REQ = 0x100


def reference_reply(request, *, unit):
    """What the GHCB MSR holds after the hypervisor answers MSR-protocol ``request`` (an
    Amaranth value of 64 bits), for the VM ``unit`` describes (versions, C-bit, CPUID table,
    SNP, HV features).  Terminations and holds are not replies (see the harness)."""
    info, data = request[0:12], request[12:64]
    v2, snp = unit.max_version >= 2, unit.snp
    sev_info = (_SEV_INFO_RESP | unit.cbit << 24 | unit.min_version << 32 | unit.max_version << 48)
    function, register = request[32:64], request[30:32]
    cpuid = request          # a function the table lacks: unchanged (KVM: CPUID intercept failed)
    for fn, regs in unit.cpuid.items():
        eax, ebx, ecx, edx = (Const(r, 32) for r in regs)
        value = Mux(register == 0, eax, Mux(register == 1, ebx, Mux(register == 2, ecx, edx)))
        # GHCB spec: response [63:32] the value, [31:30] the register, [29:12] reserved 0
        cpuid = Mux(function == fn, Cat(Const(_CPUID_RESP, 12), Const(0, 18), register, value), cpuid)
    reply = request          # an unknown code (or a GHCB GPA of 0 or above 4 GiB): unchanged
    reply = Mux(info == _SEV_INFO_REQ, sev_info, reply)
    reply = Mux(info == _CPUID_REQ, cpuid, reply)
    if v2:
        reply = Mux(info == _HV_FEATURES_REQ, _HV_FEATURES_RESP | unit.hv_features << 12, reply)
        if snp:
            reply = Mux(info == _PREF_GPA_REQ, _PREF_GPA_RESP | ((1 << 52) - 1) << 12, reply)
            reply = Mux(info == _REG_GPA_REQ, Cat(Const(_REG_GPA_RESP, 12), data), reply)
            reply = Mux(info == _PSC_REQ, _PSC_RESP, reply)
    return reply


class GhcbProof(HarnessBase):
    """The GHCB MSR unit with its properties, for ``N_VCPUS`` vCPUs (vCPU 0 the BSP).

    Properties per vCPU ``i`` (``Assert``; each has a ``Cover``):

    * ``ghcb_reply_vcpu<i>``: an exit answered in the MSR resumes with exactly
      :func:`reference_reply` of the request (every 64-bit request value, every code);
    * ``ghcb_term_vcpu<i>``: a vCPU stops only on a termination request (0x100, or an SNP-only
      code on an SEV-ES VM), and a stopped vCPU never runs again; the unit records the first
      termination's vCPU, reason set and code;
    * ``ghcb_served_vcpu<i>``: every request but a hold or a termination is answered within
      ``SERVICE_BOUND`` steps (round robin: no vCPU starves);
    * ``ghcb_hold_exit_vcpu<i>``: a vCPU leaves AP_RESET_HOLD only through INIT (to
      INIT_RECEIVED; the BSP to RUNNABLE), an NMI, or an interrupt it would take, and leaves
      INIT_RECEIVED only through SIPI;
    * ``ghcb_hold_reply_vcpu<i>``: a hold (0x006) ends with 0x1007 ("woken") exactly when an
      INIT and then a SIPI ended it, else 0x007;
    * ``ghcb_no_lost_wake_vcpu<i>`` (APs): once the APIC has had an INIT and then a SIPI
      pending after the hold request (no NMI or interrupt meanwhile), the vCPU resumes within
      ``WAKE_BOUND`` steps, whatever the order of the INIT, the SIPI and the queued request
      (and with "woken": ``ghcb_hold_reply``).

    Parameters
    ----------
    snp : bool
        An SEV-SNP VM (0x010/0x012/0x014 answered) or SEV-ES (they terminate).
    max_version : int
        1 or 2: version-2 codes are unknown to a version-1 hypervisor.
    defect : str or None
        ``"init_while_queued"``: INIT is taken while the vCPU's hold request is still queued
        (statements added to the elaborated ``VcpuControl``), the lost wake-up this project's
        review found.
    """

    DEFECTS = {"init_while_queued": "INIT is taken while a hold request is queued (the wake-up lost "
                                    "in review)"}

    def __init__(self, *, snp=False, max_version=2, defect=None):
        super().__init__(defect=defect)
        self.dut = GhcbMsrUnit(n_vcpus=N_VCPUS, snp=snp, max_version=max_version)
        for i in range(N_VCPUS):
            for name in ("msr_write", "msr_wdata", "vmgexit", "irq_allowed"):
                self.free(getattr(self.dut.vcpu[i], name))
            for name in ("init", "sipi", "sipi_vector", "nmi", "intr"):
                self.free(getattr(self.dut.apic[i], name))
        for name in ("req_ready", "resp_valid", "rdata"):
            self.free(getattr(self.dut.memory, name))

    def elaborate(self, platform):
        m = Module()
        dut, unit = self.dut, self.dut
        top = elaborate_once(dut, platform)
        m.submodules.unit = dut
        if self.defect == "init_while_queued":
            for i in range(1, N_VCPUS):
                vcpu = elaborate_once(top.submodule(f"vcpu{i}"), platform)
                vm, apic = vcpu.module, top.submodule(f"vcpu{i}").apic
                with vm.If(vcpu["exit_pending"] & ~top.submodule(f"vcpu{i}").serving & apic.init
                           & (vcpu["state"] == VcpuState.RUNNABLE)):
                    vm.d.comb += apic.init_ack.eq(1)
                    vm.d.sync += vcpu["state"].eq(VcpuState.INIT_RECEIVED)
        started = self.begin(m)
        v2, snp = unit.max_version >= 2, unit.snp
        term_codes = [_TERM_REQ] + ([_PREF_GPA_REQ, _REG_GPA_REQ, _PSC_REQ] if v2 and not snp else [])
        was_term_valid = self.past(dut.term.valid, "term_valid")
        for i in range(N_VCPUS):
            port, apic = dut.vcpu[i], dut.apic[i]
            state = port.state
            # --- the vCPU and its APIC as the environment ------------------------------------
            out = Signal(name=f"out{i}")                   # an exit is outstanding
            req = Signal(64, name=f"req{i}")               # its request
            self.watch(out, req, port.msr_rdata, port.exit_done, port.launch, state, apic.init,
                       apic.sipi, apic.init_ack, apic.sipi_ack, apic.nmi, apic.intr)
            running = (state == VcpuState.RUNNABLE) & ~out
            self.assume(f"guest_runs_only_when_running{i}", (~port.vmgexit & ~port.msr_write) | running)
            self.assume(f"wrmsr_then_vmgexit{i}", ~(port.vmgexit & port.msr_write))
            value = port.msr_rdata
            page = (value[0:12] == 0) & (value[12:32] != 0) & (value[32:64] == 0)
            self.assume(f"no_ghcb_page{i}", ~port.vmgexit | ~page)
            was_init, was_init_ack = self.past(apic.init, f"init{i}"), self.past(apic.init_ack, f"init_ack{i}")
            was_sipi, was_sipi_ack = self.past(apic.sipi, f"sipi{i}"), self.past(apic.sipi_ack, f"sipi_ack{i}")
            self.assume(f"apic_init_held{i}", ~started | ~was_init | was_init_ack | apic.init)
            self.assume(f"apic_sipi_held{i}", ~started | ~was_sipi | was_sipi_ack | apic.sipi
                        | (apic.init & ~was_init))
            # a newly accepted INIT (pending again after its acknowledge, or rising) clears a
            # pending SIPI (KVM kvm_apic_accept_events; one fabric message a cycle)
            new_init = apic.init & (~was_init | was_init_ack) & started
            self.assume(f"apic_init_clears_sipi{i}", ~new_init | ~apic.sipi)
            resumed = port.exit_done | port.launch
            with m.If(port.vmgexit):
                m.d.sync += [out.eq(1), req.eq(value)]
            with m.Elif(resumed | (state == VcpuState.STOPPED)):
                m.d.sync += out.eq(0)
            info = req[0:12]
            is_hold = (info == _HOLD_REQ) if v2 else Const(0)
            is_term = Cat(*(info == code for code in term_codes)).any()
            # --- the reply ---------------------------------------------------------------------
            self.prove(f"ghcb_reply_vcpu{i}", ~(port.exit_done & out & ~is_hold)
                       | (port.msr_rdata == reference_reply(req, unit=unit)))
            self.cover(f"cover_reply_vcpu{i}", port.exit_done & out & ~is_hold & (info != 0))
            self.cover(f"cover_cpuid_vcpu{i}", port.exit_done & out & (info == _CPUID_REQ)
                       & (port.msr_rdata[0:12] == _CPUID_RESP))
            # --- termination -------------------------------------------------------------------
            was_state = self.past(state, f"state{i}")
            was_out, was_req = self.past(out, f"out{i}"), self.past(req, f"req{i}")
            was_is_term = Cat(*(was_req[0:12] == code for code in term_codes)).any()
            stops = (was_state != VcpuState.STOPPED) & (state == VcpuState.STOPPED)
            recorded = (dut.term.vcpu == i) & (dut.term.code == was_req[0:12]) & Mux(
                was_req[0:12] == _TERM_REQ, (dut.term.reason_set == was_req[12:16])
                & (dut.term.reason_code == was_req[16:24]), 1)
            self.prove(f"ghcb_term_vcpu{i}", (~stops | (was_out & was_is_term & (was_term_valid | recorded)))
                       & ((was_state != VcpuState.STOPPED) | ((state == VcpuState.STOPPED) & ~port.exit_done)))
            self.cover(f"cover_term_vcpu{i}", stops)
            # --- bounded service ---------------------------------------------------------------
            waited = Signal(range(SERVICE_BOUND + 2), name=f"waited{i}")
            with m.If(out & ~is_hold & ~is_term & (state == VcpuState.RUNNABLE) & ~port.exit_done):
                m.d.sync += waited.eq(Mux(waited == SERVICE_BOUND + 1, waited, waited + 1))
            with m.Else():
                m.d.sync += waited.eq(0)
            self.prove(f"ghcb_served_vcpu{i}", waited <= SERVICE_BOUND)
            self.cover(f"cover_served_late_vcpu{i}", waited == SERVICE_BOUND)
            # --- AP reset hold: how it ends ----------------------------------------------------
            was_nmi, was_intr = self.past(apic.nmi, f"nmi{i}"), self.past(apic.intr & port.irq_allowed, f"irq{i}")
            init_exit = VcpuState.RUNNABLE if i == unit.bsp_index else VcpuState.INIT_RECEIVED
            leaves_hold = (was_state == VcpuState.AP_RESET_HOLD) & (state != VcpuState.AP_RESET_HOLD)
            leaves_init = (was_state == VcpuState.INIT_RECEIVED) & (state == VcpuState.RUNNABLE)
            self.prove(f"ghcb_hold_exit_vcpu{i}",
                       (~leaves_hold | (was_init & was_init_ack & (state == init_exit)) | was_nmi | was_intr)
                       & (~leaves_init | (was_sipi & was_sipi_ack)))
            if v2:                   # a version-1 hypervisor has no MSR-form hold
                self.cover(f"cover_hold_vcpu{i}", (state == VcpuState.AP_RESET_HOLD) & out)
                self.cover(f"cover_hold_left_by_event_vcpu{i}", leaves_hold & (was_nmi | was_intr))
            # --- the hold's reply, and no lost wake-up -----------------------------------------
            init_taken = Signal(name=f"init_taken{i}")     # INIT taken since the hold request
            woken = Signal(name=f"woken{i}")               # ... and then SIPI taken
            event = Signal(name=f"event{i}")               # an NMI or interrupt since the request
            init_sent = Signal(name=f"init_sent{i}")       # the APIC had INIT pending since it
            sipi_sent = Signal(name=f"sipi_sent{i}")       # ... and then SIPI
            due = Signal(range(WAKE_BOUND + 2), name=f"due{i}")   # steps since, unanswered
            with m.If(port.vmgexit):
                m.d.sync += [init_taken.eq(0), woken.eq(0), event.eq(0), init_sent.eq(0),
                             sipi_sent.eq(0), due.eq(0)]
            with m.Else():
                with m.If(out & apic.init & apic.init_ack):
                    m.d.sync += init_taken.eq(1)
                with m.If(out & init_taken & apic.sipi & apic.sipi_ack & (state == VcpuState.INIT_RECEIVED)):
                    m.d.sync += woken.eq(1)
                with m.If(out & (apic.nmi | (apic.intr & port.irq_allowed))):
                    m.d.sync += event.eq(1)
                with m.If(out & apic.init):
                    m.d.sync += init_sent.eq(1)
                with m.If(out & init_sent & apic.sipi):
                    m.d.sync += sipi_sent.eq(1)
                with m.If(out & new_init):
                    m.d.sync += [sipi_sent.eq(0), due.eq(0)]     # a new INIT starts over
                with m.Elif(out & sipi_sent & ~port.exit_done & (due != WAKE_BOUND + 1)):
                    m.d.sync += due.eq(due + 1)
            self.watch(init_taken, woken, event, init_sent, sipi_sent, due)
            if v2:
                self.prove(f"ghcb_hold_reply_vcpu{i}", ~(port.exit_done & out & is_hold)
                           | (port.msr_rdata == Mux(woken, 0x1007, 0x007)))
                if i != unit.bsp_index:
                    self.cover(f"cover_hold_woken_vcpu{i}", port.exit_done & out & is_hold & woken)
                    self.prove(f"ghcb_no_lost_wake_vcpu{i}", ~(out & is_hold & ~event) | (due <= WAKE_BOUND))
                    self.cover(f"cover_wake_late_vcpu{i}", out & is_hold & ~event & (due == WAKE_BOUND))
                    self.cover(f"cover_init_before_hold_vcpu{i}", out & is_hold & init_taken
                               & (state == VcpuState.INIT_RECEIVED) & apic.sipi)
        return m
