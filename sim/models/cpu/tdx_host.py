"""Linux as a TDX host: KVM's VMXON on every CPU, the TDX module's per-CPU and global
initialisation, and the CPU hotplug callbacks that keep every online CPU able to call the module.

Follows Linux ``arch/x86/virt/vmx/tdx/tdx.c`` (``tdx_cpu_enable``, ``try_init_module_global``,
``tdx_enable``, ``init_tdx_module``, ``config_global_keyid``, ``init_tdmrs``, the SEAMCALL
wrappers ``sc_retry_prerr``/``seamcall_prerr``), ``arch/x86/kvm/vmx/vmx.c``
(``vmx_hardware_enable``/``kvm_cpu_vmxon``, ``vmx_hardware_disable``), ``arch/x86/kvm/vmx/tdx.c``
(``tdx_offline_cpu``: the last online CPU of a package stays while a TD holds a KeyID) and the
2024 thread of seed 003 (Kai Huang and Sean Christopherson on "[PATCH v19 023/130] KVM: TDX:
Initialize the TDX module when loading the KVM intel kernel module"):

* ``tdx_cpu_enable()`` runs TDH.SYS.INIT once globally (under a raw spinlock, its result
  cached) and TDH.SYS.LP.INIT once per CPU (a per-CPU flag), and asserts that interrupts are
  off: it is meant to run from an IPI function call (``on_each_cpu``) or with
  ``local_irq_save`` around it.
* ``tdx_enable()`` must run under ``cpus_read_lock()`` (so that no package loses its last
  online CPU meanwhile) after VMXON and ``tdx_cpu_enable()`` on every online CPU.
* Two ways to get there (``rounds``): two IPI rounds (``on_each_cpu`` VMXON, then
  ``on_each_cpu`` tdx_cpu_enable) or one round doing both, the one Sean asks for ("why do two
  IPIs?").  The kernel counts the IPIs of each (:attr:`Kernel.ipis`).
* The plan Kai describes for hotplug: a TDX online callback placed before KVM's that does
  VMXON, ``tdx_cpu_enable()`` and VMXOFF, and refuses to online a CPU that fails
  (:meth:`TdxHost.register_hotplug`).

The KVM side is modelled as far as it touches this: VMXON/VMXOFF per CPU and, at a CPU's
online, KVM's first SEAMCALL on it (a TDH.SYS.RD of the module's features, standing for any
SEAMCALL KVM makes on that CPU).
"""

from cocotb.triggers import Event

from apwake.sim.models.tdx.abi import (TDX_SEAMCALL_VMFAILINVALID, TDX_SW_ERROR, Errno, Leaf,
                                       Status, errno_of, seamcall_error_message, status_name)
from apwake.sim.models.tdx.module import FEATURES0_NO_RBP_MOD, Tdmr
from .linux import errno_text
from .state import CR4
from .vmx import VMCS_REVISION_ID, VmFail, VmxFault

__all__ = ["TdxHost", "ROUNDS", "HOTPLUG_ORDERS", "VMXON_REGIONS"]

#: VMX and LP.INIT in two IPI rounds (KVM, then TDX) or in one
ROUNDS = (1, 2)
#: the order of the hotplug online callbacks: TDX's before KVM's (the plan) or after
HOTPLUG_ORDERS = ("tdx-first", "kvm-first")
#: where the VMXON regions are, one page per CPU number, from the kernel's data base
VMXON_REGIONS = 0x0020_0000
#: the TDMR the model's host gives the module: its first GiB
_TDMRS = (Tdmr(0, 1 << 30),)
_VMXE = CR4["VMXE"]


class TdxHost:
    """Linux's TDX host support and KVM on a booted :class:`apwake.sim.models.cpu.linux.Kernel`.

    Parameters
    ----------
    kernel : apwake.sim.models.cpu.linux.Kernel
    package_of : callable
        APIC ID -> package number (``topology_physical_package_id``).

    Attributes
    ----------
    warnings : list of dict
        ``WARN`` splats: ``{"cpu", "message"}``.
    log : list of str
        What the kernel printed (``pr_err``, ``pr_info``).
    seamcalls : list of dict
        Every SEAMCALL as the kernel saw it: ``{"cpu", "leaf", "status", "name"}``.
    lp_initialized : set of int
        CPU numbers whose per-CPU ``tdx_lp_initialized`` is set.
    """

    def __init__(self, kernel, package_of):
        self.kernel = kernel
        self.machine = kernel.machine
        self.package_of = package_of
        self.warnings, self.log, self.seamcalls = [], [], []
        self._warned = set()         # WARN_ON_ONCE sites that fired
        self.irqs_on_calls = []      # tdx_cpu_enable()/try_init_module_global() with IF = 1
        self.lp_initialized = set()
        self.sysinit = None          # TDH.SYS.INIT's cached result (errno), once run
        self._sysinit_owner = None   # the CPU holding sysinit_lock
        self._sysinit_free = Event()
        self.module_status = "uninitialized"
        self.virtualization_enabled = False
        self.td_keyids = set()       # KeyIDs held by TDs (tdx_guest_keyid_pool)
        regions = len(kernel.cpuid_to_apicid) * 4096
        assert kernel.data + VMXON_REGIONS + regions <= kernel.percpu_base(0), \
            "the VMXON regions must stay below the per-CPU areas"
        kernel.memory.set_owner(kernel.data + VMXON_REGIONS, regions, kernel.owner)
        for n in range(len(kernel.cpuid_to_apicid)):
            kernel.memory.write_int(self._vmxon_region(n), VMCS_REVISION_ID, 4, writer=kernel.owner)

    def _vmxon_region(self, n):
        return self.kernel.data + VMXON_REGIONS + n * 4096

    def _n(self, cpu):
        return self.kernel.cpuid_to_apicid.index(cpu.apic_id)

    def warn(self, cpu, message):
        """A WARN splat: recorded, and a failure naming the CPU."""
        self.warnings.append({"cpu": cpu.apic_id, "message": message})
        self.machine.fail(cpu, f"WARNING: CPU: {self._n(cpu)}: {message}")

    def warn_once(self, site, cpu, message):
        """WARN_ON_ONCE (lockdep's asserts): the first time at ``site`` only."""
        if site not in self._warned:
            self._warned.add(site)
            self.warn(cpu, message)

    def _assert_irqs_disabled(self, cpu, function):
        """lockdep_assert_irqs_disabled() in ``function`` (lockdep on, as in a debug kernel):
        WARN_ON_ONCE per call site; the model notes every call that had interrupts on."""
        if cpu.arch.interrupts_enabled:
            self.irqs_on_calls.append({"cpu": cpu.apic_id, "function": function})
            self.warn_once(function, cpu, f"at arch/x86/virt/vmx/tdx/tdx.c {function}: "
                                          f"lockdep_assert_irqs_disabled(): interrupts enabled")

    # --- SEAMCALL (arch/x86/virt/vmx/tdx/tdxcall.S, seamcall.h) ------------------------------------
    async def seamcall(self, cpu, leaf, **registers):
        """TDX_MODULE_CALL: the instruction, with #UD and #GP turned into ``TDX_SW_ERROR | trap``
        and VMfailInvalid into TDX_SEAMCALL_VMFAILINVALID.  Returns ``(status, outputs)``."""
        where = cpu.where
        cpu.where = f"SEAMCALL {Leaf(leaf).name}"
        try:
            status, outputs = await cpu.vmx.seamcall(leaf, **registers)
        except VmxFault as fault:
            status, outputs = TDX_SW_ERROR | fault.vector, {}
        except VmFail:
            status, outputs = TDX_SEAMCALL_VMFAILINVALID, {}
        cpu.where = where
        self.seamcalls.append({"cpu": cpu.apic_id, "leaf": Leaf(leaf).name, "status": int(status),
                               "name": status_name(status)})
        return status, outputs

    async def seamcall_prerr(self, cpu, leaf, **registers):
        """``seamcall_prerr``: 0 or the negative errno (sc_retry_prerr's mapping); a status it
        does not map to a fault is printed.  Returns ``(errno, outputs)``."""
        status, outputs = await self.seamcall(cpu, leaf, **registers)
        errno = errno_of(status)
        if errno == -Errno.EIO:
            self.log.append(seamcall_error_message(leaf, status))
        return errno, outputs

    # --- KVM: VMX on and off (arch/x86/kvm/vmx/vmx.c) ---------------------------------------------
    async def vmx_hardware_enable(self, cpu):
        """VMXON on ``cpu``: -EBUSY if CR4.VMXE is already set (someone else uses VMX), -EFAULT
        with KVM's warning if VMXON faults.  A VMfail is not seen: ``kvm_cpu_vmxon`` catches
        faults through its exception table and does not test RFLAGS, so the CPU is left out of
        VMX operation with 0 returned (noted in its timeline)."""
        if cpu.arch.cr4 & _VMXE:
            return -Errno.EBUSY
        cpu.arch.cr4 |= _VMXE
        try:
            cpu.vmx.vmxon(self._vmxon_region(self._n(cpu)))
        except VmxFault as error:
            self.warn_once("kvm_cpu_vmxon", cpu, f"VMXON faulted, MSR_IA32_FEAT_CTL (0x3a) = "
                                                 f"{cpu.vmx.feature_control:#x} ({error})")
            cpu.arch.cr4 &= ~_VMXE
            return -Errno.EFAULT
        except VmFail as error:
            cpu.note(f"VMXON {error} (not checked by kvm_cpu_vmxon)")
        return 0

    async def vmx_hardware_disable(self, cpu):
        """cpu_vmxoff: VMXOFF and CR4.VMXE clear (nothing when VMX is off)."""
        if cpu.vmx.root:
            cpu.vmx.vmxoff()
        cpu.arch.cr4 &= ~_VMXE
        return 0

    async def kvm_enable_virtualization(self, cpu):
        """VMXON on every online CPU by ``on_each_cpu`` (KVM's ``hardware_enable_all`` of the
        thread's time; since Linux 6.12 KVM does it through a hotplug state instead).  On a
        failure VMX goes off again everywhere.  Returns 0 or the first error."""
        results = await self.kernel.on_each_cpu(cpu, self.vmx_hardware_enable, "VMXON")
        return await self._enabled(cpu, results)

    async def _enabled(self, cpu, results):
        failed = {n: r for n, r in results.items() if r}
        missing = set(self.kernel.online_cpus()) - set(results)
        if failed or missing:
            await self.kernel.on_each_cpu(cpu, self.vmx_hardware_disable, "VMXOFF")
            for n, r in failed.items():
                self.log.append(f"kvm: enabling virtualization on CPU{n} failed: {errno_text(r)}")
            return next(iter(failed.values()), -Errno.EIO)
        self.virtualization_enabled = True
        return 0

    # --- TDX: per-CPU and global initialisation (arch/x86/virt/vmx/tdx/tdx.c) ----------------------
    async def try_init_module_global(self, cpu):
        """TDH.SYS.INIT once, under the raw spinlock ``sysinit_lock``: the first caller runs it,
        concurrent callers spin until it is done, and every later caller gets its result."""
        self._assert_irqs_disabled(cpu, "try_init_module_global")
        while self._sysinit_owner is not None:
            await self._sysinit_free.wait()
        if self.sysinit is None:
            self._sysinit_owner = cpu
            self._sysinit_free.clear()
            errno, _ = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_INIT, rcx=0)
            self.sysinit = errno
            if errno == -Errno.ENODEV:
                self.log.append("virt/tdx: module not loaded")
            self._sysinit_owner = None
            self._sysinit_free.set()
        return self.sysinit

    async def tdx_cpu_enable(self, cpu):
        """tdx_cpu_enable(): lockdep_assert_irqs_disabled(), the per-CPU flag, the global
        initialisation, then TDH.SYS.LP.INIT.  Returns 0 or the negative errno."""
        n = self._n(cpu)
        # a WARN_ON_ONCE, and the function goes on: its per-CPU flag is not IRQ-safe
        self._assert_irqs_disabled(cpu, "tdx_cpu_enable")
        if n in self.lp_initialized:
            return 0
        errno = await self.try_init_module_global(cpu)
        if errno:
            return errno
        errno, _ = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_LP_INIT)
        if errno:
            return errno
        self.lp_initialized.add(n)
        return 0

    async def vmxon_and_lp_init(self, cpu):
        """The one-round variant's function: VMXON, then tdx_cpu_enable(), on the CPU the IPI
        reached (the shape of v19's ``vmx_tdx_on``)."""
        errno = await self.vmx_hardware_enable(cpu)
        return errno or await self.tdx_cpu_enable(cpu)

    async def tdx_enable(self, cpu):
        """tdx_enable(): the module's global initialisation from ``cpu``, once; the caller
        holds the CPU hotplug lock (``lockdep_assert_cpus_held``).  Returns 0 or the errno."""
        if not self.kernel.cpus_read_held:
            self.warn(cpu, "at arch/x86/virt/vmx/tdx/tdx.c tdx_enable: lockdep_assert_cpus_held()")
        if self.module_status == "initialized":
            return 0
        if self.module_status == "error":
            return -Errno.EINVAL
        errno = await self.init_tdx_module(cpu)
        self.module_status = "error" if errno else "initialized"
        self.log.append(f"virt/tdx: module initialization failed ({errno})" if errno
                        else "virt/tdx: module initialized")
        return errno

    async def init_tdx_module(self, cpu):
        """TDH.SYS.RD (features), TDH.SYS.CONFIG, WBINVD on every CPU, TDH.SYS.KEY.CONFIG on one
        CPU of each package, then TDH.SYS.TDMR.INIT until every TDMR is initialised."""
        errno, outputs = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_RD)
        if errno:
            return errno
        if not outputs["r8"] & FEATURES0_NO_RBP_MOD:
            self.log.append("virt/tdx: NO_RBP_MOD feature is not supported")
            return -Errno.EINVAL
        keyid = self.machine.seam.module.tdx_keyids.start
        errno, _ = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_CONFIG, rdx=len(_TDMRS), r8=keyid,
                                             tdmrs=_TDMRS)
        if errno:
            return errno
        await self.kernel.on_each_cpu(cpu, self._wbinvd, "WBINVD")      # wbinvd_on_all_cpus
        errno = await self.config_global_keyid(cpu)
        if errno:
            return errno
        for tdmr in _TDMRS:
            end = tdmr.base + tdmr.size
            next_address = tdmr.base
            while next_address < end:
                errno, outputs = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_TDMR_INIT, rcx=tdmr.base)
                if errno:
                    return errno
                next_address = outputs["rdx"]
        return 0

    async def _wbinvd(self, cpu):
        return 0

    async def config_global_keyid(self, cpu):
        """TDH.SYS.KEY.CONFIG on the first online CPU of each package, by ``smp_call_on_cpu``
        (a kworker on that CPU).  A package with no online CPU is never configured: the module
        then stays not ready, and TDH.SYS.TDMR.INIT fails."""
        seen = set()
        for n in self.kernel.online_cpus():
            package = self.package_of(self.kernel.cpuid_to_apicid[n])
            if package in seen:
                continue
            seen.add(package)
            errno = await self.kernel.smp_call_on_cpu(cpu, n, self._key_config, "TDH.SYS.KEY.CONFIG")
            if errno is None:
                return -Errno.EIO
            if errno:
                return errno
        return 0

    async def _key_config(self, cpu):
        errno, _ = await self.seamcall_prerr(cpu, Leaf.TDH_SYS_KEY_CONFIG)
        return errno

    async def bringup(self, cpu, rounds=2):
        """KVM's TDX bring-up at module load from ``cpu``: VMX and tdx_cpu_enable() on every
        online CPU in ``rounds`` IPI rounds (:data:`ROUNDS`), then tdx_enable() under the
        hotplug lock.  Returns 0 or the errno."""
        if rounds not in ROUNDS:
            raise ValueError(f"rounds must be one of {ROUNDS}, not {rounds!r}")
        await self.kernel.cpus_read_lock()
        try:
            if rounds == 2:
                errno = await self.kvm_enable_virtualization(cpu)
                if errno:
                    return errno
                results = await self.kernel.on_each_cpu(cpu, self.tdx_cpu_enable, "tdx_cpu_enable")
            else:
                results = await self.kernel.on_each_cpu(cpu, self.vmxon_and_lp_init,
                                                        "VMXON + tdx_cpu_enable")
            failed = {n: r for n, r in results.items() if r}
            # a CPU whose call never ran (reported by the csd wait) failed too
            failed.update({n: -Errno.ETIMEDOUT for n in self.kernel.online_cpus() if n not in results})
            for n, r in failed.items():
                self.log.append(f"kvm_intel: tdx_cpu_enable on CPU{n} failed: {errno_text(r)}")
            if failed:
                # VMX off again everywhere (v19 turned it off after the setup in any case; the
                # model keeps it on after a success, as KVM with enable_virt_at_load does)
                if rounds == 1:
                    await self.kernel.on_each_cpu(cpu, self.vmx_hardware_disable, "VMXOFF")
                return next(iter(failed.values()))
            if rounds == 1:
                errno = await self._enabled(cpu, results)
                if errno:
                    return errno
            return await self.tdx_enable(cpu)
        finally:
            self.kernel.cpus_read_unlock()

    # --- CPU hotplug (the plan of the thread; arch/x86/kvm/vmx/tdx.c tdx_offline_cpu) --------------
    def register_hotplug(self, order="tdx-first"):
        """The online/offline callbacks: TDX's (VMXON, tdx_cpu_enable() with interrupts off,
        VMXOFF; offline: keep the last online CPU of a package while a TD holds a KeyID) and
        KVM's (VMXON and KVM's first SEAMCALL on the CPU; offline: VMXOFF), in ``order``."""
        if order not in HOTPLUG_ORDERS:
            raise ValueError(f"hotplug order must be one of {HOTPLUG_ORDERS}, not {order!r}")
        tdx = ("tdx:online", self.tdx_online_cpu, self.tdx_offline_cpu)
        kvm = ("kvm:online", self.kvm_online_cpu, self.kvm_offline_cpu)
        for state in (tdx, kvm) if order == "tdx-first" else (kvm, tdx):
            self.kernel.cpuhp_setup_state(*state)

    async def tdx_online_cpu(self, cpu, n):
        errno = await self.vmx_hardware_enable(cpu)
        if errno:
            return errno
        flags = await cpu.local_irq_save()
        errno = await self.tdx_cpu_enable(cpu)
        cpu.local_irq_restore(flags)
        await self.vmx_hardware_disable(cpu)
        return errno

    async def tdx_offline_cpu(self, cpu, n):
        """-EBUSY for the last online CPU of its package while any TD holds a KeyID."""
        if not self.td_keyids:
            return 0
        package = self.package_of(cpu.apic_id)
        others = [m for m in self.kernel.online_cpus()
                  if m != n and self.package_of(self.kernel.cpuid_to_apicid[m]) == package]
        if others:
            return 0
        self.log.append("kvm_intel: TDX requires all packages to have an online CPU. Delete all "
                        "TDs in order to offline all CPUs of a package.")
        return -Errno.EBUSY

    async def kvm_online_cpu(self, cpu, n):
        if not self.virtualization_enabled:
            return 0
        errno = await self.vmx_hardware_enable(cpu)
        if errno:
            return errno
        status, _ = await self.seamcall(cpu, Leaf.TDH_SYS_RD)
        if status != Status.TDX_SUCCESS:
            self.log.append(f"kvm_intel: {seamcall_error_message(Leaf.TDH_SYS_RD, status)} "
                            f"on CPU{n} ({status_name(status)})")
            await self.vmx_hardware_disable(cpu)
            return errno_of(status)
        return 0

    async def kvm_offline_cpu(self, cpu, n):
        return await self.vmx_hardware_disable(cpu)

    def summary(self):
        """The report's ``tdx_host`` detail (the module's state included)."""
        module = self.machine.seam.module if self.machine.seam else None
        kernel = self.kernel
        return {
            "module_status": self.module_status,
            "module": None if module is None else {
                "rule": module.rule.value, "state": module.state.value, "ready": module.ready,
                "lp_initialized": sorted(module.lp_initialized),
                "uninitialized_lps": module.uninitialized_lps(),
                "packages": {str(a): p for a, p in module.lps.items()},
                "packages_configured": sorted(module.packages_configured)},
            "vmx_root": [c.apic_id for c in self.machine.cpus if c.vmx.root],
            "lp_initialized_flag": sorted(kernel.cpuid_to_apicid[n] for n in self.lp_initialized),
            "ipis": dict(sorted(kernel.ipis.items())),
            "ipis_total": sum(kernel.ipis.values()),
            "seamcalls": self.seamcalls,
            "warnings": self.warnings,
            "irqs_on_calls": self.irqs_on_calls,
            "log": self.log,
            "hotplug": kernel.hotplug_log,
        }
