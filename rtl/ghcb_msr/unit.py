"""The GHCB MSR trap unit: the hypervisor's side of the GHCB MSR protocol, AP reset hold and the
AP jump table, in hardware (docs/spec/ghcb.md §1-§4, §7).

One unit serves every vCPU of a VM.  Each vCPU writes its GHCB MSR (0xC001_0130) and strobes
VMGEXIT; the unit answers by rewriting the MSR (MSR protocol) or by reading and writing the GHCB
page in guest memory through its memory port (page protocol), then pulses ``exit_done`` (the
next VMRUN).  It also takes the APIC fabric's INIT and SIPI for its vCPUs, as KVM does for SEV-ES
guests (``kvm_apic_accept_events`` + ``sev_vcpu_deliver_sipi_vector``), because the hypervisor
cannot load register state: a first SIPI starts a vCPU from its launch state (``launch``), a
later one only releases an AP reset hold.
"""

import enum

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature, access_states
from apwake.rtl.lib.priority import RoundRobinArbiter
from .layouts import (GFN_NONE, GHCB_OFFSETS, HV_FEATURES, PROTOCOL_MAX, PROTOCOL_MIN, VALID_BIT,
                      HoldType, HvResponse, JumpTableOp, MalformedReason, MsrCode, NaeExit,
                      TermReason, VcpuState, CpuidRequest, GhcbMsr, HoldReply, SevInfo,
                      Termination)

__all__ = ["GhcbMsrUnit", "VcpuPortSignature", "ApicEventsSignature", "default_cpuid",
           "connect_apic_events"]


def default_cpuid(cbit):
    """A small CPUID table: leaf 0 (AuthenticAMD) and 0x8000_001F (SME, SEV, SEV-ES; C-bit)."""
    return {0x0000_0000: (0x0000_0010, 0x6874_7541, 0x444D_4163, 0x6974_6E65),
            0x8000_001F: (0x0000_000B, cbit | 1 << 6, 0x0000_0001, 0x0000_0000)}


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


def _bits(layout, **fields):
    """The integer of a constant ``layout`` value (a reset value, a fixed reply)."""
    return data.Layout.cast(layout).const(fields).as_bits()


def _cat(layout, **fields):
    """A value of ``layout`` built from ``fields`` (values or constants; others 0) without a
    signal, so constant fields stay constants in the Verilog."""
    parts = []
    for name, field in sorted(data.Layout.cast(layout), key=lambda item: item[1].offset):
        value = fields.get(name, 0)
        value = value.value if isinstance(value, enum.Enum) else value
        parts.append(Const(value, field.width) if isinstance(value, int) else value[:field.width])
    return Cat(*parts)


def connect_apic_events(m, apic, events):
    """Give the unit's ``events`` (an :class:`ApicEventsSignature` port) one APIC's CPU-port
    lines (:class:`apwake.rtl.lapic.signatures.CpuPortSignature`): the unit sees INIT, SIPI, NMI and
    INTR and acknowledges INIT and SIPI itself, as KVM does for SEV-ES guests."""
    m.d.comb += [events.init.eq(apic.init), events.sipi.eq(apic.sipi),
                 events.sipi_vector.eq(apic.sipi_vector), events.nmi.eq(apic.nmi),
                 events.intr.eq(apic.intr),
                 apic.init_ack.eq(events.init_ack), apic.sipi_ack.eq(events.sipi_ack)]


class GhcbMsrUnit(wiring.Component):
    """Parameters
    ----------
    n_vcpus : int
        1 to 64.
    bsp_index : int
        The vCPU that runs at creation; the others start UNINITIALIZED.
    min_version, max_version : int
        The protocol range the hypervisor offers in the SEV information response.  With
        ``max_version = 1`` the version-2 codes (MSR AP reset hold 0x006, HV features 0x080,
        GPA and PSC requests, the NAE HV-features and termination exits) are unknown to the unit:
        an MSR request is left unchanged and an NAE exit gets (2, 6), as a version-1-only
        hypervisor (KVM before SNP) behaves.  With 2 they are served whatever the guest
        negotiated: KVM keeps no per-VM negotiated version (§7).
    cbit : int
        C-bit position reported in the SEV information response (CPUID 0x8000_001F EBX[5:0]).
    cpuid : dict or None
        ``{function: (eax, ebx, ecx, edx)}`` served by 0x004; a function not in it leaves the MSR
        unchanged (§7).  Default :func:`default_cpuid`.
    snp : bool
        An SEV-SNP VM: 0x010/0x012/0x014 are answered.  Otherwise (SEV-ES) they terminate the
        vCPU, as KVM does.
    hv_features : int
        The bitmap answered by 0x080 and NAE 0x8000_FFFD (KVM: SNP | AP creation = 0x3).

    Ports
    -----
    vcpu : array of :class:`VcpuPortSignature` (flipped)
    apic : array of :class:`ApicEventsSignature` (flipped)
    memory : :class:`apwake.rtl.lib.bus.MemoryBusSignature`, initiator: GHCB page reads and reply writes.
        The bus is 32-bit: a GHCB GPA at or above 4 GiB is "unmappable" (resumed, nothing
        written, §7).
    term : :class:`TermReason`, the first termination: vCPU, reason set and code, and the
        request code that caused it (0x100, or an SNP-only code on an SEV-ES VM; 0 for NAE).

    Behaviour choices (docs/spec/ghcb.md §7, all tested in ``cocotb_tests/ghcb_msr``): any code at any
    time (no negotiation gate, as KVM); hold with an interrupt or NMI pending is not entered and
    answers "not woken" at once; INIT while held keeps the hold type; SIPI outside INIT_RECEIVED
    is dropped; the page-form reply at SIPI writes SW_EXITINFO1 = 0, SW_EXITINFO2 = 1 and their
    valid bits (KVM's later RAX-RDX write-back at VMRUN is not modelled).
    """

    def __init__(self, *, n_vcpus, bsp_index=0, min_version=PROTOCOL_MIN,
                 max_version=PROTOCOL_MAX, cbit=51, cpuid=None, snp=False,
                 hv_features=HV_FEATURES["snp"] | HV_FEATURES["snp_ap_creation"]):
        if not isinstance(n_vcpus, int) or not 1 <= n_vcpus <= 64:
            raise ValueError(f"n_vcpus must be 1 to 64, not {n_vcpus!r}")
        if not isinstance(bsp_index, int) or not 0 <= bsp_index < n_vcpus:
            raise ValueError(f"bsp_index must be 0 to {n_vcpus - 1}, not {bsp_index!r}")
        for name, value in (("min_version", min_version), ("max_version", max_version)):
            if not isinstance(value, int) or not 1 <= value < 1 << 16:
                raise ValueError(f"{name} must be 1 to 65535, not {value!r}")
        if min_version > max_version:
            raise ValueError(f"min_version {min_version} is above max_version {max_version}")
        if not isinstance(cbit, int) or not 32 <= cbit < 64:
            raise ValueError(f"cbit must be a physical address bit 32 to 63, not {cbit!r}")
        if snp and max_version < 2:
            raise ValueError(f"an SNP VM needs max_version 2 or more (its codes are version 2), "
                             f"not {max_version}")
        cpuid = default_cpuid(cbit) if cpuid is None else dict(cpuid)
        for function, values in cpuid.items():
            if (not isinstance(function, int) or not 0 <= function < 1 << 32 or len(values) != 4
                    or not all(isinstance(v, int) and 0 <= v < 1 << 32 for v in values)):
                raise ValueError(f"cpuid[{function!r}] must map a 32-bit function to four "
                                 f"32-bit values, not {values!r}")
        if not isinstance(hv_features, int) or not 0 <= hv_features < 1 << 52:
            raise ValueError(f"hv_features must fit 52 bits, not {hv_features!r}")
        self.n_vcpus, self.bsp_index = n_vcpus, bsp_index
        self.min_version, self.max_version, self.cbit = min_version, max_version, cbit
        self.cpuid, self.snp, self.hv_features = cpuid, bool(snp), hv_features
        super().__init__({
            "vcpu": In(VcpuPortSignature()).array(n_vcpus),
            "apic": In(ApicEventsSignature()).array(n_vcpus),
            "memory": Out(MemoryBusSignature()),
            "term": Out(TermReason),
        })

    def sev_info(self):
        """The SEV information response (0x001) as an integer; also the MSR's reset value."""
        return _bits(SevInfo, info=MsrCode.SEV_INFO_RESP, cbit=self.cbit,
                     min_version=self.min_version, max_version=self.max_version)

    def elaborate(self, platform):
        m = Module()
        n = self.n_vcpus
        v2 = self.max_version >= 2

        msr = Array(Signal(64, init=self.sev_info(), name=f"msr{i}") for i in range(n))
        state = Array(Signal(VcpuState, init=VcpuState.RUNNABLE if i == self.bsp_index
                             else VcpuState.UNINITIALIZED, name=f"state{i}") for i in range(n))
        hold_type = Array(Signal(HoldType, name=f"hold_type{i}") for i in range(n))
        hold_gpa = Array(Signal(32, name=f"hold_gpa{i}") for i in range(n))
        first_sipi = Array(Signal(init=int(i == self.bsp_index), name=f"first_sipi{i}") for i in range(n))
        exit_pending = Array(Signal(name=f"exit_pending{i}") for i in range(n))
        release_pending = Array(Signal(name=f"release_pending{i}") for i in range(n))
        exit_done = Array(Signal(name=f"exit_done{i}") for i in range(n))
        launch = Array(Signal(name=f"launch{i}") for i in range(n))
        jump_table = Signal(64)

        busy = Signal()
        sel = Signal(range(max(n, 2)))
        for i in range(n):
            m.d.sync += [exit_done[i].eq(0), launch[i].eq(0)]

        def resume(i):
            """The next VMRUN: the vCPU runs again and its hold type is cleared (§4)."""
            return [exit_done[i].eq(1), hold_type[i].eq(HoldType.NONE)]

        # a wake event: an NMI, or an interrupt the guest would take (KVM: injectable IRQ)
        events = Array(self.apic[i].nmi | (self.apic[i].intr & self.vcpu[i].irq_allowed)
                       for i in range(n))

        # --- per vCPU: MSR writes, INIT, SIPI, events while held ------------------------------------
        for i in range(n):
            port, apic = self.vcpu[i], self.apic[i]
            # INIT and SIPI wait (stay pending in the APIC) while this vCPU's exit is strobed,
            # queued or served: KVM accepts APIC events only between exits, so a hold is always
            # entered before the INIT that is meant to end it
            engaged = (busy & (sel == i)) | exit_pending[i] | release_pending[i] | port.vmgexit
            with m.If(port.msr_write):
                m.d.sync += msr[i].eq(port.msr_wdata)
            m.d.comb += [port.msr_rdata.eq(msr[i]), port.state.eq(state[i]),
                         port.exit_done.eq(exit_done[i]), port.launch.eq(launch[i])]
            with m.If(state[i] == VcpuState.STOPPED):
                # a terminated vCPU never runs again: INIT and SIPI are taken and dropped
                m.d.comb += [apic.init_ack.eq(apic.init), apic.sipi_ack.eq(apic.sipi)]
            with m.Elif(~engaged):
                with m.If(apic.init):
                    m.d.comb += apic.init_ack.eq(1)
                    if i == self.bsp_index:
                        # the BSP is reset to RUNNABLE (§4); a hold of it ends "not woken"
                        with m.If(state[i] == VcpuState.AP_RESET_HOLD):
                            m.d.sync += resume(i)
                        m.d.sync += state[i].eq(VcpuState.RUNNABLE)
                    else:
                        m.d.sync += state[i].eq(VcpuState.INIT_RECEIVED)  # hold type kept
                with m.Elif(apic.sipi):
                    m.d.comb += apic.sipi_ack.eq(1)
                    with m.If(state[i] == VcpuState.INIT_RECEIVED):        # else dropped
                        m.d.sync += state[i].eq(VcpuState.RUNNABLE)
                        with m.If(~first_sipi[i]):
                            m.d.sync += [first_sipi[i].eq(1), launch[i].eq(1)]
                        with m.Elif(hold_type[i] == HoldType.MSR_PROTO):
                            m.d.sync += [msr[i].eq(_bits(HoldReply, info=MsrCode.AP_RESET_HOLD_RESP, woken=1)),
                                         *resume(i)]
                        with m.Elif(hold_type[i] == HoldType.NAE_EVENT):
                            m.d.sync += release_pending[i].eq(1)           # page write first
                with m.Elif((state[i] == VcpuState.AP_RESET_HOLD) & events[i]):
                    # woken by an event, not by INIT-SIPI: the preset reply says "not woken"
                    m.d.sync += [state[i].eq(VcpuState.RUNNABLE), *resume(i)]

        # --- the shared service engine -----------------------------------------------------------------
        m.submodules.arbiter = arbiter = RoundRobinArbiter(n)
        # exits are served only for a vCPU that runs (KVM does not run one in INIT_RECEIVED)
        m.d.comb += arbiter.requests.eq(Mux(busy, 0, Cat(
            (exit_pending[i] & (state[i] == VcpuState.RUNNABLE)) | release_pending[i]
            for i in range(n))))

        value = Signal(64)
        m.d.comb += value.eq(msr[sel])
        info, data = value[0:12], value[12:64]
        gpa = Signal(32)
        usage, bitmap_hi = Signal(32), Signal(32)
        exit_code, info1, info2 = Signal(64), Signal(64), Signal(64)
        reply1, reply2 = Signal(64), Signal(64)
        then_hold = Signal()
        releasing = Signal()
        term = Signal(TermReason)
        m.d.comb += self.term.eq(term)

        def terminate(reason_set, reason_code, code):
            stmts = [state[sel].eq(VcpuState.STOPPED), exit_pending[sel].eq(0)]
            with m.If(~term.valid):
                m.d.sync += [term.valid.eq(1), term.vcpu.eq(sel), term.reason_set.eq(reason_set),
                             term.reason_code.eq(reason_code), term.code.eq(code)]
            return stmts

        def finish_exit():
            m.d.sync += [exit_pending[sel].eq(0), *resume(sel)]
            m.next = "IDLE"

        def enter_hold(kind):
            m.d.sync += exit_pending[sel].eq(0)
            with m.If(events[sel]):
                m.d.sync += resume(sel)          # events pending: no sleep, reply "not woken"
            with m.Else():
                m.d.sync += [state[sel].eq(VcpuState.AP_RESET_HOLD), hold_type[sel].eq(kind)]
            m.next = "IDLE"

        def reply(response, reason_or_value, *, hold=False, release=False):
            m.d.sync += [reply1.eq(response), reply2.eq(reason_or_value), then_hold.eq(hold),
                         releasing.eq(release)]
            m.next = "REL_RD" if release else "WR0"

        mem = self.memory
        reads = [(usage, GHCB_OFFSETS["ghcb_usage"]),
                 (bitmap_hi, GHCB_OFFSETS["valid_bitmap"] + 12),
                 (exit_code[0:32], GHCB_OFFSETS["sw_exit_code"]),
                 (exit_code[32:64], GHCB_OFFSETS["sw_exit_code"] + 4),
                 (info1[0:32], GHCB_OFFSETS["sw_exit_info_1"]),
                 (info1[32:64], GHCB_OFFSETS["sw_exit_info_1"] + 4),
                 (info2[0:32], GHCB_OFFSETS["sw_exit_info_2"]),
                 (info2[32:64], GHCB_OFFSETS["sw_exit_info_2"] + 4)]
        valid_hi = Const(0, 32)
        for name in ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"):
            valid_hi = valid_hi | (1 << (VALID_BIT[name] - 96))
        replied_valid = (1 << (VALID_BIT["sw_exit_info_1"] - 96)) | (1 << (VALID_BIT["sw_exit_info_2"] - 96))
        writes = [(GHCB_OFFSETS["sw_exit_info_1"], reply1[0:32]),
                  (GHCB_OFFSETS["sw_exit_info_1"] + 4, reply1[32:64]),
                  (GHCB_OFFSETS["sw_exit_info_2"], reply2[0:32]),
                  (GHCB_OFFSETS["sw_exit_info_2"] + 4, reply2[32:64]),
                  # the bitmap: at an exit only the fields the hypervisor wrote (it clears the
                  # rest on entry); at a SIPI release it sets its two bits in what is there
                  (GHCB_OFFSETS["valid_bitmap"], Const(0, 32)),
                  (GHCB_OFFSETS["valid_bitmap"] + 4, Const(0, 32)),
                  (GHCB_OFFSETS["valid_bitmap"] + 8, Const(0, 32)),
                  (GHCB_OFFSETS["valid_bitmap"] + 12,
                   Mux(releasing, bitmap_hi | replied_valid, Const(replied_valid, 32)))]
        whole_bitmap_words = {4, 5, 6}          # skipped by a release (KVM's __set_bit)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(arbiter.valid):
                    m.d.sync += [busy.eq(1), sel.eq(arbiter.grant_index)]
                    m.next = "DISPATCH"
                with m.Else():
                    m.d.sync += busy.eq(0)

            with m.State("DISPATCH"):
                with m.If(release_pending[sel]):
                    # a later SIPI for a GHCB-page hold: SW_EXITINFO1 = 0, SW_EXITINFO2 = 1
                    m.d.sync += [gpa.eq(hold_gpa[sel]), release_pending[sel].eq(0)]
                    reply(HvResponse.OK.value, 1, release=True)
                with m.Elif(info == MsrCode.GHCB_GPA):
                    with m.If((data == 0) | (value[32:64] != 0)):
                        finish_exit()            # no GHCB, or unmappable: resumed, nothing written
                    with m.Else():
                        m.d.sync += gpa.eq(value[0:32])
                        m.next = "RD0"
                with m.Elif(info == MsrCode.SEV_INFO_REQ):
                    m.d.sync += msr[sel].eq(self.sev_info())
                    finish_exit()
                with m.Elif(info == MsrCode.CPUID_REQ):
                    request = CpuidRequest(value)
                    function, register = request.value, request.register
                    for fn, regs in self.cpuid.items():
                        with m.If(function == fn):
                            answer = Array(Const(r, 32) for r in regs)[register]
                            m.d.sync += msr[sel].eq(_cat(CpuidRequest, info=MsrCode.CPUID_RESP,
                                                         register=register, value=answer))
                    finish_exit()                # unknown function: MSR unchanged
                with m.Elif(info == MsrCode.TERM_REQ):
                    request = Termination(value)
                    m.d.sync += terminate(request.reason_set, request.reason_code, MsrCode.TERM_REQ.value)
                    m.next = "IDLE"
                if v2:
                    with m.Elif(info == MsrCode.AP_RESET_HOLD_REQ):
                        m.d.sync += msr[sel].eq(MsrCode.AP_RESET_HOLD_RESP.value)   # "not woken"
                        enter_hold(HoldType.MSR_PROTO)
                    with m.Elif(info == MsrCode.HV_FEATURES_REQ):
                        m.d.sync += msr[sel].eq(_bits(GhcbMsr, info=MsrCode.HV_FEATURES_RESP,
                                                      data=self.hv_features))
                        finish_exit()
                    with m.Elif((info == MsrCode.PREF_GPA_REQ) | (info == MsrCode.REG_GPA_REQ)
                                | (info == MsrCode.PSC_REQ)):
                        if self.snp:
                            with m.If(info == MsrCode.PREF_GPA_REQ):
                                m.d.sync += msr[sel].eq(_bits(GhcbMsr, info=MsrCode.PREF_GPA_RESP,
                                                              data=GFN_NONE))
                            with m.Elif(info == MsrCode.REG_GPA_REQ):
                                m.d.sync += msr[sel].eq(_cat(GhcbMsr, info=MsrCode.REG_GPA_RESP,
                                                             data=data))      # the GFN echoed
                            with m.Else():
                                m.d.sync += msr[sel].eq(MsrCode.PSC_RESP.value)     # error 0
                            finish_exit()
                        else:
                            # SNP-only request from an SEV-ES VM: KVM ends the VM (its exit
                            # carries the raw MSR; here the request code, no reason)
                            m.d.sync += terminate(0, 0, info)
                            m.next = "IDLE"
                with m.Else():
                    finish_exit()                # unknown code: MSR unchanged, guest resumed

            for k, (target, offset) in enumerate(reads):
                access_states(m, mem, f"RD{k}", addr=gpa + offset, capture=target,
                              then="NAE" if k == len(reads) - 1 else f"RD{k + 1}")

            with m.State("NAE"):
                code = exit_code
                with m.If(usage != 0):
                    reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_USAGE.value)
                with m.Elif((bitmap_hi & valid_hi) != valid_hi):
                    reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.MISSING_INPUT.value)
                with m.Elif(code == NaeExit.AP_HLT_LOOP.value):
                    m.d.sync += hold_gpa[sel].eq(gpa)
                    reply(HvResponse.OK.value, 0, hold=True)
                with m.Elif(code == NaeExit.AP_JUMP_TABLE.value):
                    with m.If(info1 == JumpTableOp.SET.value):
                        m.d.sync += jump_table.eq(info2)
                        reply(HvResponse.OK.value, 0)
                    with m.Elif(info1 == JumpTableOp.GET.value):
                        reply(HvResponse.OK.value, jump_table)
                    with m.Else():
                        reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_INPUT.value)
                if v2:
                    with m.Elif(code == NaeExit.HV_FEATURES.value):
                        reply(HvResponse.OK.value, self.hv_features)
                    with m.Elif(code == NaeExit.TERM_REQUEST.value):
                        m.d.sync += terminate(info1[0:4], info1[4:12], 0)
                        m.next = "IDLE"
                with m.Else():
                    reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_EVENT.value)

            # the bitmap word the release sets its bits in
            access_states(m, mem, "REL_RD", addr=gpa + GHCB_OFFSETS["valid_bitmap"] + 12,
                          capture=bitmap_hi, then="WR0")

            for k, (offset, word) in enumerate(writes):
                last = k == len(writes) - 1
                with m.State(f"WR{k}"):
                    if k in whole_bitmap_words:
                        with m.If(releasing):
                            m.next = f"WR{k + 1}"
                    with m.If(~releasing | (k not in whole_bitmap_words)):
                        m.d.comb += [mem.req_valid.eq(1), mem.addr.eq(gpa + offset), mem.write.eq(1),
                                     mem.wdata.eq(word), mem.wstrb.eq(0xF)]
                        with m.If(mem.req_ready):
                            m.next = f"WR{k}_RESP"
                with m.State(f"WR{k}_RESP"):
                    with m.If(mem.resp_valid):
                        if not last:
                            m.next = f"WR{k + 1}"
                        else:
                            with m.If(then_hold):
                                enter_hold(HoldType.NAE_EVENT)
                            with m.Else():
                                finish_exit()

        # after the engine: a VMGEXIT strobed in the cycle an earlier exit is cleared still counts
        for i in range(n):
            with m.If(self.vcpu[i].vmgexit):
                m.d.sync += exit_pending[i].eq(1)
        return m
