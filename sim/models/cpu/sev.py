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
"""

from apwake.rtl.ghcb_msr.layouts import (HoldReply, JumpTableEntry, JumpTableOp, MsrCode,
                                  NaeExit, PROTOCOL_MAX, PROTOCOL_MIN, SevInfo, Termination)

from apwake.sim.harness.codec import pack, unpack
from apwake.sim.vip.ghcb_msr.page import is_valid, read_reply, write_request
from apwake.sim.vip.memory import PAGE_SIZE, Owner
from .linux import KERNEL_ENTRY, TRAMPOLINE, BootMethod, Firmware, Kernel
from .model import SEV_ES_RESET

__all__ = ["SevFirmware", "SevKernel", "NegotiationFailed", "sev_es_negotiate_protocol",
           "sev_es_terminate", "JUMP_TABLE", "FIRMWARE_GHCB", "PARK_BLOB_OFFSET", "ghcb_page"]

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


async def ghcb_call(cpu, ghcb, exit_code, info1=0, info2=0, *, writer):
    """An NAE event through the GHCB page at ``ghcb``: ``(SW_EXITINFO1, SW_EXITINFO2, bitmap)``."""
    memory = cpu.machine.memory
    write_request(memory, ghcb, exit_code=exit_code, info1=info1, info2=info2, writer=writer)
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
        cpu.jump(cs * 16 + ip)


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
        cpu.jump(cs * 16 + ip)

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
        cpu.where = "sev_es_negotiate_protocol"
        try:
            self.ghcb_version, lo, hi = await sev_es_negotiate_protocol(cpu.vcpu, timeout_cycles=None)
        except NegotiationFailed as failure:
            message = f"{self.name}: {failure}: terminating ({failure.reason_set}, {failure.reason_code})"
            self.boot_failures.append(message)
            cpu.fail(message)
            cpu.where = "sev_es_terminate: hlt for ever"
            await sev_es_terminate(cpu.vcpu, failure.reason_set, failure.reason_code)
            self.booted.set()
            return
        self.hv_range = (lo, hi)
        cpu.note(f"GHCB protocol version {self.ghcb_version} (hypervisor offers {lo}-{hi})")
        await self.sev_es_setup_ap_jump_table(cpu)
        await super().kernel_main(cpu)

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
