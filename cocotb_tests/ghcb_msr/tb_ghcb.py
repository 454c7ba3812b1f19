"""GHCB MSR trap unit block tests: every MSR-protocol code bit-exact against docs/spec/ghcb.md §1, version
negotiation, AP reset hold in both forms and its races (§4, §7), the GHCB page checks and the
AP jump table (§2, §3), and SEV-SNP AP Creation (§6) as KVM serves it."""

import itertools

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge

from apwake.rtl.ghcb_msr.layouts import (GFN_NONE, GHCB_OFFSETS, VALID_BIT, ApCreationOp, CpuidRequest,
                                  GhcbMsr, HoldReply, HvResponse, JumpTableOp, MalformedReason, MsrCode,
                                  NaeExit, PROTOCOL_MAX, PROTOCOL_MIN, SevInfo, TermReason, Termination,
                                  VcpuState)
from apwake.rtl.ghcb_msr.unit import default_cpuid
from apwake.sim.harness.clocking import start_clock_and_reset
from apwake.sim.models.cpu.sev import NegotiationFailed, sev_es_negotiate_protocol, sev_es_terminate
from apwake.sim.harness.codec import pack, unpack
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.harness.deadline import Deadline
from apwake.sim.vip.ghcb_msr.bfm import ApicEvents, VcpuPort
from apwake.sim.vip.ghcb_msr.design import GhcbConfig
from apwake.sim.vip.ghcb_msr.page import read_reply, write_request
from apwake.sim.vip.memory import PAGE_SIZE, Memory, Owner
from apwake.sim.vip.memory_bus import GuestMemoryResponder
from apwake.sim.harness.pytest_plugin import applies_to

TIMEOUT = dict(timeout_time=1, timeout_unit="ms")
GHCB_PAGE = 0x0010_0000              # a vCPU's GHCB: a shared page
JUMP_TABLE = 0x0008_0000
v2 = applies_to(lambda c: c.max_version >= 2)
v1_only = applies_to(lambda c: c.max_version == 1)
snp = applies_to(lambda c: c.snp)


class Env:
    def __init__(self, dut, config):
        self.dut, self.config = dut, config
        self.memory = Memory()
        self.memory.set_owner(GHCB_PAGE, PAGE_SIZE * config.n_vcpus, Owner.SHARED)
        self.guest = GuestMemoryResponder(dut, self.memory)
        self.vcpus = [VcpuPort(dut, i) for i in range(config.n_vcpus)]
        self.apics = [ApicEvents(dut, i) for i in range(config.n_vcpus)]

    @classmethod
    async def start(cls, dut):
        env = cls(dut, GhcbConfig.from_env())
        await start_clock_and_reset(dut, CLOCK_NS)
        cocotb.start_soon(env.guest.run())
        return env

    def term(self):
        return unpack(TermReason, int(self.dut.term.value))

    def ap(self, k=1):
        """An AP index (any vCPU but the BSP)."""
        return [i for i in range(self.config.n_vcpus) if i != self.config.bsp_index][k - 1]

    async def launch(self, i):
        """INIT then the first SIPI: the vCPU starts from its launch state."""
        await self.apics[i].init()
        assert self.vcpus[i].state is VcpuState.INIT_RECEIVED
        launched = cocotb.start_soon(self.vcpus[i].wait_launch(timeout_cycles=50))
        await self.apics[i].sipi(0x9A)
        assert await launched, f"vCPU {i}: no launch after its first SIPI"
        assert self.vcpus[i].state is VcpuState.RUNNABLE


    # --- the GHCB page, as the guest fills it (valid bits set with each field) ---------------------
    def ghcb(self, i):
        return GHCB_PAGE + PAGE_SIZE * i

    def write_ghcb(self, i, **fields):
        write_request(self.memory, self.ghcb(i), writer=Owner.KERNEL1, **fields)

    def read_reply(self, i):
        return read_reply(self.memory, self.ghcb(i))

    async def nae(self, i, *, timeout_cycles=200, accesses=None, **fields):
        """Fill the GHCB, point the MSR at it, VMGEXIT; the (SW_EXITINFO1, SW_EXITINFO2) reply.
        ``timeout_cycles`` bounds 16 memory accesses, stalls included (``--stall``): a hold is
        "not resumed" only after it.
        A resumed exit must have made exactly the unit's accesses (``accesses``, default
        :data:`EXIT_ACCESSES`), each once, in order."""
        accesses = EXIT_ACCESSES if accesses is None else accesses
        self.write_ghcb(i, **fields)
        before = len(self.guest.accesses)
        await self.vcpus[i].wrmsr(self.ghcb(i))
        resumed = await self.vcpus[i].vmgexit(timeout_cycles=timeout_cycles)
        if resumed:
            made = [(a - self.ghcb(i), w) for a, w, _ in self.guest.accesses[before:]]
            assert made == accesses, (
                f"vCPU {i}: guest memory accesses of one page-protocol exit (offset, write): "
                f"{made}, expected {accesses}")
        info1, info2, _ = self.read_reply(i)
        return resumed, info1, info2

    # --- SEV-SNP AP Creation ----------------------------------------------------------------------
    def apic_id(self, i):
        return self.config.vcpu_apic_ids[i]

    async def ap_creation(self, i, op, target, gpa=0, *, rax="features", rax_valid=True):
        """vCPU ``i`` asks for AP Creation ``op`` (an ApCreationOp or a raw request number) of the
        vCPU with APIC ID ``target``, VMSA ``gpa``, RAX = the VM's SEV features unless given
        (None: not set).  Returns (SW_EXITINFO1, SW_EXITINFO2); the exchange must have made
        exactly :data:`APC_ACCESSES` (SNP) or :data:`EXIT_ACCESSES` (no extra reads otherwise)
        and the reply bitmap exactly the two reply bits."""
        request = getattr(op, "value", op)
        rax = self.config.vmsa_features if rax == "features" else rax
        fields = dict(exit_code=NaeExit.AP_CREATION.value, info1=target << 32 | request, info2=gpa,
                      rax=rax)
        if rax is not None and not rax_valid:
            fields["valid"] = ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2")
        resumed, info1, info2 = await self.nae(
            i, accesses=APC_ACCESSES if self.config.snp else EXIT_ACCESSES, **fields)
        assert resumed, f"vCPU {i}: AP Creation {op} not answered"
        assert self.read_reply(i)[2] == REPLIED_VALID
        return info1, info2

    def watch_starts(self):
        """Record every start of every vCPU in ``self.starts``: (vCPU, "vmsa", GPA) at a
        ``vmsa_launch`` pulse, (vCPU, "launch", None) at a ``launch`` pulse."""
        self.starts = []
        self.started = Event()

        async def watch(i, handle, kind):
            while True:
                await RisingEdge(handle)
                await ReadOnly()
                self.starts.append((i, kind, self.vcpus[i].vmsa_gpa if kind == "vmsa" else None))
                self.started.set()

        for i, vcpu in enumerate(self.vcpus):
            cocotb.start_soon(watch(i, vcpu.vmsa_launch, "vmsa"))
            cocotb.start_soon(watch(i, vcpu.launch, "launch"))

    async def idle_for(self, cycles, *, launches=None):
        """``idle`` sampled in the read-only phase of the next ``cycles`` cycles; with a list
        ``launches``, the cycles (indices) in which some vCPU's ``vmsa_launch`` was high are
        appended to it."""
        seen = []
        for k in range(cycles):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            seen.append(int(self.dut.idle.value))
            if launches is not None and any(v.vmsa_launch.value for v in self.vcpus):
                launches.append(k)
        await RisingEdge(self.dut.clk)
        return seen


REPLIED_VALID = (1 << VALID_BIT["sw_exit_info_1"]) | (1 << VALID_BIT["sw_exit_info_2"])
#: (offset in the GHCB, write) of every access of one page-protocol exit that is answered: the
#: usage, the bitmap word of bits 96-127 and the three request fields read; the two reply fields
#: and the whole bitmap written (ghcb.md §2)
_INFO1, _INFO2 = GHCB_OFFSETS["sw_exit_info_1"], GHCB_OFFSETS["sw_exit_info_2"]
_CODE, _BITMAP = GHCB_OFFSETS["sw_exit_code"], GHCB_OFFSETS["valid_bitmap"]
EXIT_ACCESSES = (
    [(GHCB_OFFSETS["ghcb_usage"], False), (_BITMAP + 12, False)]
    + [(offset + half, False) for offset in (_CODE, _INFO1, _INFO2) for half in (0, 4)]
    + [(offset + half, True) for offset in (_INFO1, _INFO2) for half in (0, 4)]
    + [(_BITMAP + word, True) for word in (0, 4, 8, 12)])
#: the same for AP_CREATION on an SNP VM: three more reads after the request fields, the bitmap
#: word of bits 32-63 (RAX's valid bit 63) and RAX
_RAX = GHCB_OFFSETS["rax"]
APC_ACCESSES = EXIT_ACCESSES[:8] + [(_BITMAP + 4, False), (_RAX, False), (_RAX + 4, False)] + EXIT_ACCESSES[8:]
#: VMSA pages: the second page of 8 KiB allocations, as Linux hands them
VMSA_A, VMSA_B, VMSA_C = 0x0030_1000, 0x0030_3000, 0x0030_5000


# --- MSR protocol ---------------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_reset_value_is_the_sev_information(dut):
    """KVM preloads the SEV information response at vCPU creation, so a guest can read it before
    asking (§1)."""
    env = await Env.start(dut)
    for vcpu in env.vcpus:
        info = unpack(SevInfo, vcpu.rdmsr())
        assert info["info"] is MsrCode.SEV_INFO_RESP
        assert (info["min_version"], info["max_version"], info["cbit"]) == (
            env.config.min_version, env.config.max_version, env.config.cbit)
        assert info["zero"] == 0
    states = [v.state for v in env.vcpus]
    assert states[env.config.bsp_index] is VcpuState.RUNNABLE
    assert all(s is VcpuState.UNINITIALIZED for i, s in enumerate(states) if i != env.config.bsp_index)


@cocotb.test(**TIMEOUT)
async def test_sev_information_request(dut):
    """0x002 -> 0x001 with [63:48] max, [47:32] min, [31:24] C-bit, [23:12] 0, bit-exact."""
    env = await Env.start(dut)
    bsp = env.vcpus[env.config.bsp_index]
    await bsp.wrmsr(0xDEAD_0000_0000_0000)           # something else first
    reply = await bsp.msr_protocol(MsrCode.SEV_INFO_REQ.value)
    c = env.config
    assert reply == c.max_version << 48 | c.min_version << 32 | c.cbit << 24 | 0x001, hex(reply)


@cocotb.test(**TIMEOUT)
async def test_cpuid_request(dut):
    """0x004 with [63:32] function, [31:30] register -> 0x005 with the value in [63:32] and the
    register field kept; a function the table lacks leaves the MSR unchanged (§1, §7)."""
    env = await Env.start(dut)
    bsp = env.vcpus[env.config.bsp_index]
    for function, values in default_cpuid(env.config.cbit).items():
        for register, expected in enumerate(values):
            request = pack(CpuidRequest, info=MsrCode.CPUID_REQ, register=register, value=function)
            reply = await bsp.msr_protocol(request)
            assert reply == pack(CpuidRequest, info=MsrCode.CPUID_RESP, register=register,
                                 value=expected), (hex(function), register, hex(reply))
    missing = pack(CpuidRequest, info=MsrCode.CPUID_REQ, register=1, value=0x4000_0000)
    assert await bsp.msr_protocol(missing) == missing


@cocotb.test(**TIMEOUT)
async def test_unknown_code_left_unchanged(dut):
    """A code the hypervisor does not know: MSR unchanged, guest resumed (§1, §7)."""
    env = await Env.start(dut)
    bsp = env.vcpus[env.config.bsp_index]
    for request in (0x0ABC_0000_0000_0008, 0x0000_0000_0123_4FFF, 0x0000_0000_0000_0003):
        assert await bsp.msr_protocol(request) == request
    assert not env.term()["valid"]


@cocotb.test(**TIMEOUT)
@v2
async def test_hv_features(dut):
    """0x080 -> 0x081 with the feature bitmap in [63:12] (KVM: SNP | AP creation)."""
    env = await Env.start(dut)
    reply = await env.vcpus[env.config.bsp_index].msr_protocol(MsrCode.HV_FEATURES_REQ.value)
    assert reply == 0x3 << 12 | MsrCode.HV_FEATURES_RESP.value, hex(reply)


@cocotb.test(**TIMEOUT)
@v1_only
async def test_version2_codes_unknown_to_a_version1_hypervisor(dut):
    """max_version 1: 0x006, 0x080 and the GPA/PSC requests are unknown: unchanged, resumed, no
    hold and no termination (a pre-SNP KVM)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    for code in (MsrCode.AP_RESET_HOLD_REQ, MsrCode.HV_FEATURES_REQ, MsrCode.PREF_GPA_REQ,
                 MsrCode.REG_GPA_REQ, MsrCode.PSC_REQ):
        assert await env.vcpus[ap].msr_protocol(code.value) == code.value
    assert env.vcpus[ap].state is VcpuState.RUNNABLE and not env.term()["valid"]


@cocotb.test(**TIMEOUT)
@applies_to(lambda c: c.max_version >= 2 and not c.snp)
async def test_snp_only_codes_terminate_an_sev_es_vm(dut):
    """0x010/0x012/0x014 from an SEV-ES VM: KVM ends the VM (system event), the vCPU is never
    resumed; the status names vCPU and request code (§1, §7)."""
    env = await Env.start(dut)
    bsp_index = env.config.bsp_index
    request = pack(GhcbMsr, info=MsrCode.REG_GPA_REQ, data=0x12345)
    await env.vcpus[bsp_index].wrmsr(request)
    assert not await env.vcpus[bsp_index].vmgexit(timeout_cycles=100)
    assert env.vcpus[bsp_index].state is VcpuState.STOPPED
    term = env.term()
    assert term["valid"] and term["vcpu"] == bsp_index and term["code"] == MsrCode.REG_GPA_REQ.value


@cocotb.test(**TIMEOUT)
@applies_to(lambda c: c.snp)
async def test_snp_gpa_requests(dut):
    """SNP VM: preferred GPA answers "none" (all-ones GFN), register echoes the GFN, PSC error 0."""
    env = await Env.start(dut)
    bsp = env.vcpus[env.config.bsp_index]
    assert await bsp.msr_protocol(MsrCode.PREF_GPA_REQ.value) == GFN_NONE << 12 | MsrCode.PREF_GPA_RESP.value
    gfn = 0x12345
    reply = await bsp.msr_protocol(pack(GhcbMsr, info=MsrCode.REG_GPA_REQ, data=gfn))
    assert reply == pack(GhcbMsr, info=MsrCode.REG_GPA_RESP, data=gfn)
    assert await bsp.msr_protocol(MsrCode.PSC_REQ.value | 1 << 52) == MsrCode.PSC_RESP.value


@cocotb.test(**TIMEOUT)
async def test_termination_request(dut):
    """0x100 with reason set [15:12] and code [23:16]: the vCPU stops for good and the status port
    carries vCPU, set and code; later requests of that vCPU are never answered (§1, §5)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    request = pack(Termination, info=MsrCode.TERM_REQ, reason_set=1, reason_code=4)
    await env.vcpus[ap].wrmsr(request)
    assert not await env.vcpus[ap].vmgexit(timeout_cycles=100)
    assert env.vcpus[ap].state is VcpuState.STOPPED
    assert env.term() == {"valid": 1, "vcpu": ap, "reason_set": 1, "reason_code": 4,
                          "code": MsrCode.TERM_REQ.value, "no_vmsa": 0}
    assert not await env.vcpus[ap].vmgexit(timeout_cycles=100)
    await env.apics[ap].init()                       # INIT is taken but moves nothing
    assert env.vcpus[ap].state is VcpuState.STOPPED
    # the others keep running
    bsp = env.vcpus[env.config.bsp_index]
    assert await bsp.msr_protocol(MsrCode.SEV_INFO_REQ.value) & 0xFFF == MsrCode.SEV_INFO_RESP.value


# --- AP reset hold, MSR form -------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
@v2
async def test_msr_hold_released_by_init_sipi(dut):
    """0x006: the vCPU is held (AP_RESET_HOLD) with the reply preset to 0x007/0; INIT keeps it
    (INIT_RECEIVED), SIPI sets data 1 (MSR 0x1007) and resumes it; no memory is touched (§1, §4)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu = env.vcpus[ap]
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=50)
    assert vcpu.state is VcpuState.AP_RESET_HOLD
    assert vcpu.rdmsr() == MsrCode.AP_RESET_HOLD_RESP.value          # preset: not woken
    await env.apics[ap].init()
    assert vcpu.state is VcpuState.INIT_RECEIVED
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=50))
    await env.apics[ap].sipi(0x9A)
    assert await done, "SIPI did not resume the held vCPU"
    assert unpack(HoldReply, vcpu.rdmsr()) == {"info": MsrCode.AP_RESET_HOLD_RESP, "woken": 1}
    assert vcpu.state is VcpuState.RUNNABLE
    assert env.guest.accesses == [], "the MSR form touched guest memory"


@cocotb.test(**TIMEOUT)
@v2
async def test_interrupt_or_nmi_while_held(dut):
    """An NMI, or an interrupt the guest would take (irq_allowed), while held resumes the vCPU
    with "not woken" (data 0); the guest must issue the hold again.  An interrupt pending while
    the guest has interrupts off (a parked AP runs with IF = 0) does not (§4, §7)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu, apic = env.vcpus[ap], env.apics[ap]
    # masked: the hold stays
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=30)
    apic.interrupt(True)
    assert not await vcpu.wait_exit_done(timeout_cycles=50), "a masked interrupt ended the hold"
    assert vcpu.state is VcpuState.AP_RESET_HOLD
    # the guest would take it now: released, "not woken"
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=30))
    vcpu.allow_interrupts(True)
    assert await done
    apic.interrupt(False)
    assert vcpu.state is VcpuState.RUNNABLE and unpack(HoldReply, vcpu.rdmsr())["woken"] == 0
    vcpu.allow_interrupts(False)
    # NMI: always
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=30)
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=30))
    apic.nmi(True)
    assert await done
    apic.nmi(False)
    assert vcpu.state is VcpuState.RUNNABLE and unpack(HoldReply, vcpu.rdmsr())["woken"] == 0


@cocotb.test(**TIMEOUT)
@v2
async def test_hold_with_events_pending_does_not_sleep(dut):
    """A hold issued with an event already pending is not entered: resumed at once, "not woken"
    (recent KVM, §4), in both forms."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    env.apics[ap].nmi(True)
    reply = await env.vcpus[ap].msr_protocol(MsrCode.AP_RESET_HOLD_REQ.value, timeout_cycles=30)
    assert unpack(HoldReply, reply) == {"info": MsrCode.AP_RESET_HOLD_RESP, "woken": 0}
    assert env.vcpus[ap].state is VcpuState.RUNNABLE
    resumed, info1, info2 = await env.nae(ap, exit_code=NaeExit.AP_HLT_LOOP.value)
    assert resumed and (info1, info2) == (0, 0) and env.vcpus[ap].state is VcpuState.RUNNABLE
    env.apics[ap].nmi(False)


@cocotb.test(**TIMEOUT)
@v2
async def test_init_racing_the_hold_request(dut):
    """INIT arriving while the vCPU's hold request is still queued waits in the APIC until the
    hold is entered (KVM takes APIC events between exits), so the SIPI after it wakes the vCPU;
    taken earlier, the hold would overwrite INIT_RECEIVED and the wake-up would be lost."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu, apic = env.vcpus[ap], env.apics[ap]
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    # the race is both lines in one cycle: no jitter or stalls may pull them apart (INIT first
    # would be a VMGEXIT from a vCPU in INIT_RECEIVED, which no guest can issue)
    vcpu.set_exact_timing()
    apic.set_exact_timing()
    exit_task = cocotb.start_soon(vcpu.vmgexit(timeout_cycles=200))
    await apic.init()                      # raised in the cycle of the VMGEXIT strobe
    assert vcpu.state is VcpuState.INIT_RECEIVED
    await apic.sipi()
    assert await exit_task, "the wake-up was lost"
    assert unpack(HoldReply, vcpu.rdmsr())["woken"] == 1 and vcpu.state is VcpuState.RUNNABLE


@cocotb.test(**TIMEOUT)
@v2
async def test_init_without_sipi_and_sipi_without_hold(dut):
    """INIT alone leaves a held vCPU in INIT_RECEIVED, not resumed; a SIPI with no INIT before
    it is dropped; INIT+SIPI to a vCPU that is not held just lets it continue, writing nothing
    (the lost wake-up window of §7)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu = env.vcpus[ap]
    # SIPI to a running vCPU: dropped
    await env.apics[ap].sipi(0x10)
    assert vcpu.state is VcpuState.RUNNABLE
    # INIT + SIPI with no hold: RUNNABLE again, MSR untouched, no exit_done, no launch
    await vcpu.wrmsr(0x1234_5000)
    await env.apics[ap].init()
    assert vcpu.state is VcpuState.INIT_RECEIVED
    pulses = [cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=60)),
              cocotb.start_soon(vcpu.wait_launch(timeout_cycles=60))]
    await env.apics[ap].sipi(0x10)
    assert vcpu.state is VcpuState.RUNNABLE and vcpu.rdmsr() == 0x1234_5000
    assert [await p for p in pulses] == [False, False], "exit_done or launch pulsed"
    # held, INIT only: stays INIT_RECEIVED and is not resumed
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=30)
    await env.apics[ap].init()
    assert not await vcpu.wait_exit_done(timeout_cycles=100)
    assert vcpu.state is VcpuState.INIT_RECEIVED
    assert vcpu.rdmsr() == MsrCode.AP_RESET_HOLD_RESP.value
    assert env.guest.accesses == []


@cocotb.test(**TIMEOUT)
@v2
async def test_first_sipi_never_writes_a_reply(dut):
    """The first SIPI of a vCPU starts it from its launch state even if a hold type were set, and
    its vector is ignored (KVM commit 647daca25d24, docs/spec/ghcb.md §4)."""
    env = await Env.start(dut)
    ap = env.ap()
    vcpu = env.vcpus[ap]
    before = vcpu.rdmsr()
    await env.apics[ap].init()
    launched = cocotb.start_soon(vcpu.wait_launch(timeout_cycles=50))
    await env.apics[ap].sipi(0x42)
    assert await launched
    assert vcpu.rdmsr() == before and env.guest.accesses == []
    # a second SIPI (of the INIT-SIPI-SIPI pair) finds it running: dropped
    await env.apics[ap].sipi(0x42)
    assert vcpu.state is VcpuState.RUNNABLE


@cocotb.test(**TIMEOUT)
@v2
async def test_double_hold_takes_the_latest_flavour(dut):
    """A hold issued again after a "not woken" reply re-arms the type: the most recent flavour
    answers the SIPI (MSR after page: the reply travels in the MSR, the page is not written)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu, apic = env.vcpus[ap], env.apics[ap]
    resumed, info1, info2 = await env.nae(ap, exit_code=NaeExit.AP_HLT_LOOP.value)
    assert not resumed and vcpu.state is VcpuState.AP_RESET_HOLD
    apic.nmi(True)
    assert await vcpu.wait_exit_done(timeout_cycles=30)
    apic.nmi(False)
    writes_before = [a for a in env.guest.accesses if a[1]]
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=30)
    await apic.init()
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=50))
    await apic.sipi()
    assert await done
    assert unpack(HoldReply, vcpu.rdmsr())["woken"] == 1
    assert [a for a in env.guest.accesses if a[1]] == writes_before, "the page was written for an MSR hold"


# --- GHCB page protocol ---------------------------------------------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_page_hold_released_by_init_sipi(dut):
    """NAE 0x8000_0004: (0, 0) written at once, vCPU held; at SIPI the hypervisor writes
    SW_EXITINFO1 = 0, SW_EXITINFO2 = 1 with their valid bits into the GHCB page and resumes it
    (§2, the v1 form mainline Linux uses)."""
    env = await Env.start(dut)
    ap = env.ap()
    await env.launch(ap)
    vcpu = env.vcpus[ap]
    resumed, info1, info2 = await env.nae(ap, exit_code=NaeExit.AP_HLT_LOOP.value)
    assert not resumed and vcpu.state is VcpuState.AP_RESET_HOLD
    assert (info1, info2) == (HvResponse.OK.value, 0)
    # junk where the release writes: it must write SW_EXITINFO1/2 and only set its two bits
    base = env.ghcb(ap)
    env.memory.write_int(base + GHCB_OFFSETS["sw_exit_info_1"], 0xAAAA_AAAA_AAAA_AAAA, 8, writer=Owner.KERNEL1)
    env.memory.write_int(base + GHCB_OFFSETS["sw_exit_info_2"], 0, 8, writer=Owner.KERNEL1)
    other_bits = (1 << 127) | (1 << VALID_BIT["rax"])
    env.memory.write(base + GHCB_OFFSETS["valid_bitmap"], other_bits.to_bytes(16, "little"), writer=Owner.KERNEL1)
    await env.apics[ap].init()
    before = len(env.guest.accesses)
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=100))
    await env.apics[ap].sipi()
    assert await done
    info1, info2, bitmap = env.read_reply(ap)
    assert (info1, info2, bitmap) == (0, 1, other_bits | REPLIED_VALID), (hex(info1), info2, hex(bitmap))
    offsets = [(a - base, w) for a, w, _ in env.guest.accesses[before:]]
    bitmap_word = GHCB_OFFSETS["valid_bitmap"] + 12          # bits 96-127: 115 and 116
    info1, info2 = GHCB_OFFSETS["sw_exit_info_1"], GHCB_OFFSETS["sw_exit_info_2"]
    assert offsets == [(bitmap_word, False), (info1, True), (info1 + 4, True), (info2, True),
                       (info2 + 4, True), (bitmap_word, True)], offsets
    assert env.memory.corruptions == []


@cocotb.test(**TIMEOUT)
async def test_malformed_ghcb_requests(dut):
    """ghcb_usage != 0 -> (2, 2); a missing valid bit -> (2, 4); unknown exit code -> (2, 6);
    the vCPU is resumed, never held (§2, §7)."""
    env = await Env.start(dut)
    bsp = env.config.bsp_index
    cases = [
        (dict(exit_code=NaeExit.AP_HLT_LOOP.value, usage=1), MalformedReason.INVALID_USAGE),
        (dict(exit_code=NaeExit.AP_HLT_LOOP.value, valid=("sw_exit_code", "sw_exit_info_1")),
         MalformedReason.MISSING_INPUT),
        (dict(exit_code=NaeExit.AP_HLT_LOOP.value, valid=("sw_exit_info_1", "sw_exit_info_2")),
         MalformedReason.MISSING_INPUT),
        (dict(exit_code=0x8000_0099), MalformedReason.INVALID_EVENT),
        (dict(exit_code=0x1_8000_0004), MalformedReason.INVALID_EVENT),
    ]
    for fields, reason in cases:
        resumed, info1, info2 = await env.nae(bsp, **fields)
        assert resumed and env.vcpus[bsp].state is VcpuState.RUNNABLE, fields
        assert (info1, info2) == (HvResponse.MALFORMED_INPUT.value, reason.value), (fields, info1, info2)
        _, _, bitmap = env.read_reply(bsp)
        assert bitmap == REPLIED_VALID


@cocotb.test(**TIMEOUT)
async def test_ghcb_gpa_zero_or_unmappable(dut):
    """MSR value 0 ("GHCB GPA not set") or a GHCB above the 4 GiB the bus reaches: resumed, nothing
    read or written (§7)."""
    env = await Env.start(dut)
    bsp = env.vcpus[env.config.bsp_index]
    for value in (0, 0x1_0000_0000):
        await bsp.wrmsr(value)
        assert await bsp.vmgexit()
        assert bsp.rdmsr() == value
    assert env.guest.accesses == []


@cocotb.test(**TIMEOUT)
async def test_ap_jump_table(dut):
    """GET before SET returns 0; SET stores the GPA (per VM: any vCPU reads it back); a bad
    SW_EXITINFO1 is (2, 5) (§3, §7)."""
    env = await Env.start(dut)
    bsp = env.config.bsp_index
    ap = env.ap()
    await env.launch(ap)
    code = NaeExit.AP_JUMP_TABLE.value
    assert await env.nae(bsp, exit_code=code, info1=JumpTableOp.GET.value) == (True, 0, 0)
    assert await env.nae(bsp, exit_code=code, info1=JumpTableOp.SET.value, info2=JUMP_TABLE) == (True, 0, 0)
    assert await env.nae(ap, exit_code=code, info1=JumpTableOp.GET.value) == (True, 0, JUMP_TABLE)
    assert await env.nae(ap, exit_code=code, info1=7) == (
        True, HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_INPUT.value)
    assert await env.nae(bsp, exit_code=code, info1=JumpTableOp.GET.value) == (True, 0, JUMP_TABLE)


@cocotb.test(**TIMEOUT)
@v2
async def test_nae_hv_features_and_termination(dut):
    """NAE 0x8000_FFFD answers the feature bitmap in SW_EXITINFO2; NAE 0x8000_FFFE terminates with
    SW_EXITINFO1[3:0] set and [11:4] code (§1)."""
    env = await Env.start(dut)
    bsp = env.config.bsp_index
    assert await env.nae(bsp, exit_code=NaeExit.HV_FEATURES.value) == (True, 0, 0x3)
    ap = env.ap()
    await env.launch(ap)
    resumed, _, _ = await env.nae(ap, exit_code=NaeExit.TERM_REQUEST.value, info1=0x21)
    assert not resumed and env.vcpus[ap].state is VcpuState.STOPPED
    assert env.term() == {"valid": 1, "vcpu": ap, "reason_set": 1, "reason_code": 2, "code": 0,
                          "no_vmsa": 0}


@cocotb.test(**TIMEOUT)
@v2
async def test_page_protocol_waits_for_slow_memory(dut):
    """Guest memory that holds ``req_ready`` low and answers late (three cycles of four stalled):
    the unit waits in each request and response state, makes every access once, resumes the
    vCPU only after its last write is answered, and the replies are those of fast memory."""
    env = await Env.start(dut)
    env.guest.set_pause_generator(itertools.cycle([True, True, True, False]))
    bsp, ap = env.config.bsp_index, env.ap()
    await env.launch(ap)
    code = NaeExit.AP_JUMP_TABLE.value
    assert await env.nae(bsp, exit_code=code, info1=JumpTableOp.SET.value, info2=JUMP_TABLE,
                         timeout_cycles=400) == (True, 0, 0)
    assert await env.nae(ap, exit_code=code, info1=JumpTableOp.GET.value,
                         timeout_cycles=400) == (True, 0, JUMP_TABLE)
    resumed, info1, info2 = await env.nae(ap, exit_code=NaeExit.AP_HLT_LOOP.value, timeout_cycles=400)
    assert not resumed and env.vcpus[ap].state is VcpuState.AP_RESET_HOLD and (info1, info2) == (0, 0)
    await env.apics[ap].init()
    before = len(env.guest.accesses)
    done = cocotb.start_soon(env.vcpus[ap].wait_exit_done(timeout_cycles=400))
    await env.apics[ap].sipi()
    assert await done, "the page hold was not released through slow memory"
    assert len(env.guest.accesses) - before == 6, env.guest.accesses[before:]    # 1 read, 5 writes
    assert env.read_reply(ap) == (0, 1, REPLIED_VALID)
    stalled = env.guest.stalled
    assert stalled["request"] > 0 and stalled["response"] > 0, f"the unit never waited: {stalled}"
    assert env.memory.corruptions == []


# --- version negotiation, the guest's side against the unit ---------------------------------------------
@cocotb.test(**TIMEOUT)
async def test_version_negotiation(dut):
    """Linux's sev_es_negotiate_protocol against the unit's range: overlap -> version
    min(hv_max, 2); no overlap -> the guest terminates with reason (0, 1), which the status port
    shows, and the vCPU stops (docs/spec/ghcb.md §5)."""
    env = await Env.start(dut)
    c = env.config
    bsp = env.vcpus[c.bsp_index]
    if c.min_version <= PROTOCOL_MAX and c.max_version >= PROTOCOL_MIN:
        assert await sev_es_negotiate_protocol(bsp) == (min(c.max_version, PROTOCOL_MAX),
                                                        c.min_version, c.max_version)
        assert not env.term()["valid"]
        return
    try:
        await sev_es_negotiate_protocol(bsp)
    except NegotiationFailed as failure:
        assert (failure.reason_set, failure.reason_code) == (0, 1)
        assert f"{c.min_version}-{c.max_version}" in str(failure)
        assert not await sev_es_terminate(bsp, failure.reason_set, failure.reason_code)
    else:
        raise AssertionError("negotiation succeeded without an overlapping range")
    assert bsp.state is VcpuState.STOPPED
    assert env.term() == {"valid": 1, "vcpu": c.bsp_index, "reason_set": 0, "reason_code": 1,
                          "code": MsrCode.TERM_REQ.value, "no_vmsa": 0}


# --- SEV-SNP AP Creation (docs/spec/ghcb.md §6; KVM sev_snp_ap_creation) ------------------------------
OK = (HvResponse.OK.value, 0)
MISSING = (HvResponse.MALFORMED_INPUT.value, MalformedReason.MISSING_INPUT.value)
INVALID = (HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_INPUT.value)
#: cycles a start may take: the requester's 19 accesses, then the target's reset and start jobs
START_CYCLES = 400


async def wait_start(env, count, *, cycles=START_CYCLES):
    """Wait until ``env.starts`` holds ``count`` entries (False after ``cycles``: the watchdog)."""
    deadline = Deadline(cycles * CLOCK_NS)      # (one ClockCycles awaited in each pass restarted its count)
    while len(env.starts) < count:
        env.started.clear()
        if not await deadline.wait(env.started.wait()):
            break
    return len(env.starts) >= count


@cocotb.test(**TIMEOUT)
@snp
async def test_ap_create_starts_the_target_from_its_vmsa(dut):
    """CREATE for an UNINITIALIZED AP: (0, 0) with just the two reply bits, exactly the GHCB
    accesses of APC_ACCESSES (the unit never reads the VMSA), then ``vmsa_launch`` once with
    the VMSA's GPA on ``vmsa_gpa`` and the AP RUNNABLE; no first-SIPI ``launch``.  From the
    VMGEXIT until that start the unit is not idle (the kick is work), afterwards it is."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    launches = []
    # long enough for the exit and the start under the random stalls of the jitter pass
    idle = cocotb.start_soon(env.idle_for(START_CYCLES, launches=launches))
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, env.apic_id(ap), VMSA_A) == OK
    assert await wait_start(env, 1)
    seen = await idle
    busy = seen.index(0)                                 # the VMGEXIT's first cycle
    settled = seen.index(1, busy)
    assert not any(seen[busy:settled]) and all(seen[settled:]), f"idle: {seen}"
    assert len(launches) == 1 and busy < launches[0] < settled, (launches, seen)   # not idle until started
    assert env.starts == [(ap, "vmsa", VMSA_A)]
    assert env.vcpus[ap].state is VcpuState.RUNNABLE and not env.term()["valid"]
    touched = {a & ~0xFFF for a, _, _ in env.guest.accesses}
    assert touched == {env.ghcb(bsp)}, f"the unit reached beyond the GHCB: {sorted(map(hex, touched))}"
    # the vCPU runs its new VMSA: its exits are served as any other's
    assert await env.vcpus[ap].msr_protocol(MsrCode.SEV_INFO_REQ.value) & 0xFFF == MsrCode.SEV_INFO_RESP.value


@cocotb.test(**TIMEOUT)
@snp
async def test_ap_creation_refusals(dut):
    """Each request KVM refuses, bit-exact: RAX not valid for anything but DESTROY (2, 4);
    unknown APIC ID, bad request (a VMPL in bits 19:16 included), VMSA GPA not page-aligned,
    at or above 4 GiB, 2 MiB-aligned (0 too), SEV features not the VM's: (2, 5).  The target
    is untouched: no start, no pending creation (its INIT-SIPI then launches its launch VMSA)."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    target = env.apic_id(ap)
    unknown = max(env.config.vcpu_apic_ids) + 1
    cases = [
        (dict(op=ApCreationOp.CREATE, target=target, gpa=VMSA_A, rax_valid=False), MISSING),
        (dict(op=ApCreationOp.CREATE_ON_INIT, target=target, gpa=VMSA_A, rax=None), MISSING),
        (dict(op=7, target=unknown, gpa=VMSA_A, rax=None), MISSING),         # RAX checked first
        (dict(op=ApCreationOp.CREATE, target=unknown, gpa=VMSA_A), INVALID),
        (dict(op=ApCreationOp.DESTROY, target=unknown, rax=None), INVALID),
        (dict(op=3, target=target, gpa=VMSA_A), INVALID),
        (dict(op=(1 << 16) | 1, target=target, gpa=VMSA_A), INVALID),       # CREATE at VMPL1
        (dict(op=ApCreationOp.CREATE, target=target, gpa=VMSA_A + 0x10), INVALID),
        (dict(op=ApCreationOp.CREATE, target=target, gpa=0x1_0000_0000 | VMSA_A), INVALID),
        (dict(op=ApCreationOp.CREATE, target=target, gpa=0x0040_0000), INVALID),
        (dict(op=ApCreationOp.CREATE_ON_INIT, target=target, gpa=0), INVALID),
        (dict(op=ApCreationOp.CREATE, target=target, gpa=VMSA_A,
              rax=env.config.vmsa_features ^ 0x20), INVALID),
        (dict(op=ApCreationOp.CREATE, target=target, gpa=VMSA_A, rax=0), INVALID),
    ]
    for case, reply in cases:
        assert await env.ap_creation(bsp, **case) == reply, case
    for _ in range(50):
        await RisingEdge(dut.clk)
    assert env.starts == [] and env.vcpus[ap].state is VcpuState.UNINITIALIZED
    assert not env.term()["valid"] and dut.idle.value == 1
    await env.launch(ap)                                  # nothing was left pending
    assert env.starts == [(ap, "launch", None)]


@cocotb.test(**TIMEOUT)
@applies_to(lambda c: c.max_version >= 2 and not c.snp)
async def test_ap_creation_on_an_sev_es_vm(dut):
    """An SEV-ES VM: AP_CREATION is (2, 4) whatever it asks (KVM: "!is_sev_snp_guest" with the
    reason still MISSING_INPUT), with no extra reads; nobody starts."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, ap, VMSA_A) == MISSING
    assert await env.ap_creation(bsp, ApCreationOp.DESTROY, ap, rax=None) == MISSING
    for _ in range(50):
        await RisingEdge(dut.clk)
    assert env.starts == [] and env.vcpus[ap].state is VcpuState.UNINITIALIZED


@cocotb.test(**TIMEOUT)
@v1_only
async def test_ap_creation_unknown_to_a_version1_hypervisor(dut):
    """max_version 1 (KVM before SNP): AP_CREATION is an exit it does not know, (2, 6)."""
    env = await Env.start(dut)
    assert await env.ap_creation(env.config.bsp_index, ApCreationOp.CREATE, 1, VMSA_A) == (
        HvResponse.MALFORMED_INPUT.value, MalformedReason.INVALID_EVENT.value)


@cocotb.test(**TIMEOUT)
@snp
async def test_create_on_init_waits_for_the_next_init(dut):
    """CREATE_ON_INIT changes nothing (not even ``idle``) until the target's next INIT: INIT
    then leaves an AP in INIT_RECEIVED with the new VMSA, which starts at the SIPI.  An INIT
    taken before the request does not apply it (the SIPI resumes the old state); the one after
    does.  For the BSP, INIT itself starts it."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    vcpu, apic = env.vcpus[ap], env.apics[ap]
    await env.launch(ap)                                       # the launch VMSA runs
    assert await env.ap_creation(bsp, ApCreationOp.CREATE_ON_INIT, env.apic_id(ap), VMSA_A) == OK
    assert await env.idle_for(40) == [1] * 40
    assert vcpu.state is VcpuState.RUNNABLE and env.starts == [(ap, "launch", None)]
    await apic.init()
    assert await wait_for_state(env, ap, VcpuState.INIT_RECEIVED)
    assert env.starts == [(ap, "launch", None)]
    await apic.sipi()
    assert await wait_start(env, 2)
    assert env.starts[1] == (ap, "vmsa", VMSA_A) and vcpu.state is VcpuState.RUNNABLE
    # INIT first, then the request: the SIPI after them resumes what ran; the next INIT applies it
    await apic.init()
    assert vcpu.state is VcpuState.INIT_RECEIVED
    assert await env.ap_creation(bsp, ApCreationOp.CREATE_ON_INIT, env.apic_id(ap), VMSA_B) == OK
    await apic.sipi()
    assert vcpu.state is VcpuState.RUNNABLE
    assert not await wait_start(env, 3, cycles=60)
    await apic.init()
    await apic.sipi()
    assert await wait_start(env, 3) and env.starts[2] == (ap, "vmsa", VMSA_B)
    # the BSP: INIT starts it at once from the new VMSA
    assert await env.ap_creation(ap, ApCreationOp.CREATE_ON_INIT, env.apic_id(bsp), VMSA_C) == OK
    assert env.vcpus[bsp].state is VcpuState.RUNNABLE and len(env.starts) == 3
    await env.apics[bsp].init()
    assert await wait_start(env, 4) and env.starts[3] == (bsp, "vmsa", VMSA_C)
    assert env.vcpus[bsp].state is VcpuState.RUNNABLE and not env.term()["valid"]


async def wait_for_state(env, i, state, cycles=START_CYCLES):
    for _ in range(cycles):
        if env.vcpus[i].state is state:
            return True
        await RisingEdge(env.dut.clk)
    return False


@cocotb.test(**TIMEOUT)
@snp
async def test_destroy_then_init_sipi(dut):
    """DESTROY (no RAX needed): the target stops at once, HALTED with no VMSA, and the unit is
    idle.  INIT-SIPI to it does not start it: made runnable without a VMSA, KVM refuses the
    VMRUN and KVM_RUN fails (``pre_sev_run``), which ends the VM: STOPPED, ``term.no_vmsa``."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, env.apic_id(ap), VMSA_A) == OK
    assert await wait_start(env, 1)
    assert await env.ap_creation(bsp, ApCreationOp.DESTROY, env.apic_id(ap), VMSA_A, rax=None) == OK
    assert await wait_for_state(env, ap, VcpuState.HALTED)
    seen = await env.idle_for(20)                       # the reset job ends, then nothing is due
    assert 1 in seen and all(seen[seen.index(1):]), seen
    assert env.vcpus[ap].state is VcpuState.HALTED and env.starts == [(ap, "vmsa", VMSA_A)]
    await env.apics[ap].init()
    assert await wait_for_state(env, ap, VcpuState.INIT_RECEIVED)
    await env.apics[ap].sipi()
    assert await wait_for_state(env, ap, VcpuState.STOPPED)
    assert env.starts == [(ap, "vmsa", VMSA_A)]
    assert env.term() == {"valid": 1, "vcpu": ap, "reason_set": 0, "reason_code": 0, "code": 0,
                          "no_vmsa": 1}


@cocotb.test(**TIMEOUT)
@snp
async def test_second_create_replaces_the_vmsa(dut):
    """A second CREATE replaces the running VMSA: the target drops what it ran (even an AP reset
    hold, which is never answered) and starts from the new one, each start once, in order."""
    env = await Env.start(dut)
    env.watch_starts()
    bsp, ap = env.config.bsp_index, env.ap()
    vcpu = env.vcpus[ap]
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, env.apic_id(ap), VMSA_A) == OK
    assert await wait_start(env, 1)
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, env.apic_id(ap), VMSA_B) == OK
    assert await wait_start(env, 2)
    # the AP parks in an MSR-protocol hold; CREATE ends it with a new VMSA, not with a reply
    await vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
    assert not await vcpu.vmgexit(timeout_cycles=50)
    assert vcpu.state is VcpuState.AP_RESET_HOLD
    done = cocotb.start_soon(vcpu.wait_exit_done(timeout_cycles=START_CYCLES))
    assert await env.ap_creation(bsp, ApCreationOp.CREATE, env.apic_id(ap), VMSA_C) == OK
    assert await wait_start(env, 3)
    assert not await done, "the hold was answered"
    assert env.starts == [(ap, "vmsa", VMSA_A), (ap, "vmsa", VMSA_B), (ap, "vmsa", VMSA_C)]
    assert vcpu.state is VcpuState.RUNNABLE
    assert vcpu.rdmsr() == MsrCode.AP_RESET_HOLD_RESP.value      # the preset reply, untouched
    # the held vCPU's hold type is gone: an INIT-SIPI now is a plain one (nothing written)
    await env.apics[ap].init()
    await env.apics[ap].sipi()
    assert vcpu.state is VcpuState.RUNNABLE and len(env.starts) == 3 and not env.term()["valid"]
