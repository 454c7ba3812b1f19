"""VMX operation of one logical CPU: VMXON, VMXOFF, and SEAMCALL into the TDX module.

What is modelled is what decides whether a host CPU can call the TDX module, and what VMX does
to AP wake-up:

* VMXON (SDM vol. 3C §24.7 "Enabling and Entering VMX Operation", and VMXON in vol. 3C
  ch. 31 "VMX Instruction Reference"): #UD with CR4.VMXE clear; #GP unless
  IA32_FEATURE_CONTROL (MSR 0x3A) is locked with VMXON enabled outside SMX (the firmware's
  setting); VMfailInvalid for a VMXON region that is not 4-KiB aligned or does not begin with
  the VMCS revision identifier (IA32_VMX_BASIC bits 30:0) with bit 31 clear; VMfailValid with error 15 ("VMXON
  executed in VMX root operation") when already on.
* VMXOFF: #UD outside VMX operation.
* INIT is blocked in VMX root operation (SDM vol. 3C §24.8 "Restrictions on VMX Operation"):
  an INIT IPI stays pending in the APIC until VMXOFF (:class:`apwake.sim.models.cpu.model.CpuModel`
  takes it then).  This is why Linux turns VMX off on every CPU before a reboot or kexec.
* SEAMCALL (Intel TDX CPU architectural extensions, SEAMCALL): #UD outside VMX operation; #GP
  when the BIOS has not enabled TDX (no SEAM range); VMfailInvalid (CF = 1) when no module is
  loaded; otherwise the module runs the leaf (:meth:`apwake.sim.models.tdx.module.TdxModule.call`)
  for the time :data:`apwake.sim.models.tdx.module.LATENCY_US` gives, with interrupts held off
  (the module runs with IF = 0; an interrupt that arrives meanwhile is taken after it returns).

The CPU raises :class:`VmxFault` and :class:`VmFail` as the hardware would; turning them into
statuses and errno is the kernel's business (:mod:`apwake.sim.models.cpu.tdx_host`).
"""

from apwake.sim.models.tdx.module import LATENCY_US
from .state import CR4

__all__ = ["Vmx", "VmxFault", "VmFail", "SeamPlatform", "IA32_FEATURE_CONTROL",
           "FEATURE_CONTROL_LOCKED", "FEATURE_CONTROL_VMXON_OUTSIDE_SMX", "VMCS_REVISION_ID",
           "VMXON_IN_VMX_ROOT"]

IA32_FEATURE_CONTROL = 0x3A
FEATURE_CONTROL_LOCKED = 1 << 0
FEATURE_CONTROL_VMXON_OUTSIDE_SMX = 1 << 2
#: the model's VMCS revision identifier (IA32_VMX_BASIC bits 30:0)
VMCS_REVISION_ID = 0x4
#: VM-instruction error 15
VMXON_IN_VMX_ROOT = 15
_VMXE = CR4["VMXE"]


class VmxFault(Exception):
    """An exception the instruction raises: ``vector`` 6 (#UD) or 13 (#GP)."""

    def __init__(self, vector, why):
        super().__init__(f"#{'UD' if vector == 6 else 'GP'}: {why}")
        self.vector, self.why = vector, why


class VmFail(Exception):
    """VMfailInvalid (``error`` None, CF = 1) or VMfailValid (ZF = 1, ``error`` the
    VM-instruction error number)."""

    def __init__(self, error, why):
        super().__init__(f"VMfail{'Invalid' if error is None else f'Valid({error})'}: {why}")
        self.error, self.why = error, why


class SeamPlatform:
    """The platform's SEAM side: whether the BIOS enabled TDX (a SEAM range) and the module
    loaded in it (an :class:`apwake.sim.models.tdx.module.TdxModule`, or None)."""

    def __init__(self, module=None, *, bios_enabled=True):
        self.module, self.bios_enabled = module, bios_enabled


class Vmx:
    """VMX operation of ``cpu`` (a :class:`apwake.sim.models.cpu.model.CpuModel`).

    Attributes
    ----------
    root : bool
        In VMX root operation (after VMXON, before VMXOFF).
    region : int or None
        The VMXON region's physical address while on.
    feature_control : int
        IA32_FEATURE_CONTROL as the firmware left it: locked, VMXON enabled outside SMX.
    """

    def __init__(self, cpu):
        self.cpu = cpu
        self.root = False
        self.region = None
        self.feature_control = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMXON_OUTSIDE_SMX

    def reset(self):
        """INIT or RESET: out of VMX operation (an INIT is blocked in VMX root, so this is
        only reached from outside it or at power-up)."""
        self.root, self.region = False, None

    def vmxon(self, region):
        """VMXON with the VMXON region at ``region`` (its first 4 bytes the revision ID)."""
        cpu = self.cpu
        if not cpu.arch.cr4 & _VMXE:
            raise VmxFault(6, "VMXON with CR4.VMXE clear")
        if self.root:
            raise VmFail(VMXON_IN_VMX_ROOT, "VMXON executed in VMX root operation")
        wanted = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMXON_OUTSIDE_SMX
        if self.feature_control & wanted != wanted:
            raise VmxFault(13, f"IA32_FEATURE_CONTROL = {self.feature_control:#x}: not locked "
                               f"with VMXON outside SMX enabled")
        if region % 4096:
            raise VmFail(None, f"VMXON region {region:#x} is not 4-KiB aligned")
        word = cpu.machine.memory.read_int(region, 4)
        # bits 30:0 the revision identifier, bit 31 (the shadow-VMCS indicator) must be 0
        if word != VMCS_REVISION_ID:
            raise VmFail(None, f"VMXON region {region:#x} starts with {word:#x}, not the revision "
                               f"identifier {VMCS_REVISION_ID:#x} with bit 31 clear")
        self.root, self.region = True, region
        cpu.note("VMXON")

    def vmxoff(self):
        """VMXOFF; an INIT held pending meanwhile is taken now."""
        if not self.root:
            raise VmxFault(6, "VMXOFF outside VMX operation")
        self.root, self.region = False, None
        self.cpu.note("VMXOFF")
        self.cpu.vmx_left()

    async def seamcall(self, leaf, **registers):
        """SEAMCALL ``leaf`` with input ``registers`` (``rcx``, ``rdx``, ``r8``, ``tdmrs``);
        returns ``(rax, outputs)``.  Raises :class:`VmxFault` or :class:`VmFail`."""
        cpu = self.cpu
        if not self.root:
            raise VmxFault(6, "SEAMCALL outside VMX operation")
        seam = cpu.machine.seam
        if seam is None or not seam.bios_enabled:
            raise VmxFault(13, "SEAMCALL with TDX not enabled by the BIOS (no SEAM range)")
        if seam.module is None:
            raise VmFail(None, "SEAMCALL with no TDX module loaded")
        async with cpu.interrupts_held(f"SEAMCALL {int(leaf)}"):
            await cpu.udelay(LATENCY_US.get(leaf, 1))
            return seam.module.call(cpu.apic_id, leaf, **registers)
