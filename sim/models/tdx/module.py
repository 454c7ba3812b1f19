"""A model of the TDX module's platform-scope initialisation, as the host kernel drives it.

The module is the Python object a SEAMCALL reaches (:meth:`TdxModule.call`); the CPU model
decides first whether the SEAMCALL reaches it at all (:mod:`apwake.sim.models.cpu.vmx`).  What
is modelled is what decides whether every logical processor (LP) can call the module: the
global state machine, the per-LP initialisation and the per-package key configuration.

State machine and checks, from the module's public source (github.com/intel/tdx-module,
``src/vmm_dispatcher/tdx_vmm_dispatcher.c`` and ``src/vmm_dispatcher/api_calls/tdh_sys_*.c``):

* The dispatcher refuses every leaf but the initialisation ones (TDH.SYS.INIT, .LP.INIT, .RD,
  .CONFIG, .KEY.CONFIG) with ``TDX_SYS_NOT_READY`` until the module is ready.
* TDH.SYS.INIT (33): once, ``TDX_SYS_INIT_NOT_PENDING`` after; RCX (module attributes) must be
  0.
* TDH.SYS.LP.INIT (35): on each LP once (``TDX_SYS_LP_INIT_DONE`` again), only after
  TDH.SYS.INIT (``TDX_SYS_LP_INIT_NOT_PENDING`` before).
* Any other leaf on an LP that has not run TDH.SYS.LP.INIT: ``TDX_SYS_LP_INIT_NOT_DONE``.  The
  published source checks the LP's ``lp_is_init`` in TDH.SYS.RD, .RDALL and .INFO; Linux's
  ``tdx_cpu_enable()`` is documented as what makes "this cpu be ready to run any other
  SEAMCALLs", and the model applies the rule to every leaf.
* TDH.SYS.CONFIG (45): after TDH.SYS.INIT and before any earlier CONFIG
  (``TDX_SYS_CONFIG_NOT_PENDING``); 1 to 64 TDMRs (RDX; ``TDX_OPERAND_INVALID`` naming RDX);
  R8 a TDX private KeyID (``TDX_OPERAND_INVALID`` naming R8).
* TDH.SYS.KEY.CONFIG (31): after CONFIG (``TDX_SYS_KEY_CONFIG_NOT_PENDING``), once per package
  (``TDX_KEY_CONFIGURED`` again); the last package makes the module ready (SYS_READY).
* TDH.SYS.TDMR.INIT (36): RCX the base of a configured TDMR; each call initialises the PAMT of
  4 MiB of it and returns the next address to initialise in RDX, rounded down to 1 GiB;
  ``TDX_TDMR_ALREADY_INITIALIZED`` once all of it is.

Two ordering rules (``rule``), the subject of the 2024 KVM/TDX thread (Kai Huang, "Re: [PATCH
v19 023/130] KVM: TDX: Initialize the TDX module when loading the KVM intel kernel module"):

* ``strict``: what the module's published source above does.  TDH.SYS.LP.INIT is accepted only
  between TDH.SYS.INIT and TDH.SYS.CONFIG, and TDH.SYS.CONFIG is refused with
  ``TDX_SYS_CONFIG_NOT_PENDING`` while fewer LPs are initialised than the platform has
  (``num_of_init_lps < num_of_lps``).  Every present LP, online or not, must run it first; a CPU
  onlined later can never be initialised.
* ``relaxed``: the rule the thread says the module was changed to so that Linux could handle
  CPU hotplug and SMT-off: TDH.SYS.LP.INIT at any time after TDH.SYS.INIT (also after the module
  is ready), no count at TDH.SYS.CONFIG; the per-LP rule stays.  Packages still each need one
  TDH.SYS.KEY.CONFIG, so each needs an online CPU.

SEAMCALLs take guest time in the model (:data:`LATENCY_US`: the model's own figures, not
measurements) so that calls on different CPUs interleave.
"""

import enum
from dataclasses import dataclass, field

from .abi import OPERAND_R8, OPERAND_RCX, OPERAND_RDX, Leaf, Status, status_name

__all__ = ["Rule", "SysState", "TdxModule", "Tdmr", "LATENCY_US", "MAX_TDMRS", "TDMR_INIT_CHUNK",
           "FEATURES0_NO_RBP_MOD"]

MAX_TDMRS = 64
#: PAMT initialised per TDH.SYS.TDMR.INIT: 1024 4-KiB pages (TDMR_4K_PAMT_INIT_COUNT)
TDMR_INIT_CHUNK = 1024 * 4096
_GIB = 1 << 30
#: TDX_FEATURES0 bit 18, NO_RBP_MOD: the module leaves RBP alone (Linux requires it)
FEATURES0_NO_RBP_MOD = 1 << 18
#: guest microseconds each leaf takes in the model (its own figures)
LATENCY_US = {Leaf.TDH_SYS_INIT: 20, Leaf.TDH_SYS_LP_INIT: 5, Leaf.TDH_SYS_RD: 1,
              Leaf.TDH_SYS_CONFIG: 20, Leaf.TDH_SYS_KEY_CONFIG: 10, Leaf.TDH_SYS_TDMR_INIT: 1}
_INIT_LEAVES = {Leaf.TDH_SYS_INIT, Leaf.TDH_SYS_LP_INIT, Leaf.TDH_SYS_RD, Leaf.TDH_SYS_CONFIG,
                Leaf.TDH_SYS_KEY_CONFIG}


class Rule(str, enum.Enum):
    """When TDH.SYS.LP.INIT may run (module docstring)."""

    STRICT = "strict"
    RELAXED = "relaxed"


class SysState(enum.Enum):
    """The module's global state (``sys_state``)."""

    SYSINIT_PENDING = "SYSINIT_PENDING"
    SYSINIT_DONE = "SYSINIT_DONE"
    SYSCONFIG_DONE = "SYSCONFIG_DONE"
    SYS_READY = "SYS_READY"


@dataclass
class Tdmr:
    """A TD memory range: ``base`` and ``size`` in bytes (1 GiB aligned), ``next`` the first
    byte whose PAMT is not initialised yet."""

    base: int
    size: int
    next: int = field(default=None)

    def __post_init__(self):
        if self.base % _GIB or self.size % _GIB or self.size <= 0:
            raise ValueError(f"a TDMR is 1 GiB aligned and sized: base {self.base:#x}, size {self.size:#x}")
        if self.next is None:
            self.next = self.base


class TdxModule:
    """The TDX module of one platform.

    Parameters
    ----------
    lps : dict
        Every logical processor the platform has (the BIOS enabled), APIC ID -> package number:
        online or not, each counts (``num_of_lps``).
    rule : Rule or str
        ``strict`` or ``relaxed`` (module docstring).
    tdx_keyids : range
        The TDX private KeyIDs (``IA32_MKTME_KEYID_PARTITIONING``).

    Attributes
    ----------
    state : SysState
    lp_initialized : set of int
        APIC IDs of the LPs that ran TDH.SYS.LP.INIT.
    packages_configured : set of int
    calls : list of dict
        Every call: ``{"lp", "leaf", "status"}`` (leaf and status by name), in order.
    """

    def __init__(self, lps, *, rule=Rule.RELAXED, tdx_keyids=range(32, 64)):
        if not lps:
            raise ValueError("a TDX platform has at least one logical processor")
        self.lps = dict(lps)
        self.packages = sorted(set(self.lps.values()))
        self.rule = Rule(rule)
        self.tdx_keyids = tdx_keyids
        self.state = SysState.SYSINIT_PENDING
        self.lp_initialized = set()
        self.packages_configured = set()
        self.global_keyid = None
        self.tdmrs = []
        self.calls = []

    @property
    def ready(self):
        """Every TDMR initialised: Linux's TDX_MODULE_INITIALIZED."""
        return self.state is SysState.SYS_READY and bool(self.tdmrs) and all(
            t.next >= t.base + t.size for t in self.tdmrs)

    def uninitialized_lps(self):
        """APIC IDs of the present LPs that never ran TDH.SYS.LP.INIT."""
        return [apic_id for apic_id in self.lps if apic_id not in self.lp_initialized]

    def call(self, lp, leaf, *, rcx=0, rdx=0, r8=0, tdmrs=()):
        """SEAMCALL ``leaf`` on the LP with APIC ID ``lp``; returns ``(status, outputs)``, outputs
        a dict of output registers (``rdx``, ``r8``).  ``tdmrs`` stands for the TDMR list RCX
        points at in TDH.SYS.CONFIG (:class:`Tdmr` s); RDX must give its length."""
        if lp not in self.lps:
            raise ValueError(f"APIC ID {lp:#x} is not a logical processor of this platform")
        leaf = Leaf(leaf)
        status, outputs = self._dispatch(lp, leaf, rcx, rdx, r8, tdmrs)
        self.calls.append({"lp": lp, "leaf": leaf.name, "status": status_name(status)})
        return status, outputs

    def _dispatch(self, lp, leaf, rcx, rdx, r8, tdmrs):
        if self.state is not SysState.SYS_READY and leaf not in _INIT_LEAVES:
            return Status.TDX_SYS_NOT_READY, {}
        if leaf is Leaf.TDH_SYS_INIT:
            return self._sys_init(rcx), {}
        if leaf is Leaf.TDH_SYS_LP_INIT:
            return self._lp_init(lp), {}
        if lp not in self.lp_initialized:
            return Status.TDX_SYS_LP_INIT_NOT_DONE, {}
        if leaf is Leaf.TDH_SYS_RD:
            return Status.TDX_SUCCESS, {"r8": FEATURES0_NO_RBP_MOD}
        if leaf is Leaf.TDH_SYS_CONFIG:
            return self._config(rdx, r8, tdmrs), {}
        if leaf is Leaf.TDH_SYS_KEY_CONFIG:
            return self._key_config(lp), {}
        return self._tdmr_init(rcx)

    def _sys_init(self, rcx):
        if self.state is not SysState.SYSINIT_PENDING:
            return Status.TDX_SYS_INIT_NOT_PENDING
        if rcx != 0:
            return Status.TDX_OPERAND_INVALID | OPERAND_RCX
        self.state = SysState.SYSINIT_DONE
        return Status.TDX_SUCCESS

    def _lp_init(self, lp):
        if self.state is SysState.SYSINIT_PENDING or (
                self.rule is Rule.STRICT and self.state is not SysState.SYSINIT_DONE):
            return Status.TDX_SYS_LP_INIT_NOT_PENDING
        if lp in self.lp_initialized:
            return Status.TDX_SYS_LP_INIT_DONE
        self.lp_initialized.add(lp)
        return Status.TDX_SUCCESS

    def _config(self, count, keyid, tdmrs):
        if self.state is not SysState.SYSINIT_DONE:
            return Status.TDX_SYS_CONFIG_NOT_PENDING
        if self.rule is Rule.STRICT and len(self.lp_initialized) < len(self.lps):
            return Status.TDX_SYS_CONFIG_NOT_PENDING
        if not 1 <= count <= MAX_TDMRS or count != len(tdmrs):
            return Status.TDX_OPERAND_INVALID | OPERAND_RDX
        if keyid not in self.tdx_keyids:
            return Status.TDX_OPERAND_INVALID | OPERAND_R8
        self.global_keyid = keyid
        self.tdmrs = [Tdmr(t.base, t.size) for t in tdmrs]
        self.state = SysState.SYSCONFIG_DONE
        return Status.TDX_SUCCESS

    def _key_config(self, lp):
        if self.state is not SysState.SYSCONFIG_DONE:
            return Status.TDX_SYS_KEY_CONFIG_NOT_PENDING
        package = self.lps[lp]
        if package in self.packages_configured:
            return Status.TDX_KEY_CONFIGURED
        self.packages_configured.add(package)
        if len(self.packages_configured) == len(self.packages):
            self.state = SysState.SYS_READY
        return Status.TDX_SUCCESS

    def _tdmr_init(self, base):
        tdmr = next((t for t in self.tdmrs if t.base == base), None)
        if tdmr is None or base % _GIB:
            return Status.TDX_OPERAND_INVALID | OPERAND_RCX, {"rdx": 0}
        end = tdmr.base + tdmr.size
        if tdmr.next >= end:
            return Status.TDX_TDMR_ALREADY_INITIALIZED, {"rdx": 0}
        tdmr.next = min(end, tdmr.next + TDMR_INIT_CHUNK)
        # the next address is rounded down to 1 GiB: no 1 GiB block is used half-initialised
        return Status.TDX_SUCCESS, {"rdx": tdmr.next & ~(_GIB - 1)}

