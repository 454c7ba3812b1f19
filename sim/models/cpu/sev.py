"""SEV-ES guest software (docs/spec/ghcb.md §3, §5): OVMF-like firmware and a Linux-like kernel whose
register state the hypervisor cannot touch.

* Firmware reserves the AP jump table page, SETs it through the GHCB before handing over, and
  its SEV-ES reset block (where every AP's launch state starts) reads CS:IP from the table and
  jumps there.
* The kernel negotiates the GHCB protocol (``sev_es_negotiate_protocol``: terminate (0, 1) on no
  overlap), points the jump table at its real-mode trampoline, brings APs up with INIT-SIPI-SIPI
  (the first SIPI starts an AP from its launch state), and parks offlined APs in AP reset hold:
  mainline's GHCB-page form (``sev_es_ap_hlt_loop``, woken straight back into
  ``start_secondary``), or, with the SEV-ES kexec series and protocol version 2, the MSR form
  running from the jump table page (``jump_table_parking``), woken through the table's CS:IP.
* kexec is refused unless the MSR-form parking is installed (or there is one CPU), as the series
  does: with the page form a parked AP's GHCB belongs to the next kernel (Joerg Roedel, LKML May 2021;
  docs/spec/ghcb.md §2).
* An SEV-SNP kernel (:class:`SnpKernel`, docs/spec/ghcb.md §6) needs GHCB protocol 2 and the
  hypervisor's SNP feature, registers each CPU's GHCB, and starts every AP with SNP AP Creation
  instead of INIT-SIPI (Linux arch/x86/coco/sev/core.c ``wakeup_cpu_via_vmgexit``): a fresh
  VMSA in real mode at the trampoline, in the second page of an 8 KiB allocation
  (``snp_alloc_vmsa_page``: never 2 MiB-aligned, the RMP erratum), CREATE through the GHCB page
  (``vmgexit_ap_control``).  No AP jump table, no INIT, no SIPI.  kexec is mainline's
  ``snp_kexec_begin``/``snp_kexec_finish``: the APs halt, every AP with a VMSA of this kernel is
  destroyed (``shutdown_all_aps``), the shared pages become private again; the next kernel
  creates the APs anew.
"""

from apwake.rtl.ghcb_msr.layouts import (DEFAULT_VMSA_FEATURES, HV_FEATURES, ApCreationOp,
                                         ApCreationRequest, GhcbMsr, HoldReply, JumpTableEntry,
                                         JumpTableOp, MsrCode, NaeExit, PROTOCOL_MAX, PROTOCOL_MIN,
                                         SevInfo, Termination)

from apwake.sim.harness.codec import pack, unpack
from apwake.sim.vip.ghcb_msr.page import is_valid, read_reply, write_request
from apwake.sim.vip.memory import PAGE_SIZE, Owner
from .linux import KERNEL_ENTRY, TRAMPOLINE, BootMethod, Firmware, Kernel
from .model import SEV_ES_RESET
from .state import EFER, ArchState, DescriptorTable, Segment
from .vmsa import encode_vmsa

__all__ = ["SevFirmware", "SevKernel", "SnpKernel", "NegotiationFailed", "sev_es_negotiate_protocol",
           "sev_es_terminate", "JUMP_TABLE", "FIRMWARE_GHCB", "PARK_BLOB_OFFSET", "ghcb_page",
           "snp_ap_vmsa", "VMSA_POOL"]

#: the AP jump table: one firmware-reserved page below 4 GiB (OVMF: EfiReservedMemoryType)
JUMP_TABLE = 0x0081_0000
#: the firmware's own GHCB (shared) for its SET
FIRMWARE_GHCB = 0x0082_0000
#: where the kexec series puts its parking code in the table page
PARK_BLOB_OFFSET = 0x10
#: per-CPU GHCB pages of a kernel, from its data base
_GHCB_PAGES = 0x10000


def ghcb_page(kernel_data, n):
    """CPU number ``n``'s GHCB page of a kernel whose data starts at ``kernel_data``."""
    return kernel_data + _GHCB_PAGES + PAGE_SIZE * n


class NegotiationFailed(Exception):
    def __init__(self, message, reason_set, reason_code):
        super().__init__(message)
        self.reason_set, self.reason_code = reason_set, reason_code


async def sev_es_negotiate_protocol(vcpu, *, timeout_cycles=200):
    """MSR 0x002, VMGEXIT; the hypervisor's range must overlap [1, 2]; returns
    ``(version, hv_min, hv_max)`` with version = min(hv_max, 2), or raises
    :class:`NegotiationFailed` with the termination reason Linux uses (0, 1).
    ``timeout_cycles`` bounds the wait for the reply (None: a guest, which waits as long as the
    hypervisor takes; the unit serves one exit at a time, so behind the page-protocol exits of
    the other vCPUs, under a scenario watchdog)."""
    reply = unpack(SevInfo, await vcpu.msr_protocol(MsrCode.SEV_INFO_REQ.value,
                                                    timeout_cycles=timeout_cycles))
    if reply["info"] is not MsrCode.SEV_INFO_RESP:
        raise NegotiationFailed(f"SEV information request answered with code {reply['info']!r}", 0, 1)
    lo, hi = reply["min_version"], reply["max_version"]
    if hi < PROTOCOL_MIN or lo > PROTOCOL_MAX:
        raise NegotiationFailed(f"GHCB protocol range {lo}-{hi} offered by the hypervisor does not "
                                f"overlap the guest's {PROTOCOL_MIN}-{PROTOCOL_MAX}", 0, 1)
    return min(hi, PROTOCOL_MAX), lo, hi


async def sev_es_terminate(vcpu, reason_set, reason_code):
    """MSR 0x100 with the reason, VMGEXIT: never answered (the CPU then halts for ever)."""
    await vcpu.wrmsr(pack(Termination, info=MsrCode.TERM_REQ, reason_set=reason_set,
                          reason_code=reason_code))
    return await vcpu.vmgexit(timeout_cycles=50)


async def ghcb_call(cpu, ghcb, exit_code, info1=0, info2=0, *, writer, rax=None):
    """An NAE event through the GHCB page at ``ghcb`` (RAX set and valid when ``rax`` is given):
    ``(SW_EXITINFO1, SW_EXITINFO2, bitmap)``."""
    memory = cpu.machine.memory
    write_request(memory, ghcb, exit_code=exit_code, info1=info1, info2=info2, writer=writer, rax=rax)
    await cpu.vcpu.wrmsr(ghcb)
    await cpu.vmgexit()
    return read_reply(memory, ghcb)


def jump_table_target(memory, table):
    """``(cs, ip)`` from the table's first dword."""
    entry = unpack(JumpTableEntry, memory.read_int(table, 4))
    return entry["cs"], entry["ip"]


class SevFirmware(Firmware):
    def __init__(self, memory, kernel_entry=KERNEL_ENTRY, *, madt=b"", handoff=()):
        super().__init__(memory, kernel_entry, madt, handoff=handoff)
        # a page set aside for a protocol between software layers: OS writes its CS:IP there
        memory.set_owner(JUMP_TABLE, PAGE_SIZE, Owner.RESERVED)
        memory.set_owner(FIRMWARE_GHCB, PAGE_SIZE, Owner.SHARED)
        memory.load_program(SEV_ES_RESET, self.ap_reset_block, owner=Owner.FIRMWARE,
                            name="firmware: SEV-ES AP reset block")

    async def reset_vector(self, cpu):
        if self.resets == 0:
            info1, _, _ = await ghcb_call(cpu, FIRMWARE_GHCB, NaeExit.AP_JUMP_TABLE.value,
                                          JumpTableOp.SET.value, JUMP_TABLE, writer=Owner.FIRMWARE)
            if info1:
                cpu.fail(f"firmware: AP jump table SET failed (SW_EXITINFO1 {info1:#x})")
        await super().reset_vector(cpu)

    async def ap_reset_block(self, cpu):
        """A launched AP: real mode, far jump to the jump table's CS:IP."""
        cs, ip = jump_table_target(cpu.machine.memory, JUMP_TABLE)
        if (cs, ip) == (0, 0):
            cpu.where = "firmware: AP reset block, AP jump table empty"
            cpu.fail(f"{cpu.name}: launched but the AP jump table holds no CS:IP")
            return
        cpu.entry = (cs, ip)
        cpu.note(f"jump table: CS:IP {cs:#06x}:{ip:#06x}")
        cpu.far_jump_real(cs, ip)


def make_park_blob(memory, table):
    """The SEV-ES kexec series' parking code, copied into the jump table page: MSR AP reset hold
    until woken by INIT-SIPI, then the far jump to the table's CS:IP.  It belongs to no kernel, so
    it survives kexec."""

    async def park(cpu):
        cpu.where = "AP jump table page: MSR AP reset hold loop"
        while True:
            cpu.note("AP reset hold (MSR form)")
            await cpu.vcpu.wrmsr(MsrCode.AP_RESET_HOLD_REQ.value)
            await cpu.vmgexit()
            reply = unpack(HoldReply, cpu.vcpu.rdmsr())
            if reply["info"] is MsrCode.AP_RESET_HOLD_RESP and reply["woken"]:
                break
            cpu.note("reset hold: not woken, hold again")
        cs, ip = jump_table_target(memory, table)
        cpu.entry = (cs, ip)
        cpu.note(f"woken: far jump to jump table CS:IP {cs:#06x}:{ip:#06x}")
        cpu.far_jump_real(cs, ip)

    return park


class SevKernel(Kernel):
    """A Linux-like SEV-ES guest kernel (modern INIT-SIPI-SIPI timing).

    ``jump_table_parking``: the SEV-ES kexec series (park offlined/stopped APs with the MSR form
    in the jump table page when the negotiated version is 2); False is mainline.
    """

    def __init__(self, machine, *, jump_table_parking=True, **kwargs):
        super().__init__(machine, BootMethod.MODERN, **kwargs)
        self.jump_table_parking = jump_table_parking
        self.ghcb_version = self.hv_range = self.jump_table = None
        self.park_blob = None
        self.memory.set_owner(*self.memory_ranges()[-1], Owner.SHARED)

    def memory_ranges(self):
        """The kernel's text and data, and its per-CPU GHCB pages (shared while it runs)."""
        return [*super().memory_ranges(),
                (self.ghcb_page(0), PAGE_SIZE * len(self.cpuid_to_apicid))]

    def ghcb_page(self, n):
        return ghcb_page(self.data, n)

    @property
    def hold_form(self):
        return "msr" if self.park_blob is not None else "ghcb"

    async def kernel_main(self, cpu):
        if await self.negotiate(cpu):
            await self.sev_es_setup_ap_jump_table(cpu)
            await super().kernel_main(cpu)

    async def negotiate(self, cpu):
        """``sev_es_negotiate_protocol``; False after terminating on a failure."""
        cpu.where = "sev_es_negotiate_protocol"
        try:
            self.ghcb_version, lo, hi = await sev_es_negotiate_protocol(cpu.vcpu, timeout_cycles=None)
        except NegotiationFailed as failure:
            await self.terminate(cpu, str(failure), failure.reason_set, failure.reason_code)
            return False
        self.hv_range = (lo, hi)
        cpu.note(f"GHCB protocol version {self.ghcb_version} (hypervisor offers {lo}-{hi})")
        return True

    async def terminate(self, cpu, why, reason_set, reason_code):
        """A boot failure: ``sev_es_terminate`` with the reason, then hlt for ever."""
        message = f"{self.name}: {why}: terminating ({reason_set}, {reason_code})"
        self.boot_failures.append(message)
        cpu.fail(message)
        cpu.where = "sev_es_terminate: hlt for ever"
        await sev_es_terminate(cpu.vcpu, reason_set, reason_code)
        self.booted.set()

    async def sev_es_setup_ap_jump_table(self, cpu):
        """GET the table, write CS:IP of the trampoline into it; with the kexec series and version
        2 also install the parking code (a core_initcall there)."""
        _, table, _ = await ghcb_call(cpu, self.ghcb_page(0), NaeExit.AP_JUMP_TABLE.value,
                                      JumpTableOp.GET.value, writer=self.owner)
        if table == 0:
            cpu.note("AP jump table: none (UP guest)")
            return
        if table % PAGE_SIZE:
            cpu.fail(f"Failed to get SEV-ES AP Jump Table: {table:#x} is not page-aligned")
            return
        self.jump_table = table
        self.memory.write_int(table, pack(JumpTableEntry, cs=TRAMPOLINE >> 4, ip=0), 4, writer=self.owner)
        if self.jump_table_parking and self.ghcb_version >= 2 and table + PAGE_SIZE <= 1 << 32:
            self.park_blob = table + PARK_BLOB_OFFSET
            self.memory.load_program(self.park_blob, make_park_blob(self.memory, table),
                                     owner=Owner.RESERVED, name="AP jump table: parking code")
        cpu.note(f"AP jump table {table:#x}: CS:IP {TRAMPOLINE >> 4:#06x}:0000"
                 + (", MSR-form parking installed" if self.park_blob else ""))

    # --- offline and kexec -----------------------------------------------------------------------
    async def play_dead(self, cpu, n):
        cpu.cli()
        what = "offline" if cpu.should_die else "stop_this_cpu"
        if self.park_blob is not None:
            cpu.note(f"{what}: to the AP jump table's parking code")
            cpu.jump(self.park_blob)
        cpu.note(f"{what}: sev_es_play_dead (GHCB-page AP reset hold)")
        await self.sev_es_ap_hlt_loop(cpu, n)

    async def sev_es_ap_hlt_loop(self, cpu, n):
        ghcb = self.ghcb_page(n)
        while True:
            cpu.where = f"{self.name}: sev_es_ap_hlt_loop (GHCB {ghcb:#x})"
            _, info2, bitmap = await ghcb_call(cpu, ghcb, NaeExit.AP_HLT_LOOP.value, writer=self.owner)
            if is_valid(bitmap, "sw_exit_info_2") and info2:
                break
            cpu.note("reset hold: not woken, hold again")
        if self.memory.owner(self.entry) is not self.owner:
            # the AP resumes at its encrypted RIP in this kernel's text, which is no longer ours
            cpu.where = f"{self.name}'s sev_es_ap_hlt_loop (memory now {self.memory.owner(self.entry).value}'s)"
            cpu.fail(f"{cpu.name} woke in {self.name}'s hlt loop at its old RIP, in memory "
                     f"{self.memory.owner(self.entry).value} now owns: stale code")
            return
        cpu.note("woken: soft_restart_cpu")
        await self.trampoline(cpu)

    async def cpu_down(self, cpu, n):
        apic_id = self.cpuid_to_apicid[n]
        self._model_of(apic_id).should_die = True
        await self.smp_call_function_single(cpu, n, ("cpu_down", n))
        if not await self.wait_online(n, False, "cpu_down: wait for play_dead"):
            return f"CPU {n} did not go offline"
        return None

    async def cpu_up(self, cpu, n):
        apic_id = self.cpuid_to_apicid[n]
        if not await self.wakeup_secondary_cpu_via_init(cpu, apic_id):
            return f"CPU {n}: INIT-SIPI-SIPI not delivered"
        if not await self.wait_online(n, True, "cpu_up: wait for callin"):
            return f"CPU {n} did not come online"
        return None

    async def kexec(self, cpu, *, force=False):
        """Refused (the message is returned) unless the MSR-form parking is installed or there is
        one CPU; ``force`` goes ahead anyway, to show why."""
        if self.park_blob is None and len(self.cpuid_to_apicid) > 1:
            message = (f"kexec refused: SEV-ES guest on GHCB protocol version {self.ghcb_version} "
                       f"has no MSR-based AP reset hold in the AP jump table; parked APs would "
                       f"wake into the next kernel's memory")
            if not force:
                cpu.note(message)
                return message
            cpu.note("kexec forced past the refusal")
        await super().kexec(cpu)
        return None


# --- SEV-SNP ---------------------------------------------------------------------------------------

#: where an SNP kernel allocates the VMSAs of its APs, from its data base: a 2 MiB-aligned pool
#: clear of the kernel's tables and GHCB pages (kernel 1's ends below kernel 2's)
VMSA_POOL = 0x1000_0000
#: Linux ``AP_INIT_*`` (arch/x86/coco/sev/core.c), the APM's "Processor Initialization State"
_AP_INIT = {"dr7": 0x400, "dr6": 0xFFFF_0FF0, "g_pat": 0x0007_0406_0007_0406, "xcr0": 0x1,
            "mxcsr": 0x1F80, "x87_ftw": 0x5555, "x87_fcw": 0x40}
#: segment attributes Linux gives a fresh AP's VMSA: CS present, S, readable code; data present,
#: S, writable; LDTR present, type 2; TR present, type 3
_INIT_CS_ATTRIBS, _INIT_DS_ATTRIBS, _INIT_LDTR_ATTRIBS, _INIT_TR_ATTRIBS = 0x9A, 0x92, 0x82, 0x83
_CR0_AP_INIT = 0x6000_0010
_CR4_MCE = 1 << 6


def snp_ap_vmsa(start_ip, *, cr4, sev_features, vmpl=0):
    """The VMSA page Linux's ``wakeup_cpu_via_vmgexit`` fills for an AP (bytes, 4 KiB): real
    mode with CS = (start_ip >> 12) << 8, CS base = start_ip & ~0xFFF, RIP = start_ip & 0xFFF,
    limits 0xFFFF, CR0 0x6000_0010, CR4 the BSP's MCE bit, EFER = SVME, RFLAGS 2, and the
    APM's INIT values of the debug, PAT, XCR0 and x87/SSE control registers."""
    vector = start_ip >> 12
    state = ArchState(cr0=_CR0_AP_INIT, cr4=cr4 & _CR4_MCE, efer=EFER["SVME"], rip=start_ip & 0xFFF,
                      rflags=0x2)
    state.cs = Segment(selector=vector << 8, base=vector << 12, limit=0xFFFF, attrib=_INIT_CS_ATTRIBS)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(state, name, Segment(selector=0, base=0, limit=0xFFFF, attrib=_INIT_DS_ATTRIBS))
    state.gdtr = state.idtr = DescriptorTable(base=0, limit=0xFFFF)
    return encode_vmsa(state, ldtr={"limit": 0xFFFF, "attrib": _INIT_LDTR_ATTRIBS},
                       tr={"limit": 0xFFFF, "attrib": _INIT_TR_ATTRIBS}, vmpl=vmpl,
                       sev_features=sev_features, **_AP_INIT)


class SnpKernel(SevKernel):
    """A Linux-like SEV-SNP guest kernel: APs started with SNP AP Creation (docs/spec/ghcb.md §6).

    Parameters
    ----------
    vmsa_workaround : bool
        Linux's ``snp_alloc_vmsa_page``: 8 KiB, 8 KiB-aligned, the second page used (it cannot
        be 2 MiB-aligned).  False: one page from the 2 MiB-aligned pool, as a kernel without the
        erratum workaround could get: the hypervisor refuses the first AP's VMSA.
    sev_features : int or None
        What the kernel reads as SEV_STATUS >> 2 and puts in each VMSA; default the VM's
        (``machine.sev_config.vmsa_features``).

    Attributes
    ----------
    vmsa : dict
        CPU number -> the GPA of the AP's current VMSA (Linux ``per_cpu(sev_vmsa)``); None after a
        failed creation.
    ap_creation : list of dict
        Every AP Creation request: ``op``, ``cpu`` (APIC ID), ``vmsa``, ``reply``
        ([SW_EXITINFO1, SW_EXITINFO2]).
    """

    def __init__(self, machine, *, vmsa_workaround=True, sev_features=None, **kwargs):
        super().__init__(machine, jump_table_parking=False, **kwargs)
        config = getattr(machine, "sev_config", None)
        self.sev_features = (sev_features if sev_features is not None else
                             config.vmsa_features if config is not None else DEFAULT_VMSA_FEATURES)
        self.vmsa_workaround = vmsa_workaround
        self.vmsa = {}
        self.ap_creation = []
        self.hv_features = None
        self._vmsa_next = self.data + VMSA_POOL
        pool = self.memory_ranges()[2]
        self.memory.set_owner(*pool, self.owner)

    def memory_ranges(self):
        """Text, data, the VMSA pool (private), the GHCB pages (shared while it runs, last)."""
        text, data, ghcbs = super().memory_ranges()
        return [text, data, (self.data + VMSA_POOL, self._vmsa_pool_size()), ghcbs]

    def _vmsa_pool_size(self):
        """One 8 KiB allocation per CPU and 2 MiB for re-creations (the model never reuses a
        freed VMSA), in whole 2 MiB: below the next kernel's pool at 4096 CPUs."""
        need = 2 * PAGE_SIZE * max(len(self.cpuid_to_apicid), 1) + (2 << 20)
        return -(-need // (2 << 20)) * (2 << 20)

    # --- boot --------------------------------------------------------------------------------
    async def kernel_main(self, cpu):
        if not await self.negotiate(cpu):
            return
        # SNP is GHCB version 2, which mandates the HV features query (sev_es_init_vc_handling)
        if self.ghcb_version < 2:
            await self.terminate(cpu, f"SNP needs GHCB protocol 2, the hypervisor offers "
                                      f"{self.hv_range[0]}-{self.hv_range[1]}", 0, 2)
            return
        reply = unpack(GhcbMsr, await cpu.vcpu.msr_protocol(MsrCode.HV_FEATURES_REQ.value,
                                                            timeout_cycles=None))
        self.hv_features = reply["data"] if reply["info"] is MsrCode.HV_FEATURES_RESP else 0
        if not self.hv_features & HV_FEATURES["snp"]:
            await self.terminate(cpu, f"hypervisor features {self.hv_features:#x} lack SEV-SNP", 0, 2)
            return
        cpu.note(f"hypervisor features {self.hv_features:#x}")
        if not await self.snp_register_ghcb(cpu, 0):
            return
        await Kernel.kernel_main(self, cpu)          # no AP jump table

    async def snp_register_ghcb(self, cpu, n):
        """MSR 0x012 with CPU ``n``'s GHCB frame; the reply must echo it, else terminate (1, 0)."""
        gfn = self.ghcb_page(n) >> 12
        reply = unpack(GhcbMsr, await cpu.vcpu.msr_protocol(
            pack(GhcbMsr, info=MsrCode.REG_GPA_REQ, data=gfn), timeout_cycles=None))
        if reply != {"info": MsrCode.REG_GPA_RESP, "data": gfn}:
            await self.terminate(cpu, f"GHCB registration of {self.ghcb_page(n):#x} refused", 1, 0)
            return False
        return True

    async def start_secondary(self, cpu):
        """setup_ghcb on the AP (its GHCB registered), then start_secondary."""
        n = self.percpu_cpu(cpu.arch.value(f"{self.percpu_segment}.base"))
        if await self.snp_register_ghcb(cpu, n):
            await super().start_secondary(cpu)

    async def smp_boot(self, cpu, aps):
        """do_boot_cpu with ``wakeup_secondary_cpu`` = ``wakeup_cpu_via_vmgexit``."""
        for apic_id in aps:
            if await self.wakeup_cpu_via_vmgexit(cpu, apic_id) is None:
                await self.wait_online(self.cpuid_to_apicid.index(apic_id), True,
                                       "do_boot_cpu: wait for callin")

    async def cpu_up(self, cpu, n):
        error = await self.wakeup_cpu_via_vmgexit(cpu, self.cpuid_to_apicid[n])
        if error:
            return error
        if not await self.wait_online(n, True, "cpu_up: wait for callin"):
            return f"CPU {n} did not come online"
        return None

    # --- AP Creation (arch/x86/coco/sev/core.c) -------------------------------------------------
    def snp_alloc_vmsa_page(self):
        """The GPA of a fresh VMSA page: the second page of an 8 KiB, 8 KiB-aligned allocation
        (the first may be 2 MiB-aligned and is freed), or with ``vmsa_workaround`` off one page."""
        size = 2 * PAGE_SIZE if self.vmsa_workaround else PAGE_SIZE
        base = self._vmsa_next
        pool, pool_size = self.data + VMSA_POOL, self._vmsa_pool_size()
        if base + size > pool + pool_size:
            raise RuntimeError(f"{self.name}: VMSA pool at {pool:#x} ({pool_size:#x} bytes) exhausted")
        self._vmsa_next += size
        return base + size - PAGE_SIZE

    async def vmgexit_ap_control(self, cpu, op, vmsa, apic_id):
        """AP_CREATION through the calling CPU's GHCB: RAX = SEV features (not for DESTROY),
        SW_EXITINFO1 = APIC ID << 32 | VMPL << 16 | request, SW_EXITINFO2 = the VMSA's GPA.
        None, or the error ("SNP AP CREATE error") when SW_EXITINFO1[31:0] is not 0."""
        create = op is not ApCreationOp.DESTROY
        n = self.cpuid_to_apicid.index(cpu.apic_id)
        info1 = pack(ApCreationRequest, request=op, apic_id=apic_id)
        reply1, reply2, bitmap = await ghcb_call(cpu, self.ghcb_page(n), NaeExit.AP_CREATION.value,
                                                 info1, vmsa, writer=self.owner,
                                                 rax=self.sev_features if create else None)
        self.ap_creation.append({"op": op.name, "cpu": apic_id, "vmsa": vmsa, "reply": [reply1, reply2]})
        if not is_valid(bitmap, "sw_exit_info_1") or reply1 & 0xFFFF_FFFF:
            message = (f"SNP AP {'CREATE' if create else 'DESTROY'} error for APIC ID {apic_id:#x}, "
                       f"VMSA {vmsa:#x}: SW_EXITINFO1/2 = ({reply1:#x}, {reply2:#x})")
            cpu.note(message)
            return message
        return None

    def snp_cleanup_vmsa(self, vmsa):
        """Clear the VMSA bit (RMPADJUST) and free the page: the model keeps no RMP and never
        reuses the pool, so nothing is left to do but forget it."""

    async def wakeup_cpu_via_vmgexit(self, cpu, apic_id, start_ip=TRAMPOLINE):
        """Start the AP ``apic_id`` from a fresh VMSA: None, or the error (the AP is not started)."""
        n = self.cpuid_to_apicid.index(apic_id)
        target = self._model_of(apic_id)
        if not self.hv_features & HV_FEATURES["snp_ap_creation"]:
            message = f"{self.name}: hypervisor lacks SNP AP Creation: CPU {n} not started (-EOPNOTSUPP)"
            self.machine.fail(target, message)
            return message
        current = self.vmsa.get(n)
        vmsa = self.snp_alloc_vmsa_page()
        self.memory.write(vmsa, snp_ap_vmsa(start_ip, cr4=cpu.arch.cr4, sev_features=self.sev_features),
                          writer=self.owner)
        cpu.where = f"wakeup_cpu_via_vmgexit: AP Creation for APIC ID {apic_id:#x}"
        error = await self.vmgexit_ap_control(cpu, ApCreationOp.CREATE, vmsa, apic_id)
        if error:
            self.snp_cleanup_vmsa(vmsa)
            vmsa = None
            self.boot_failures.append(error)
            self.machine.fail(target, f"{self.name}: {error}")
        if current is not None:
            self.snp_cleanup_vmsa(current)
        self.vmsa[n] = vmsa
        return error

    # --- offline and kexec ---------------------------------------------------------------------
    async def play_dead(self, cpu, n):
        """Offline: ``sev_es_play_dead`` (the GHCB-page AP reset hold; AP Creation restarts it).
        kexec's stop_this_cpu: cli; hlt in this kernel."""
        if cpu.should_stop:
            await Kernel.play_dead(self, cpu, n)
        else:
            await super().play_dead(cpu, n)

    async def kexec(self, cpu, *, force=False):
        """``snp_kexec_begin``, stop the other CPUs, ``snp_kexec_finish``; never refused."""
        cpu.note("snp_kexec_begin: shared<->private conversions stopped")
        await Kernel.kexec(self, cpu)
        await self.snp_kexec_finish(cpu)
        return None

    async def snp_kexec_finish(self, cpu):
        """``shutdown_all_aps`` (AP_DESTROY every AP with a VMSA of this kernel but the running
        one, then clear its VMSA bit), then every shared page private again (the GHCBs last)."""
        this = self.cpuid_to_apicid.index(cpu.apic_id)
        for n, vmsa in sorted(self.vmsa.items()):
            if vmsa is None or n == this:
                continue
            apic_id = self.cpuid_to_apicid[n]
            cpu.where = f"shutdown_all_aps: AP_DESTROY APIC ID {apic_id:#x}"
            await self.vmgexit_ap_control(cpu, ApCreationOp.DESTROY, vmsa, apic_id)
            self.snp_cleanup_vmsa(vmsa)
            self.vmsa[n] = None
        ghcbs = self.memory_ranges()[-1]
        self.memory.set_owner(*ghcbs, self.owner)
        cpu.note(f"snp_kexec_finish: {sum(1 for o in self.ap_creation if o['op'] == 'DESTROY')} "
                 f"APs destroyed, GHCB pages private, MSR protocol only")
