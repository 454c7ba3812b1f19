"""Each part of the GHCB MSR unit alone, in Amaranth's simulator (issue 11 part 4).

The cocotb tests (cocotb_tests/ghcb_msr, cocotb_tests/sev) check the whole unit under
Verilator; these check each part at its own ports.
"""

import pytest

from apwake.rtl.ghcb_msr.dispatch import ExitDispatch
from apwake.rtl.ghcb_msr.ap_creation import VmsaTable
from apwake.rtl.ghcb_msr.layouts import (GFN_NONE, GHCB_OFFSETS, VALID_BIT, ApCreationOp, HoldType,
                                         MsrCode, NaeExit, VcpuState)
from apwake.rtl.ghcb_msr.page import GhcbPageEngine
from apwake.rtl.ghcb_msr.unit import GhcbMsrUnit, default_cpuid
from apwake.rtl.ghcb_msr.vcpu import VcpuControl
from amaranth_sim import simulate

SEV_INFO = GhcbMsrUnit(n_vcpus=1).sev_info()
HV_FEATURES = 0x3
CPUID = default_cpuid(51)
REPLIED = (1 << (VALID_BIT["sw_exit_info_1"] - 96)) | (1 << (VALID_BIT["sw_exit_info_2"] - 96))
INPUTS = REPLIED | (1 << (VALID_BIT["sw_exit_code"] - 96))




# --- MSR-protocol dispatch --------------------------------------------------------------------

def dispatched(msr, *, v2=True, snp=False, release=False):
    """What the dispatcher does in its DISPATCH cycle for one vCPU whose MSR holds ``msr``."""
    dut = ExitDispatch(n_vcpus=2, sev_info=SEV_INFO, cpuid=CPUID, v2=v2, snp=snp,
                       hv_features=HV_FEATURES)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.requests, 0b10)
        ctx.set(dut.control.msr, msr)
        ctx.set(dut.control.release, release)
        ctx.set(dut.control.held_page, 0x5000)
        await ctx.tick()
        ctx.set(dut.requests, 0)
        assert ctx.get(dut.busy) and ctx.get(dut.sel) == 1
        for name in ("load_msr", "msr_value", "finish", "hold", "hold_kind", "stop", "take_release"):
            seen[name] = ctx.get(getattr(dut.control, name))
        seen["start"], seen["gpa"] = ctx.get(dut.page.start), ctx.get(dut.page.gpa)
        seen["release"] = ctx.get(dut.page.release)
        await ctx.tick()
        term = ctx.get(dut.term)
        seen["term"] = (term.valid, term.vcpu, term.reason_set, term.reason_code, term.code)

    simulate(dut, bench)
    return seen


def answered(seen):
    """The MSR reply of a request answered at once (None: MSR unchanged), asserting the resume."""
    assert seen["finish"] and not (seen["hold"] or seen["stop"] or seen["start"])
    return seen["msr_value"] if seen["load_msr"] else None


@pytest.mark.parametrize(("request_", "reply"), [
    (MsrCode.SEV_INFO_REQ.value, SEV_INFO),
    # CPUID 0x8000_001F EBX (register 1): the C-bit and the SEV-ES bits
    ((0x8000_001F << 32) | (1 << 30) | MsrCode.CPUID_REQ.value,
     (CPUID[0x8000_001F][1] << 32) | (1 << 30) | MsrCode.CPUID_RESP.value),
    ((0x1234 << 32) | MsrCode.CPUID_REQ.value, None),            # unknown function: unchanged
    (MsrCode.HV_FEATURES_REQ.value, (HV_FEATURES << 12) | MsrCode.HV_FEATURES_RESP.value),
    (0x0FE, None),                                              # unknown code: unchanged
    (0, None),                                                  # no GHCB page
    ((1 << 32) | MsrCode.GHCB_GPA.value, None),                 # above 4 GiB: unmappable
])
def test_dispatch_answers_msr_requests(request_, reply):
    assert answered(dispatched(request_)) == reply


def test_dispatch_version_1_does_not_know_version_2_codes():
    for code in (MsrCode.AP_RESET_HOLD_REQ, MsrCode.HV_FEATURES_REQ, MsrCode.PREF_GPA_REQ):
        assert answered(dispatched(code.value, v2=False)) is None


def test_dispatch_snp_codes():
    assert answered(dispatched(MsrCode.PREF_GPA_REQ.value, snp=True)) == \
        (GFN_NONE << 12) | MsrCode.PREF_GPA_RESP.value
    assert answered(dispatched((0xABC << 12) | MsrCode.REG_GPA_REQ.value, snp=True)) == \
        (0xABC << 12) | MsrCode.REG_GPA_RESP.value
    assert answered(dispatched(MsrCode.PSC_REQ.value, snp=True)) == MsrCode.PSC_RESP.value
    # on an SEV-ES VM an SNP request ends the VM, with the request code and no reason
    seen = dispatched(MsrCode.PSC_REQ.value)
    assert seen["stop"] and not seen["finish"] and seen["term"] == (1, 1, 0, 0, MsrCode.PSC_REQ.value)


def test_dispatch_hold_termination_and_page_jobs():
    seen = dispatched(MsrCode.AP_RESET_HOLD_REQ.value)
    assert seen["load_msr"] and seen["msr_value"] == MsrCode.AP_RESET_HOLD_RESP.value   # "not woken"
    assert seen["hold"] and seen["hold_kind"] == HoldType.MSR_PROTO and not seen["finish"]
    seen = dispatched((0x27 << 16) | (0x1 << 12) | MsrCode.TERM_REQ.value)
    assert seen["stop"] and seen["term"] == (1, 1, 1, 0x27, MsrCode.TERM_REQ.value)
    seen = dispatched(0x7000)                                   # a GHCB page: the page engine
    assert seen["start"] and seen["gpa"] == 0x7000 and not (seen["release"] or seen["finish"])
    seen = dispatched(0x7000, release=True)                     # a queued SIPI release
    assert seen["start"] and seen["release"] and seen["take_release"] and seen["gpa"] == 0x5000


# --- GHCB-page engine -------------------------------------------------------------------------

GPA = 0x3000


def page_exchange(*pages, release=False, engine=None):
    """One page job per entry of ``pages`` ({offset: 32-bit word}, stored before the job) on
    one engine (default: version 2, SEV-ES); returns the memory after and the outcome of the
    last job, with ``accepts``: every AP Creation accept of all jobs (target, target_1h,
    vmsa_valid, gfn, kick)."""
    dut = engine or GhcbPageEngine(v2=True, hv_features=HV_FEATURES)
    memory = {}
    outcome = {"accepts": []}

    async def bench(ctx):
        mem = dut.memory
        for words in pages:
            memory.update({GPA + offset: word for offset, word in words.items()})
            ctx.set(dut.job.start, 1)
            ctx.set(dut.job.gpa, GPA)
            ctx.set(dut.job.release, release)
            await ctx.tick()
            ctx.set(dut.job.start, 0)
            response = None
            for _ in range(100):
                ctx.set(mem.resp_valid, response is not None)
                ctx.set(mem.rdata, response or 0)
                ctx.set(mem.req_ready, 1)
                if ctx.get(dut.job.done):
                    outcome.update(hold=ctx.get(dut.job.hold), page=ctx.get(dut.job.page),
                                   terminate=ctx.get(dut.job.terminate),
                                   reason=(ctx.get(dut.job.reason_set), ctx.get(dut.job.reason_code)))
                    await ctx.tick()
                    break
                response = None
                if ctx.get(dut.ap.accept):
                    outcome["accepts"].append(tuple(ctx.get(getattr(dut.ap, name)) for name in
                                                    ("target", "target_1h", "vmsa_valid", "gfn", "kick")))
                if ctx.get(mem.req_valid):
                    addr = ctx.get(mem.addr)
                    if ctx.get(mem.write):
                        memory[addr] = ctx.get(mem.wdata)
                        response = 0
                    else:
                        response = memory.get(addr, 0)
                await ctx.tick()
            else:
                raise AssertionError("the page engine never finished")

    simulate(dut, bench)
    return memory, outcome


def request(code, info1=0, info2=0, *, valid=INPUTS, usage=0):
    return {GHCB_OFFSETS["ghcb_usage"]: usage, GHCB_OFFSETS["valid_bitmap"] + 12: valid,
            GHCB_OFFSETS["sw_exit_code"]: code & 0xFFFF_FFFF, GHCB_OFFSETS["sw_exit_code"] + 4: code >> 32,
            GHCB_OFFSETS["sw_exit_info_1"]: info1, GHCB_OFFSETS["sw_exit_info_2"]: info2 & 0xFFFF_FFFF,
            GHCB_OFFSETS["sw_exit_info_2"] + 4: info2 >> 32}


def reply_of(memory):
    word = lambda name, k=0: memory[GPA + GHCB_OFFSETS[name] + 4 * k]
    return (word("sw_exit_info_1") | word("sw_exit_info_1", 1) << 32,
            word("sw_exit_info_2") | word("sw_exit_info_2", 1) << 32,
            sum(word("valid_bitmap", k) << (32 * k) for k in range(4)))


def test_page_engine_hold_and_malformed_requests():
    memory, outcome = page_exchange(request(0x8000_0004))          # AP_HLT_LOOP
    assert reply_of(memory) == (0, 0, REPLIED << 96)
    assert outcome["hold"] and outcome["page"] == GPA and not outcome["terminate"]
    memory, outcome = page_exchange(request(0x8000_0004, usage=1))
    assert reply_of(memory)[:2] == (2, 2) and not outcome["hold"]  # invalid usage
    memory, _ = page_exchange(request(0x8000_0004, valid=REPLIED))
    assert reply_of(memory)[:2] == (2, 4)                          # SW_EXITCODE not valid
    memory, _ = page_exchange(request(0x7B))
    assert reply_of(memory)[:2] == (2, 6)                          # an exit the unit does not serve
    memory, _ = page_exchange(request(0x8000_FFFD))
    assert reply_of(memory)[:2] == (0, HV_FEATURES)


def test_page_engine_jump_table_and_termination():
    # SET stores SW_EXITINFO2; a later GET answers it; another operation is invalid input
    memory, _ = page_exchange(request(0x8000_0005, 0, 0x9_8000), request(0x8000_0005, 1))
    assert reply_of(memory)[:2] == (0, 0x9_8000)
    memory, _ = page_exchange(request(0x8000_0005, 2))
    assert reply_of(memory)[:2] == (2, 5)
    words = request(0x8000_FFFE, (0x5 << 4) | 0x1)
    memory, outcome = page_exchange(words)
    assert outcome["terminate"] and outcome["reason"] == (0x1, 0x5)
    assert memory == {GPA + offset: word for offset, word in words.items()}   # nothing written


def test_page_engine_release_sets_only_its_bits():
    others = (1 << 31) | (1 << (VALID_BIT["rax"] % 32))
    words = {GHCB_OFFSETS["valid_bitmap"] + 4 * k: 0xFFFF_0000 for k in range(3)}
    words[GHCB_OFFSETS["valid_bitmap"] + 12] = others
    memory, outcome = page_exchange(words, release=True)
    info1, info2, bitmap = reply_of(memory)
    assert (info1, info2) == (0, 1) and not outcome["hold"]
    assert bitmap == (0xFFFF_0000 * (1 + (1 << 32) + (1 << 64))) | ((others | REPLIED) << 96)


# --- per-vCPU events --------------------------------------------------------------------------

def test_vcpu_init_sipi_launch_and_msr_hold():
    dut = VcpuControl(bsp=False, msr_init=SEV_INFO)

    async def bench(ctx):
        port, apic, control = dut.port, dut.apic, dut.control
        state = lambda: ctx.get(port.state)
        assert state() == VcpuState.UNINITIALIZED and ctx.get(port.msr_rdata) == SEV_INFO
        ctx.set(apic.init, 1)
        assert ctx.get(apic.init_ack)
        await ctx.tick()
        ctx.set(apic.init, 0)
        assert state() == VcpuState.INIT_RECEIVED
        ctx.set(apic.sipi, 1)
        assert ctx.get(apic.sipi_ack)
        await ctx.tick()
        ctx.set(apic.sipi, 0)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.launch)      # the first SIPI
        # an exit: requested; while it waits INIT stays pending in the APIC
        ctx.set(port.vmgexit, 1)
        await ctx.tick()
        ctx.set(port.vmgexit, 0)
        assert ctx.get(dut.request)
        ctx.set(apic.init, 1)
        assert not ctx.get(apic.init_ack)
        # the dispatcher enters an MSR-protocol hold
        ctx.set(dut.serving, 1)
        ctx.set(control.load_msr, 1)
        ctx.set(control.msr_value, MsrCode.AP_RESET_HOLD_RESP.value)
        ctx.set(control.hold, 1)
        ctx.set(control.hold_kind, HoldType.MSR_PROTO)
        await ctx.tick()
        for name in ("serving", "control.load_msr", "control.hold"):
            obj = dut
            for part in name.split("."):
                obj = getattr(obj, part)
            ctx.set(obj, 0)
        assert state() == VcpuState.AP_RESET_HOLD and not ctx.get(dut.request)
        assert ctx.get(apic.init_ack)                                      # INIT taken now
        await ctx.tick()
        ctx.set(apic.init, 0)
        assert state() == VcpuState.INIT_RECEIVED
        ctx.set(apic.sipi, 1)                                              # a later SIPI: woken
        await ctx.tick()
        ctx.set(apic.sipi, 0)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.exit_done)
        assert ctx.get(port.msr_rdata) == (1 << 12) | MsrCode.AP_RESET_HOLD_RESP.value
        assert not ctx.get(port.launch)

    simulate(dut, bench)


def test_vcpu_wake_events_page_hold_release_and_stop():
    dut = VcpuControl(bsp=True, msr_init=SEV_INFO)

    async def bench(ctx):
        port, apic, control = dut.port, dut.apic, dut.control
        state = lambda: ctx.get(port.state)
        assert state() == VcpuState.RUNNABLE
        # a hold with an interrupt the guest takes pending is not entered
        ctx.set(apic.intr, 1)
        ctx.set(port.irq_allowed, 1)
        ctx.set(control.hold, 1)
        ctx.set(control.hold_kind, HoldType.NAE_EVENT)
        ctx.set(control.hold_page, 0x6000)
        await ctx.tick()
        assert state() == VcpuState.RUNNABLE and ctx.get(port.exit_done)
        ctx.set(port.irq_allowed, 0)                 # masked: the hold is entered
        await ctx.tick()
        ctx.set(control.hold, 0)
        assert state() == VcpuState.AP_RESET_HOLD and ctx.get(control.held_page) == 0x6000
        await ctx.tick()
        assert state() == VcpuState.AP_RESET_HOLD
        ctx.set(apic.nmi, 1)                         # an NMI always wakes
        await ctx.tick()
        ctx.set(apic.nmi, 0)
        ctx.set(apic.intr, 0)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.exit_done)
        ctx.set(control.stop, 1)
        await ctx.tick()
        ctx.set(control.stop, 0)
        assert state() == VcpuState.STOPPED
        ctx.set(apic.init, 1)
        ctx.set(apic.sipi, 1)
        assert ctx.get(apic.init_ack) and ctx.get(apic.sipi_ack)    # taken and dropped
        await ctx.tick()
        assert state() == VcpuState.STOPPED

    simulate(dut, bench)


def test_vcpu_page_hold_sipi_queues_a_release():
    dut = VcpuControl(bsp=False, msr_init=SEV_INFO)

    async def bench(ctx):
        port, apic, control = dut.port, dut.apic, dut.control
        for line in (apic.init, apic.sipi):          # start the AP
            ctx.set(line, 1)
            await ctx.tick()
            ctx.set(line, 0)
        ctx.set(control.hold, 1)
        ctx.set(control.hold_kind, HoldType.NAE_EVENT)
        await ctx.tick()
        ctx.set(control.hold, 0)
        for line in (apic.init, apic.sipi):          # INIT-SIPI ends the page-form hold
            ctx.set(line, 1)
            await ctx.tick()
            ctx.set(line, 0)
        assert ctx.get(port.state) == VcpuState.RUNNABLE and not ctx.get(port.exit_done)
        assert ctx.get(control.release) and ctx.get(dut.request)    # the page reply comes first
        ctx.set(control.take_release, 1)
        await ctx.tick()
        ctx.set(control.take_release, 0)
        assert not ctx.get(control.release)

    simulate(dut, bench)


# --- SEV-SNP AP Creation (docs/spec/ghcb.md §6) -------------------------------------------------

AP_IDS = (0x3, 0x10, 0x7)
FEATURES = 0x21                 # SNPActive | DebugSwap


def snp_engine(**kwargs):
    return GhcbPageEngine(v2=True, hv_features=HV_FEATURES, snp=True, apic_ids=AP_IDS,
                          vmsa_features=FEATURES, **kwargs)


def ap_creation(op, apic_id, gpa, *, rax=FEATURES, rax_valid=True):
    """The GHCB words of an AP_CREATION request (RAX and its valid bit, bit 63, as
    ``vmgexit_ap_control`` sets them)."""
    words = request(NaeExit.AP_CREATION.value, op, gpa)
    words[GHCB_OFFSETS["sw_exit_info_1"] + 4] = apic_id
    words[GHCB_OFFSETS["rax"]] = rax & 0xFFFF_FFFF
    words[GHCB_OFFSETS["rax"] + 4] = rax >> 32
    words[GHCB_OFFSETS["valid_bitmap"] + 4] = int(rax_valid) << (VALID_BIT["rax"] - 32)
    return words


@pytest.mark.parametrize(("op", "apic_id", "gpa", "kwargs", "reply"), [
    (ApCreationOp.CREATE, 0x10, 0x30_1000, {}, (0, 0)),
    (ApCreationOp.CREATE_ON_INIT, 0x7, 0x30_1000, {}, (0, 0)),
    (ApCreationOp.DESTROY, 0x7, 0, {"rax_valid": False}, (0, 0)),        # DESTROY needs no RAX
    (ApCreationOp.CREATE, 0x10, 0x30_1000, {"rax_valid": False}, (2, 4)),
    (7, 0x10, 0x30_1000, {"rax_valid": False}, (2, 4)),                  # not DESTROY: RAX first
    (ApCreationOp.CREATE, 0x11, 0x30_1000, {}, (2, 5)),                  # no such APIC ID
    (ApCreationOp.DESTROY, 0x11, 0, {}, (2, 5)),
    (ApCreationOp.CREATE, 0x10, 0x30_1000, {"rax": 0x1}, (2, 5)),       # SEV features differ
    (ApCreationOp.CREATE, 0x10, 0x30_1008, {}, (2, 5)),                  # not page-aligned
    (ApCreationOp.CREATE, 0x10, 0x40_0000, {}, (2, 5)),                  # 2 MiB-aligned
    (ApCreationOp.CREATE_ON_INIT, 0x10, 0, {}, (2, 5)),                  # GPA 0 is 2 MiB-aligned
    (ApCreationOp.CREATE, 0x10, 0x1_0030_1000, {}, (2, 5)),              # above 4 GiB
    (3, 0x10, 0x30_1000, {}, (2, 5)),                                    # no such request
    ((1 << 16) | 1, 0x10, 0x30_1000, {}, (2, 5)),                        # CREATE at VMPL1
])
def test_page_engine_ap_creation_checks(op, apic_id, gpa, kwargs, reply):
    op = getattr(op, "value", op)
    memory, outcome = page_exchange(ap_creation(op, apic_id, gpa, **kwargs), engine=snp_engine())
    assert reply_of(memory) == (*reply, REPLIED << 96)
    if reply == (0, 0):
        target = AP_IDS.index(apic_id)
        creates = op != ApCreationOp.DESTROY.value
        assert outcome["accepts"] == [(target, 1 << target, int(creates),
                                       (gpa >> 12) & 0xF_FFFF if creates else 0,
                                       int(op != ApCreationOp.CREATE_ON_INIT.value))]
    else:
        assert outcome["accepts"] == []


def test_page_engine_ap_creation_on_an_sev_es_vm():
    """KVM: AP_CREATION from a VM that is not SNP is (2, 4); a version-1 hypervisor does not
    know the exit: (2, 6)."""
    memory, outcome = page_exchange(ap_creation(1, 0, 0x30_1000))
    assert reply_of(memory)[:2] == (2, 4) and outcome["accepts"] == []
    memory, _ = page_exchange(ap_creation(1, 0, 0x30_1000),
                              engine=GhcbPageEngine(v2=False, hv_features=HV_FEATURES))
    assert reply_of(memory)[:2] == (2, 6)


def test_vmsa_table_install_and_start():
    dut = VmsaTable(n_vcpus=3)

    async def bench(ctx):
        accept, job = dut.accept, dut.job

        async def run_job(vcpu, launch):
            ctx.set(job.vcpu, vcpu)
            ctx.set(job.launch, launch)
            ctx.set(job.start, 1)
            await ctx.tick()
            ctx.set(job.start, 0)
            assert ctx.get(job.done)
            installed = ctx.get(job.installed)
            await ctx.tick()
            return installed, ctx.get(dut.vmsa_gpa)

        async def accept_one(target, valid, gfn):
            ctx.set(accept.accept, 1)
            ctx.set(accept.target, target)
            ctx.set(accept.vmsa_valid, valid)
            ctx.set(accept.gfn, gfn)
            await ctx.tick()
            ctx.set(accept.accept, 0)

        assert (await run_job(1, 0))[0] == 0               # nothing pending
        await accept_one(1, 1, 0x301)
        await accept_one(2, 1, 0x555)
        await accept_one(1, 1, 0x302)                       # a second request replaces the first
        assert await run_job(1, 0) == (1, 0x30_2000)       # installed
        assert (await run_job(1, 0))[0] == 0               # used once
        await accept_one(2, 0, 0)                           # DESTROY
        assert (await run_job(2, 0))[0] == 0
        assert await run_job(1, 1) == (0, 0x30_2000)       # the start: the installed VMSA

    simulate(dut, bench)


def _pulse(ctx, *signals, value=1):
    for signal in signals:
        ctx.set(signal, value)


async def _strobe(ctx, *signals):
    """Hold ``signals`` high for one clock edge."""
    _pulse(ctx, *signals)
    await ctx.tick()
    _pulse(ctx, *signals, value=0)


def test_vcpu_ap_create_reset_and_start():
    """CREATE (kicked): HALTED and a reset job; installed: a start job; started: RUNNABLE with
    ``vmsa_launch``.  DESTROY: HALTED for good; INIT-SIPI then asks for a start the dispatcher
    refuses (``no_vmsa``)."""
    dut = VcpuControl(bsp=False, msr_init=SEV_INFO, snp=True)

    async def bench(ctx):
        port, apic, control = dut.port, dut.apic, dut.control
        state = lambda: ctx.get(port.state)

        strobe = lambda *signals: _strobe(ctx, *signals)

        assert state() == VcpuState.UNINITIALIZED and ctx.get(dut.settled)
        ctx.set(dut.ap_kick, 1)
        await strobe(dut.ap_create)
        assert not ctx.get(dut.settled)                     # the kick is work
        await ctx.tick()
        assert state() == VcpuState.HALTED and ctx.get(control.ap_job) and not ctx.get(control.ap_launch)
        assert ctx.get(dut.request)
        ctx.set(control.vmsa_installed, 1)
        await strobe(control.vmsa_apply)
        assert ctx.get(control.ap_job) and ctx.get(control.ap_launch) and not ctx.get(control.no_vmsa)
        ctx.set(dut.vmsa_gpa, 0x30_1000)
        await strobe(control.vmsa_start)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.vmsa_launch)
        assert ctx.get(port.vmsa_gpa) == 0x30_1000 and not ctx.get(port.launch)
        await ctx.tick()
        assert not ctx.get(port.vmsa_launch) and ctx.get(dut.settled)
        # DESTROY
        await strobe(dut.ap_create)
        await ctx.tick()
        ctx.set(control.vmsa_installed, 0)
        await strobe(control.vmsa_apply)
        assert state() == VcpuState.HALTED and ctx.get(control.no_vmsa) and not ctx.get(control.ap_job)
        assert ctx.get(dut.settled)
        await strobe(apic.init)
        assert state() == VcpuState.INIT_RECEIVED
        await strobe(apic.sipi)
        assert ctx.get(control.ap_job) and ctx.get(control.ap_launch) and ctx.get(control.no_vmsa)
        await strobe(control.stop)
        assert state() == VcpuState.STOPPED and not ctx.get(dut.request)

    simulate(dut, bench)


def test_vcpu_create_on_init_waits_for_init():
    """CREATE_ON_INIT (no kick) is not work and changes nothing until INIT; INIT then resets
    the AP into INIT_RECEIVED with the new VMSA, which starts at the SIPI."""
    dut = VcpuControl(bsp=False, msr_init=SEV_INFO, snp=True)

    async def bench(ctx):
        port, apic, control = dut.port, dut.apic, dut.control
        state = lambda: ctx.get(port.state)

        strobe = lambda *signals: _strobe(ctx, *signals)

        await strobe(apic.init)
        await strobe(apic.sipi)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.launch)     # the launch VMSA
        ctx.set(dut.ap_kick, 0)
        await strobe(dut.ap_create)
        for _ in range(3):
            await ctx.tick()
            assert state() == VcpuState.RUNNABLE and ctx.get(dut.settled)
            assert not ctx.get(control.ap_job)
        await strobe(apic.init)
        assert state() == VcpuState.HALTED and ctx.get(control.ap_job)
        ctx.set(control.vmsa_installed, 1)
        await strobe(control.vmsa_apply)
        assert state() == VcpuState.INIT_RECEIVED and not ctx.get(control.ap_job)
        await strobe(apic.sipi)
        assert ctx.get(control.ap_job) and ctx.get(control.ap_launch)
        await strobe(control.vmsa_start)
        assert state() == VcpuState.RUNNABLE and ctx.get(port.vmsa_launch) and not ctx.get(port.launch)

    simulate(dut, bench)
