"""The host side of the TDX module's ABI: SEAMCALL leaf numbers, completion statuses, the
software statuses Linux's SEAMCALL wrapper makes of a fault, and the errno Linux maps each to.

Sources, public:

* Leaf numbers: Linux ``arch/x86/virt/vmx/tdx/tdx.h`` (``TDH_SYS_INIT`` 33 and so on), the
  same as the module's ``include/tdx_api_defs.h`` (github.com/intel/tdx-module).
* Completion statuses: the module's ``include/auto_gen/tdx_error_codes_defs.h``
  (``TDX_SYS_LP_INIT_NOT_DONE`` 0xC000_0502_0000_0000 and so on).  Bit 63 is the error bit, bit
  62 "non-recoverable"; bits 31:0 carry operand details (``api_error_with_operand_id``: the
  operand's register number, RCX = 1, RDX = 2, R8 = 8).
* Software statuses and their errno: Linux ``arch/x86/include/asm/tdx.h`` (``TDX_SW_ERROR`` =
  ``TDX_ERROR | GENMASK_ULL(47, 40)``, ``TDX_SEAMCALL_VMFAILINVALID``, ``TDX_SEAMCALL_GP``,
  ``TDX_SEAMCALL_UD``), ``arch/x86/virt/vmx/tdx/tdxcall.S`` (the fault fix-up ORs
  ``TDX_SW_ERROR`` into the trap number: tip commit 7b804135d4d1, "x86/virt/tdx: Make
  TDX_MODULE_CALL handle SEAMCALL #UD and #GP") and ``arch/x86/virt/vmx/tdx/tdx.c``
  (``sc_retry_prerr``: VMFAILINVALID -> -ENODEV, #GP -> -EOPNOTSUPP, #UD -> -EACCES, any other
  failure printed as "SEAMCALL (leaf) failed: status" and -EIO).
"""

import enum

__all__ = ["Leaf", "Status", "TDX_ERROR", "TDX_SW_ERROR", "TDX_SEAMCALL_VMFAILINVALID",
           "TDX_SEAMCALL_GP", "TDX_SEAMCALL_UD", "TDX_RND_NO_ENTROPY", "X86_TRAP_UD", "X86_TRAP_GP",
           "OPERAND_RCX", "OPERAND_RDX", "OPERAND_R8", "Errno", "status_name", "errno_of",
           "seamcall_error_message"]


class Leaf(enum.IntEnum):
    """SEAMCALL leaf numbers (RAX bits 15:0; bits 23:16 are the leaf version, 0 here)."""

    TDH_SYS_KEY_CONFIG = 31
    TDH_SYS_INIT = 33
    TDH_SYS_RD = 34
    TDH_SYS_LP_INIT = 35
    TDH_SYS_TDMR_INIT = 36
    TDH_SYS_CONFIG = 45


class Status(enum.IntEnum):
    """Completion statuses of the module (RAX after SEAMCALL), the ones this model returns."""

    TDX_SUCCESS = 0
    TDX_OPERAND_INVALID = 0xC000_0100_0000_0000
    TDX_SYS_BUSY = 0x8000_0202_0000_0000
    TDX_SYS_INIT_NOT_PENDING = 0xC000_0500_0000_0000
    TDX_SYS_LP_INIT_NOT_DONE = 0xC000_0502_0000_0000
    TDX_SYS_LP_INIT_DONE = 0xC000_0503_0000_0000
    TDX_SYS_NOT_READY = 0xC000_0505_0000_0000
    TDX_SYS_SHUTDOWN = 0xC000_0506_0000_0000
    TDX_SYS_KEY_CONFIG_NOT_PENDING = 0xC000_0507_0000_0000
    TDX_SYS_LP_INIT_NOT_PENDING = 0xC000_050B_0000_0000
    TDX_SYS_CONFIG_NOT_PENDING = 0xC000_050C_0000_0000
    TDX_KEY_CONFIGURED = 0x0000_0815_0000_0000
    TDX_TDMR_ALREADY_INITIALIZED = 0x0000_0A03_0000_0000


#: bit 63 of a status: an error
TDX_ERROR = 1 << 63
#: a status class (bits 47:40 all ones) the module never returns: Linux's own failures
TDX_SW_ERROR = TDX_ERROR | (0xFF << 40)
#: SEAMCALL ended with CF = 1: no module loaded (SEAMRR set up, nothing in it)
TDX_SEAMCALL_VMFAILINVALID = TDX_SW_ERROR | 0xFFFF_0000
X86_TRAP_UD, X86_TRAP_GP = 6, 13
TDX_SEAMCALL_GP = TDX_SW_ERROR | X86_TRAP_GP
TDX_SEAMCALL_UD = TDX_SW_ERROR | X86_TRAP_UD
#: retried by Linux's sc_retry (not returned by this model's module)
TDX_RND_NO_ENTROPY = 0x8000_0203_0000_0000
#: operand IDs in bits 31:0 of an operand error (the register's number)
OPERAND_RCX, OPERAND_RDX, OPERAND_R8 = 1, 2, 8

_STATUS_MASK = 0xFFFF_FFFF_0000_0000


class Errno(enum.IntEnum):
    """The errno values the host flows return (negated in the kernel: -ENODEV)."""

    EIO = 5
    EACCES = 13
    EFAULT = 14
    EBUSY = 16
    ENODEV = 19
    EINVAL = 22
    EOPNOTSUPP = 95
    ETIMEDOUT = 110


def status_name(status):
    """``"TDX_SYS_LP_INIT_NOT_DONE"`` and the like for a 64-bit status (operand details in bits
    31:0 shown as ``+operand N``); the hex value for one this model does not know."""
    for name, value in (("TDX_SEAMCALL_VMFAILINVALID", TDX_SEAMCALL_VMFAILINVALID),
                        ("TDX_SEAMCALL_GP", TDX_SEAMCALL_GP), ("TDX_SEAMCALL_UD", TDX_SEAMCALL_UD)):
        if status == value:
            return name
    try:
        name = Status(status & _STATUS_MASK).name
    except ValueError:
        return f"{status:#018x}"
    operand = status & 0xFFFF_FFFF
    return name + (f"+operand {operand}" if operand else "")


def errno_of(status):
    """What Linux's ``sc_retry_prerr`` returns for a SEAMCALL's ``status``: 0 on success, else a
    negative :class:`Errno`."""
    if status == Status.TDX_SUCCESS:
        return 0
    if status == TDX_SEAMCALL_VMFAILINVALID:
        return -Errno.ENODEV
    if status == TDX_SEAMCALL_GP:
        return -Errno.EOPNOTSUPP
    if status == TDX_SEAMCALL_UD:
        return -Errno.EACCES
    return -Errno.EIO


def seamcall_error_message(leaf, status):
    """The line Linux prints for a failed SEAMCALL it does not map to a fault
    (``seamcall_err``): ``"SEAMCALL (0x0000000000000023) failed: 0xc000050300000000"``."""
    return f"SEAMCALL ({int(leaf):#018x}) failed: {status:#018x}"
