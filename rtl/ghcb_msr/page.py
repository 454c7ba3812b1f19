"""The GHCB MSR unit's page engine: the GHCB-page protocol through guest memory
(docs/spec/ghcb.md §2, §3, §4, §6, §7)."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature, access_states
from apwake.rtl.lib.priority import onehot_to_index
from .layouts import (DEFAULT_VMSA_FEATURES, GHCB_OFFSETS, VALID_BIT, VMSA_GFN_BITS,
                      ApCreationOp, HvResponse, JumpTableOp, MalformedReason, NaeExit)
from .signatures import ApAcceptSignature, PageJobSignature

__all__ = ["GhcbPageEngine"]


class GhcbPageEngine(wiring.Component):
    """Reads a GHCB page, answers its request and writes the reply, one 32-bit access at a time.

    * **Exit** (``job.start`` with ``job.release`` low): read GHCB usage, the valid bitmap's top
      word, SW_EXITCODE, SW_EXITINFO1 and SW_EXITINFO2; then answer (§2):

      - usage not 0: (2, 2) *invalid usage*; SW_EXITCODE/SW_EXITINFO1/SW_EXITINFO2 not all
        valid: (2, 4) *missing input*;
      - AP_HLT_LOOP 0x8000_0004: (0, 0), then ``job.hold`` (an AP reset hold, page form);
      - AP_JUMP_TABLE 0x8000_0005: SET stores SW_EXITINFO2 as the jump table address, GET
        answers it in SW_EXITINFO2, another operation (2, 5) *invalid input*;
      - version 2 only: HV_FEATURES 0x8000_FFFD answers ``hv_features``, TERM_REQUEST
        0x8000_FFFE ends with ``job.terminate`` (reason set SW_EXITINFO1[3:0], code [11:4]) and
        writes nothing;
      - version 2 only: AP_CREATION 0x8000_0013 (SEV-SNP AP Creation, §6), as KVM's
        ``sev_es_validate_vmgexit`` then ``sev_snp_ap_creation`` (arch/x86/kvm/svm/sev.c):
        on a VM that is not SNP (2, 4) *missing input*.  On an SNP VM three more reads (the
        bitmap word of bits 32-63, RAX), then, in this order:

        1. request (SW_EXITINFO1[31:0]) not DESTROY and RAX not valid: (2, 4);
        2. no vCPU has the APIC ID SW_EXITINFO1[63:32]: (2, 5) *invalid input*;
        3. CREATE or CREATE_ON_INIT with RAX (SEV_FEATURES) not ``vmsa_features``, or the
           VMSA GPA (SW_EXITINFO2) not page-aligned or not below 4 GiB (KVM:
           ``page_address_valid``; the unit's guest-physical space is 32 bits), or 2
           MiB-aligned (the RMP erratum): (2, 5);
        4. another request (a VMPL in bits 19:16 included): (2, 5);
        5. otherwise accepted: ``ap.accept`` for one cycle (target, VMSA frame or none, kick
           unless CREATE_ON_INIT) and (0, 0).

        A refused request changes nothing but the reply.
      - anything else: (2, 6) *invalid event*.

      The reply is written as SW_EXITINFO1, SW_EXITINFO2 and a valid bitmap with just their two
      bits (the hypervisor clears the rest on entry).
    * **Release** (``job.release`` high; the SIPI that ends a page-form hold): read the bitmap's
      top word, then write SW_EXITINFO1 = 0, SW_EXITINFO2 = 1 and set their valid bits in what
      was there (the rest of the bitmap is left alone, KVM's ``__set_bit``).
    * ``job.done`` pulses in the cycle of the last write's response (or of the termination).

    Parameters
    ----------
    v2 : bool
        Serve the version-2 NAE exits (HV_FEATURES, TERM_REQUEST, AP_CREATION).
    hv_features : int
        The bitmap answered by HV_FEATURES.
    snp : bool
        An SEV-SNP VM: AP_CREATION is served.
    apic_ids : tuple of int
        The vCPUs' APIC IDs in port order (AP_CREATION's target lookup: KVM's
        ``kvm_get_vcpu_by_id``, the vCPU ID being the APIC ID).
    vmsa_features : int
        The VM's SEV features; AP_CREATION must hand the same in RAX.

    Attributes
    ----------
    job : In(PageJobSignature)
        From the dispatcher.
    memory : Out(MemoryBusSignature)
        Guest memory, initiator.
    ap : Out(ApAcceptSignature)
        Accepted AP Creation requests (SNP).
    """

    def __init__(self, *, v2, hv_features, snp=False, apic_ids=(0,),
                 vmsa_features=DEFAULT_VMSA_FEATURES):
        self.v2, self.hv_features = v2, hv_features
        self.snp, self.apic_ids, self.vmsa_features = snp, tuple(apic_ids), vmsa_features
        super().__init__({
            "job": In(PageJobSignature()),
            "memory": Out(MemoryBusSignature()),
            "ap": Out(ApAcceptSignature(len(self.apic_ids))),
        })

    def elaborate(self, platform):
        m = Module()
        job, mem = self.job, self.memory
        gpa = Signal(32)
        usage, bitmap_hi = Signal(32), Signal(32)
        exit_code, info1, info2 = Signal(64), Signal(64), Signal(64)
        reply1, reply2 = Signal(64), Signal(64)
        then_hold = Signal()
        releasing = Signal()
        jump_table = Signal(64)
        m.d.comb += [job.page.eq(gpa), job.hold.eq(then_hold),
                     job.reason_set.eq(info1[0:4]), job.reason_code.eq(info1[4:12])]

        def reply(response, reason_or_value, *, hold=False, release=False):
            m.d.sync += [reply1.eq(response), reply2.eq(reason_or_value), then_hold.eq(hold),
                         releasing.eq(release)]
            m.next = "REL_RD" if release else "WR0"

        bitmap_w1, rax = Signal(32), Signal(64)       # AP_CREATION only
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
                with m.If(job.start):
                    m.d.sync += gpa.eq(job.gpa)
                    with m.If(job.release):
                        # a later SIPI for a GHCB-page hold: SW_EXITINFO1 = 0, SW_EXITINFO2 = 1
                        reply(HvResponse.OK.value, 1, release=True)
                    with m.Else():
                        m.next = "RD0"

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
                    reply(HvResponse.OK.value, 0, hold=True)
                with m.Elif(code == NaeExit.AP_JUMP_TABLE.value):
                    with m.If(info1 == JumpTableOp.SET.value):
                        m.d.sync += jump_table.eq(info2)
                        reply(HvResponse.OK.value, 0)
                    with m.Elif(info1 == JumpTableOp.GET.value):
                        reply(HvResponse.OK.value, jump_table)
                    with m.Else():
                        reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_INPUT.value)
                if self.v2:
                    with m.Elif(code == NaeExit.HV_FEATURES.value):
                        reply(HvResponse.OK.value, self.hv_features)
                    with m.Elif(code == NaeExit.TERM_REQUEST.value):
                        m.d.comb += [job.done.eq(1), job.terminate.eq(1)]
                        m.next = "IDLE"
                    with m.Elif(code == NaeExit.AP_CREATION.value):
                        if self.snp:
                            m.next = "APC_RD0"
                        else:
                            # KVM: "if (!is_sev_snp_guest(vcpu)) goto vmgexit_err" with the
                            # reason still GHCB_ERR_MISSING_INPUT
                            reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.MISSING_INPUT.value)
                with m.Else():
                    reply(HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_EVENT.value)

            if self.snp:
                self._ap_creation(m, reply, info1, info2, bitmap_w1, rax, gpa)

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
                            m.d.comb += job.done.eq(1)
                            m.next = "IDLE"
        return m

    def _ap_creation(self, m, reply, info1, info2, bitmap_w1, rax, gpa):
        """AP_CREATION on an SNP VM: the extra reads, KVM's checks, the accept."""
        mem, ap = self.memory, self.ap
        apc_reads = [(bitmap_w1, GHCB_OFFSETS["valid_bitmap"] + 4),
                     (rax[0:32], GHCB_OFFSETS["rax"]),
                     (rax[32:64], GHCB_OFFSETS["rax"] + 4)]
        for k, (target, offset) in enumerate(apc_reads):
            access_states(m, mem, f"APC_RD{k}", addr=gpa + offset, capture=target,
                          then="APC" if k == len(apc_reads) - 1 else f"APC_RD{k + 1}")

        request, apic_id = info1[0:32], info1[32:64]
        rax_valid = bitmap_w1[VALID_BIT["rax"] - 32]
        # one comparator per vCPU on a register (the start-context unit's lookup)
        match = Signal(len(self.apic_ids))
        m.d.comb += match.eq(Cat(apic_id == value for value in self.apic_ids))
        destroy = request == ApCreationOp.DESTROY.value
        create = (request == ApCreationOp.CREATE.value) | (request == ApCreationOp.CREATE_ON_INIT.value)
        # page-aligned, below 4 GiB, and not 2 MiB-aligned (bits 20:12 not all 0)
        gpa_ok = (info2[0:12] == 0) & (info2[32:64] == 0) & (info2[12:21] != 0)
        malformed, invalid = HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_INPUT.value
        with m.State("APC"):
            with m.If(~destroy & ~rax_valid):
                reply(malformed, MalformedReason.MISSING_INPUT.value)
            with m.Elif(~match.any()):
                reply(malformed, invalid)
            with m.Elif(create & ((rax != self.vmsa_features) | ~gpa_ok)):
                reply(malformed, invalid)
            with m.Elif(create | destroy):
                m.d.comb += [ap.accept.eq(1), ap.target_1h.eq(match),
                             ap.target.eq(onehot_to_index(match)), ap.vmsa_valid.eq(create),
                             ap.gfn.eq(info2[12:12 + VMSA_GFN_BITS]),
                             ap.kick.eq(request != ApCreationOp.CREATE_ON_INIT.value)]
                reply(HvResponse.OK.value, 0)
            with m.Else():
                reply(malformed, invalid)
