"""The GHCB MSR unit's exit dispatcher: picks the next vCPU exit and answers the GHCB MSR
protocol (docs/spec/ghcb.md §1, §4, §6, §7)."""

from amaranth import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.priority import RoundRobinArbiter
from .layouts import (GFN_NONE, CpuidRequest, GhcbMsr, HoldType, MsrCode, TermReason, Termination,
                      layout_bits, layout_cat)
from .signatures import PageJobSignature, VcpuControlSignature, VmsaJobSignature

__all__ = ["ExitDispatch"]


class ExitDispatch(wiring.Component):
    """Serves one vCPU exit at a time.

    * **Arbitration.**  While idle, a round-robin arbiter picks one of ``requests`` (an exit of
      a running vCPU, a queued SIPI release, or an SNP VMSA job); ``busy`` and ``sel`` name the
      vCPU served until the dispatcher is idle again with nothing to pick.
    * **Dispatch**, one cycle later, on the served vCPU's ``control``: a queued release goes to
      the page engine (``page``) with the vCPU's hold page.  A VMSA job (SNP AP Creation, §6)
      goes to the VMSA table (``vmsa``): the reset's (``vmsa_apply`` with what it installed)
      or the start's (``vmsa_start``); a start of a vCPU with no VMSA ends the VM instead
      (``term.no_vmsa``: KVM's ``pre_sev_run`` refuses the VMRUN, KVM_RUN fails).  Otherwise
      the MSR's GHCBInfo (bits 11:0) decides (§1):

      - 0x000 GHCB GPA: a page address below 4 GiB goes to the page engine; 0 or an address
        at or above 4 GiB (unmappable) resumes the vCPU with nothing written;
      - 0x002 SEV information: the MSR takes ``sev_info`` (0x001: versions and C-bit);
      - 0x004 CPUID: the MSR takes 0x005 with the requested register of a function in
        ``cpuid``; an unknown function leaves the MSR unchanged;
      - 0x100 termination: the vCPU stops (reason set [15:12], code [23:16]);
      - version 2 only: 0x006 AP reset hold (MSR 0x007 "not woken", then an MSR-protocol
        hold); 0x080 HV features (0x081 with ``hv_features``); 0x010/0x012/0x014 on an SNP VM
        (0x011 with no preferred GPA, 0x013 echoing the GFN, 0x015 error 0), on an SEV-ES VM
        termination with the request code;
      - any other code: the MSR is unchanged and the vCPU resumed.

      A request answered in the MSR resumes the vCPU (``control.finish``) at once; the page
      engine's outcome (``page.done``) resumes it, enters a page-form hold or stops it.
    * **Termination** records the first one on ``term`` (vCPU, reason, request code; 0 for the
      page form).

    Parameters
    ----------
    n_vcpus : int
    sev_info : int
        The SEV information response.
    cpuid : dict
        ``{function: (eax, ebx, ecx, edx)}``.
    v2 : bool
        Serve the version-2 codes.
    snp : bool
        An SEV-SNP VM.
    hv_features : int

    Attributes
    ----------
    requests : In(n_vcpus)
    busy : Out(1)
    sel : Out(range(n_vcpus))
        The vCPU served.
    control : Out(VcpuControlSignature)
        To and from the served vCPU.
    page : Out(PageJobSignature)
        To the page engine.
    vmsa : Out(VmsaJobSignature)
        To the VMSA table (an SNP unit; never started otherwise).
    term : Out(TermReason)
    """

    def __init__(self, *, n_vcpus, sev_info, cpuid, v2, snp, hv_features):
        self.n_vcpus, self.sev_info, self.cpuid = n_vcpus, sev_info, cpuid
        self.v2, self.snp, self.hv_features = v2, snp, hv_features
        super().__init__({
            "requests": In(n_vcpus),
            "busy": Out(1),
            "sel": Out(range(max(n_vcpus, 2))),
            "control": Out(VcpuControlSignature()),
            "page": Out(PageJobSignature()),
            "vmsa": Out(VmsaJobSignature(n_vcpus)),
            "term": Out(TermReason),
        })

    def elaborate(self, platform):
        m = Module()
        busy, sel, control, page, term = self.busy, self.sel, self.control, self.page, self.term

        m.submodules.arbiter = arbiter = RoundRobinArbiter(self.n_vcpus)
        m.d.comb += arbiter.requests.eq(Mux(busy, 0, self.requests))

        value = Signal(64)
        m.d.comb += value.eq(control.msr)
        info, data = value[0:12], value[12:64]
        m.d.comb += [control.hold_page.eq(page.page), page.gpa.eq(Mux(control.release, control.held_page,
                                                                        value[0:32]))]

        def load_msr(new):
            m.d.comb += [control.load_msr.eq(1), control.msr_value.eq(new)]

        def terminate(reason_set, reason_code, code, no_vmsa=0):
            m.d.comb += control.stop.eq(1)
            with m.If(~term.valid):
                m.d.sync += [term.valid.eq(1), term.vcpu.eq(sel), term.reason_set.eq(reason_set),
                             term.reason_code.eq(reason_code), term.code.eq(code),
                             term.no_vmsa.eq(no_vmsa)]
            m.next = "IDLE"

        vmsa = self.vmsa
        if self.snp:
            m.d.comb += [vmsa.vcpu.eq(sel), vmsa.launch.eq(control.ap_launch)]

        def finish_exit():
            m.d.comb += control.finish.eq(1)
            m.next = "IDLE"

        def enter_hold(kind):
            m.d.comb += [control.hold.eq(1), control.hold_kind.eq(kind)]
            m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(arbiter.valid):
                    m.d.sync += [busy.eq(1), sel.eq(arbiter.grant_index)]
                    m.next = "DISPATCH"
                with m.Else():
                    m.d.sync += busy.eq(0)

            with m.State("DISPATCH"):
                with m.If(control.release):
                    m.d.comb += [control.take_release.eq(1), page.start.eq(1), page.release.eq(1)]
                    m.next = "PAGE"
                if self.snp:
                    with m.Elif(control.ap_job):
                        with m.If(control.ap_launch & control.no_vmsa):
                            terminate(0, 0, 0, no_vmsa=1)    # RUNNABLE without a VMSA: KVM_RUN fails
                        with m.Else():
                            m.d.comb += vmsa.start.eq(1)
                            m.next = "VMSA"
                with m.Elif(info == MsrCode.GHCB_GPA):
                    with m.If((data == 0) | (value[32:64] != 0)):
                        finish_exit()            # no GHCB, or unmappable: resumed, nothing written
                    with m.Else():
                        m.d.comb += page.start.eq(1)
                        m.next = "PAGE"
                with m.Elif(info == MsrCode.SEV_INFO_REQ):
                    load_msr(self.sev_info)
                    finish_exit()
                with m.Elif(info == MsrCode.CPUID_REQ):
                    request = CpuidRequest(value)
                    function, register = request.value, request.register
                    for fn, regs in self.cpuid.items():
                        with m.If(function == fn):
                            answer = Array(Const(r, 32) for r in regs)[register]
                            load_msr(layout_cat(CpuidRequest, info=MsrCode.CPUID_RESP,
                                                register=register, value=answer))
                    finish_exit()                # unknown function: MSR unchanged
                with m.Elif(info == MsrCode.TERM_REQ):
                    request = Termination(value)
                    terminate(request.reason_set, request.reason_code, MsrCode.TERM_REQ.value)
                if self.v2:
                    with m.Elif(info == MsrCode.AP_RESET_HOLD_REQ):
                        load_msr(MsrCode.AP_RESET_HOLD_RESP.value)          # "not woken"
                        enter_hold(HoldType.MSR_PROTO)
                    with m.Elif(info == MsrCode.HV_FEATURES_REQ):
                        load_msr(layout_bits(GhcbMsr, info=MsrCode.HV_FEATURES_RESP,
                                             data=self.hv_features))
                        finish_exit()
                    with m.Elif((info == MsrCode.PREF_GPA_REQ) | (info == MsrCode.REG_GPA_REQ)
                                | (info == MsrCode.PSC_REQ)):
                        if self.snp:
                            with m.If(info == MsrCode.PREF_GPA_REQ):
                                load_msr(layout_bits(GhcbMsr, info=MsrCode.PREF_GPA_RESP, data=GFN_NONE))
                            with m.Elif(info == MsrCode.REG_GPA_REQ):
                                load_msr(layout_cat(GhcbMsr, info=MsrCode.REG_GPA_RESP,
                                                    data=data))      # the GFN echoed
                            with m.Else():
                                load_msr(MsrCode.PSC_RESP.value)     # error 0
                            finish_exit()
                        else:
                            # SNP-only request from an SEV-ES VM: KVM ends the VM (its exit
                            # carries the raw MSR; here the request code, no reason)
                            terminate(0, 0, info)
                with m.Else():
                    finish_exit()                # unknown code: MSR unchanged, guest resumed

            if self.snp:
                with m.State("VMSA"):
                    with m.If(vmsa.done):
                        with m.If(control.ap_launch):
                            m.d.comb += control.vmsa_start.eq(1)
                        with m.Else():
                            m.d.comb += [control.vmsa_apply.eq(1),
                                         control.vmsa_installed.eq(vmsa.installed)]
                        m.next = "IDLE"

            with m.State("PAGE"):
                with m.If(page.done):
                    with m.If(page.terminate):
                        terminate(page.reason_set, page.reason_code, 0)
                    with m.Elif(page.hold):
                        enter_hold(HoldType.NAE_EVENT)
                    with m.Else():
                        finish_exit()
        return m
