"""A paravirtualised 32-bit Linux (VMware VMI, Linux 2.6.21-2.6.3x) and its state-carrying AP
start-up, on the start-context unit (``rtl/start_context``, ``rtl/system/pvstart.py``).

What the kernel does, after Linux's arch/x86/kernel/vmi_32.c and smpboot.c of that era:

* At boot the BSP enters paravirtual mode (``vmi_activate``): the model tells the hypervisor
  with the unit's PARAVIRT call, after which a real-mode start of an AP is refused.
* Bring-up timing is Linux 2.6.2x's (``smpboot.c``): 10 ms after INIT, 300 us / 200 us around
  each SIPI (the model's ``legacy`` method).
* ``start="vmi"``: ``wakeup_secondary_cpu`` sends INIT, INIT de-assert, then calls
  ``startup_ipi_hook(phys_apicid, start_eip, start_esp)``: ``vmi_startup_ipi_hook`` fills a
  ``struct vmi_ap_state`` on the BSP's stack (protected mode with paging, the AP's GDT, the IDT,
  EIP = ``start_secondary``, ESP = its stack, the per-CPU segment) and makes the ROM call
  ``SetInitialAPState(address, apic_id)``; the SIPIs then start the AP in that state, never
  running the real-mode trampoline.  As in Linux, the hook indexes the per-CPU GDT by the APIC
  ID (``get_cpu_gdt_table(phys_apicid)``), which is the CPU number only with contiguous IDs.
* ``start="direct"``: Eric Biederman's proposal in the thread (and Xen's VCPUOP_initialise +
  VCPUOP_up, Hyper-V's HvCallStartVirtualProcessor): one START call per AP with the same state,
  no INIT and no SIPI on the APIC bus.
* ``state_map="old"``: the hook still fills the map of the kernel before Jeremy Fitzhardinge
  moved the kernel's per-CPU data (the PDA) from %gs to %fs (January 2007, during Linux 2.6.20's
  development): FS = 0, GS = the per-CPU selector.  This kernel keeps its per-CPU data in FS, so
  each AP enters ``start_secondary`` with FS base 0 (Zachary Amsden's "Vmi initialize fs for
  smp", 5 January 2007, "Now that Jeremy's change to move the kernel PDA to %fs has arrived",
  fixed the real one).
* The hook indexes the GDT by the APIC ID, as Linux's did; with APIC IDs that are not the CPU
  numbers (``--topology``, ``--apic-ids``) an AP gets another CPU's GDT or none, and the start is
  refused or fails at ``start_secondary``.  The direct start, which no Linux ran, uses the CPU
  number.
* ``classic_aps``: APs started the classic way (INIT, SIPI, SIPI, no hook) although the BSP runs
  paravirtual: the mixed mode the VMI maintainer calls "unsupported at best and unreliable at
  worst" (constraint 5); the hypervisor refuses the real-mode start, visibly.

The kernel's code runs identity-mapped in the model: EIP is the physical address of its code.
"""

from apwake.rtl.start_context.layouts import StartOp, StartStatus
from apwake.sim.vip.start_context.model import (LINUX_SELECTORS, decode, encode_vmi_ap_state,
                                                linux_ap_state, linux_gdt)
from .linux import PGD_OFFSET, START_SECONDARY, BootMethod, Kernel
from .state import ArchState

__all__ = ["VmiKernel", "START_MODES", "STATE_MAPS"]

#: how the kernel starts its APs: the VMI hook before the SIPIs, or one direct call per AP
START_MODES = ("vmi", "direct")
#: the state map the hook sends: this kernel's, or the one from before per-CPU data moved to FS
STATE_MAPS = ("current", "old")
# from the kernel's data base, clear of Kernel's own (linux.py)
_GDTS = 0x0050_0000            # per-CPU GDTs (gdt_page), 256 bytes each
_GDT_BYTES = 256               # GDT_ENTRIES 32 * 8
_IDT = 0x0004_0000             # idt_table: 256 gates of 8 bytes
_CANARY = 0x0004_1000          # the stack-canary segment's base (unused by the models)
_CR4 = 0x0000_0690             # mmu_cr4_features: PSE, PGE, OSFXSR, OSXMMEXCPT
#: the longest a hypercall may take: the unit serves one call or SIPI at a time (a few tens of
#: cycles each), so this bounds a hung unit, not a busy one
_HYPERCALL_CYCLES = 100_000
_HOOK_FRAME = 0x100            # the hook's struct on the BSP's stack, this far below its top


class VmiKernel(Kernel):
    """A paravirtual 32-bit kernel.

    Parameters
    ----------
    machine : apwake.sim.models.cpu.machine.Machine
        Attached to the start-context unit (:meth:`Machine.attach_start_unit`).
    start : str
        One of :data:`START_MODES`.
    state_map : str
        One of :data:`STATE_MAPS`.
    classic_aps : iterable of int
        Port indices of APs started the classic way (no hook), with the BSP in paravirtual mode.
    **kwargs
        As :class:`apwake.sim.models.cpu.linux.Kernel` (the boot method is serial INIT-SIPI-SIPI
        with modern timing).

    Raises
    ------
    ValueError
        An unknown ``start`` or ``state_map``, or a ``classic_aps`` entry that is not an AP.
    """

    percpu_segment = "fs"               # i386, since 2.6.20 (the PDA, later per-CPU data)
    secondary_mode = "protected+paging"
    kernel_cs = LINUX_SELECTORS["kernel_cs"]

    def __init__(self, machine, *, start="vmi", state_map="current", classic_aps=(), **kwargs):
        if start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, not {start!r}")
        if state_map not in STATE_MAPS:
            raise ValueError(f"state_map must be one of {STATE_MAPS}, not {state_map!r}")
        classic = set(classic_aps)
        for port in classic:
            if not 0 <= port < len(machine.cpus) or machine.cpus[port].is_bsp:
                raise ValueError(f"classic_aps: port {port} is not an AP (ports 0 to "
                                 f"{len(machine.cpus) - 1}, BSP {machine.bsp.index})")
        # Linux 2.6.2x's smpboot timing: 10 ms after INIT, 300 us / 200 us around each SIPI
        super().__init__(machine, BootMethod.LEGACY, **kwargs)
        self.start, self.state_map = start, state_map
        self.classic_apic_ids = {machine.cpus[p].apic_id for p in classic}
        self.hypercalls = []        # (op name, APIC ID, status name, field name)
        self.memory.set_owner(self.data + _GDTS, _GDT_BYTES * len(machine.cpus), self.owner)

    # --- the state this kernel gives its CPUs -----------------------------------------------------
    def gdt_address(self, n):
        """``get_cpu_gdt_table(n)``: CPU number ``n``'s GDT."""
        return self.data + _GDTS + n * _GDT_BYTES

    def secondary_state(self, n):
        """What head_32.S's startup_32_smp leaves for start_secondary on CPU ``n`` (the classic
        path through the trampoline): the state the hook would carry, its selectors resolved
        in the CPU's GDT by the same rules as the unit (:func:`decode`)."""
        raw = encode_vmi_ap_state(**self._state_map(n, n)).ljust(92, b"\0")
        # the struct as if at address 0, the GDT from guest memory
        read = lambda address, size: raw[address:address + size] if address < len(raw) else \
            self.memory.read(address, size)
        status, field, context = decode(read, 0)
        if context is None:
            raise AssertionError(f"{self.name}: its own state map for CPU {n} is refused: "
                                 f"{status.name} ({field.name})")
        return ArchState.from_context(context)

    def _state_map(self, n, gdt_index):
        """The ``vmi_ap_state`` fields for CPU number ``n``, with the GDT of ``gdt_index``."""
        fields = linux_ap_state(gdt_base=self.gdt_address(gdt_index), idt_base=self.data + _IDT,
                                cr3=self.data + PGD_OFFSET, eip=self.entry + START_SECONDARY,
                                esp=self.stack_top(n), cr4=_CR4)
        if self.state_map == "old":
            # before 2.6.20 the per-CPU data (the PDA) was in GS
            fields.update(fs=0, gs=LINUX_SELECTORS["percpu"])
        return fields

    def _write_gdts(self):
        for n in range(len(self.cpuid_to_apicid)):
            gdt = linux_gdt(percpu_base=self.percpu_base(n), canary_base=self.data + _CANARY)
            for index, value in gdt.items():
                self.memory.write_int(self.gdt_address(n) + 8 * index, value, 8, writer=self.owner)

    # --- boot --------------------------------------------------------------------------------------
    async def kernel_main(self, cpu):
        # setup_arch: the per-CPU GDTs; vmi_activate: the BSP is paravirtual from here on, in
        # the kernel's own protected-mode state (its GDT, per-CPU FS, its stack)
        self._write_gdts()
        cpu.arch = self.secondary_state(0)
        await self.hypercall(cpu, StartOp.PARAVIRT, 0, cpu.apic_id)
        cpu.note("vmi_activate: the BSP runs paravirtual")
        await super().kernel_main(cpu)

    async def hypercall(self, cpu, op, address, apic_id):
        """One call on the start-context unit's port; returns the :class:`StartStatus`."""
        status, field = await self.machine.start_call.call(op, address, apic_id,
                                                           timeout_cycles=_HYPERCALL_CYCLES)
        self.hypercalls.append((op.name, apic_id, status.name, field.name))
        if status is not StartStatus.OK:
            self._report_stuck(apic_id, f"{op.name} for APIC ID {apic_id:#x} refused by the "
                                        f"hypervisor: {status.name} ({field.name})")
        return status

    async def _hook_state(self, cpu, apic_id, *, gdt_by_apic_id):
        """Fill the start state's struct on the BSP's stack; returns its address.
        ``gdt_by_apic_id``: index the GDT by the APIC ID, as Linux's hook did
        (``get_cpu_gdt_table(phys_apicid)``), else by the CPU number."""
        n = self.cpuid_to_apicid.index(apic_id)
        fields = self._state_map(n, apic_id if gdt_by_apic_id else n)
        address = self.stack_top(0) - _HOOK_FRAME
        self.memory.write(address, encode_vmi_ap_state(**fields), writer=self.owner)
        return address

    async def startup_ipi_hook(self, cpu, apic_id):
        """vmi_startup_ipi_hook (not for ``classic_aps``)."""
        if apic_id in self.classic_apic_ids:
            cpu.note(f"APIC ID {apic_id:#x}: started the classic way (no hook)")
            return
        address = await self._hook_state(cpu, apic_id, gdt_by_apic_id=True)
        await self.hypercall(cpu, StartOp.SET_INITIAL_AP_STATE, address, apic_id)

    async def smp_boot(self, cpu, aps):
        if self.start == "vmi":
            await super().smp_boot(cpu, aps)
            return
        for apic_id in aps:
            n = self.cpuid_to_apicid.index(apic_id)
            if apic_id in self.classic_apic_ids:
                cpu.note(f"APIC ID {apic_id:#x}: started the classic way (no hook)")
                if await self.wakeup_secondary_cpu_via_init(cpu, apic_id):
                    await self.wait_online(n, True, "do_boot_cpu: wait for callin")
                continue
            address = await self._hook_state(cpu, apic_id, gdt_by_apic_id=False)
            if await self.hypercall(cpu, StartOp.START, address, apic_id) is StartStatus.OK:
                await self.wait_online(n, True, "wait for callin after the direct start")

