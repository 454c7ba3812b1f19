"""The GHCB MSR unit's page engine: the GHCB-page protocol through guest memory
(docs/spec/ghcb.md §2, §3, §4, §7)."""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature, access_states
from .layouts import (GHCB_OFFSETS, VALID_BIT, HvResponse, JumpTableOp, MalformedReason, NaeExit)
from .signatures import PageJobSignature

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
        Serve the version-2 NAE exits (HV_FEATURES, TERM_REQUEST).
    hv_features : int
        The bitmap answered by HV_FEATURES.

    Attributes
    ----------
    job : In(PageJobSignature)
        From the dispatcher.
    memory : Out(MemoryBusSignature)
        Guest memory, initiator.
    """

    job: In(PageJobSignature())
    memory: Out(MemoryBusSignature())

    def __init__(self, *, v2, hv_features):
        self.v2, self.hv_features = v2, hv_features
        super().__init__()

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
                            m.d.comb += job.done.eq(1)
                            m.next = "IDLE"
        return m
