"""GHCB MSR protocol and GHCB page layouts and codes (docs/spec/ghcb.md §1, §2, §3, §4).

Declared once here: the RTL uses them as shapes and constants, the CPU models and tests pack
and unpack with :mod:`apwake.sim.harness.codec`.
"""

import enum as _enum

from amaranth import Cat, Const, unsigned
from amaranth.lib import data, enum

__all__ = ["MSR_GHCB", "MsrCode", "GhcbMsr", "SevInfo", "CpuidRequest", "Termination",
           "HoldReply", "NaeExit", "JumpTableOp", "HvResponse", "MalformedReason",
           "VcpuState", "HoldType", "GHCB_OFFSETS", "VALID_BIT", "GFN_NONE", "HV_FEATURES",
           "TermReason", "PROTOCOL_MIN", "PROTOCOL_MAX", "JumpTableEntry", "layout_bits", "layout_cat"]

#: MSR_AMD64_SEV_ES_GHCB
MSR_GHCB = 0xC001_0130
#: the protocol versions Linux and KVM know (§1 "Version bookkeeping")
PROTOCOL_MIN, PROTOCOL_MAX = 1, 2
#: "no preferred GHCB GPA": all ones in the 52-bit GFN field (§1, 0x011)
GFN_NONE = (1 << 52) - 1


class MsrCode(enum.Enum, shape=unsigned(12)):
    """GHCBInfo, bits [11:0] of the GHCB MSR (§1 table): requests even, responses odd."""

    GHCB_GPA = 0x000            # the value is a GHCB page address (page protocol)
    SEV_INFO_RESP = 0x001
    SEV_INFO_REQ = 0x002
    CPUID_REQ = 0x004
    CPUID_RESP = 0x005
    AP_RESET_HOLD_REQ = 0x006   # v2
    AP_RESET_HOLD_RESP = 0x007
    PREF_GPA_REQ = 0x010        # v2, SNP only
    PREF_GPA_RESP = 0x011
    REG_GPA_REQ = 0x012         # v2, SNP only
    REG_GPA_RESP = 0x013
    PSC_REQ = 0x014             # v2, SNP only
    PSC_RESP = 0x015
    HV_FEATURES_REQ = 0x080     # v2
    HV_FEATURES_RESP = 0x081
    TERM_REQ = 0x100


class GhcbMsr(data.Struct):
    info: MsrCode
    data: unsigned(52)


class SevInfo(data.Struct):
    """0x001 response: [63:48] max, [47:32] min protocol, [31:24] C-bit position."""

    info: MsrCode
    zero: unsigned(12)
    cbit: unsigned(8)
    min_version: unsigned(16)
    max_version: unsigned(16)


class CpuidRequest(data.Struct):
    """0x004 request / 0x005 response: [31:30] register (0 EAX .. 3 EDX), [63:32] function
    (request) or value (response)."""

    info: MsrCode
    zero: unsigned(18)
    register: unsigned(2)
    value: unsigned(32)


class Termination(data.Struct):
    """0x100: [15:12] reason set, [23:16] reason code."""

    info: MsrCode
    reason_set: unsigned(4)
    reason_code: unsigned(8)
    rest: unsigned(40)


class HoldReply(data.Struct):
    """0x007 response: data non-zero = woken by INIT-SIPI, 0 = not a wake-up (§1)."""

    info: MsrCode
    woken: unsigned(52)


class TermReason(data.Struct):
    """The unit's termination status: which vCPU and why (set 0 generic, 1 Linux, §1), and the
    MSR request code that ended it (0 for the NAE form)."""

    valid: unsigned(1)
    vcpu: unsigned(12)      # up to 4096 vCPUs (unit.MAX_VCPUS)
    reason_set: unsigned(4)
    reason_code: unsigned(8)
    code: unsigned(12)


class NaeExit(enum.Enum, shape=unsigned(32)):
    """SW_EXITCODE values the unit serves (§2); anything else gets (2, 6)."""

    AP_HLT_LOOP = 0x8000_0004       # AP reset hold, GHCB-page form
    AP_JUMP_TABLE = 0x8000_0005
    HV_FEATURES = 0x8000_FFFD       # v2
    TERM_REQUEST = 0x8000_FFFE      # v2


class JumpTableOp(enum.Enum, shape=unsigned(32)):
    SET = 0
    GET = 1


class HvResponse(enum.Enum, shape=unsigned(32)):
    """SW_EXITINFO1[31:0] written back (§2)."""

    OK = 0
    ISSUE_EXCEPTION = 1
    MALFORMED_INPUT = 2


class MalformedReason(enum.Enum, shape=unsigned(32)):
    """SW_EXITINFO2 with MALFORMED_INPUT (§2)."""

    NOT_REGISTERED = 1
    INVALID_USAGE = 2
    INVALID_SCRATCH = 3
    MISSING_INPUT = 4
    INVALID_INPUT = 5
    INVALID_EVENT = 6


class VcpuState(enum.Enum, shape=unsigned(4)):
    """KVM_MP_STATE_* values (include/uapi/linux/kvm.h, §4): the unit moves a vCPU through them,
    and the CPU models (:class:`apwake.sim.models.cpu.model.MpState` is this enum) use them for every CPU."""

    RUNNABLE = 0
    UNINITIALIZED = 1
    INIT_RECEIVED = 2
    HALTED = 3                  # the CPU models' hlt; the unit never sets it
    STOPPED = 5                 # terminated: KVM_EXIT_SYSTEM_EVENT / SEV_TERM, never resumed
    AP_RESET_HOLD = 9


class HoldType(enum.Enum, shape=unsigned(2)):
    """``ap_reset_hold_type`` (§4)."""

    NONE = 0
    NAE_EVENT = 1
    MSR_PROTO = 2


class JumpTableEntry(data.Struct):
    """The AP jump table's first dword: real-mode IP and CS of the AP entry (§3)."""

    ip: unsigned(16)
    cs: unsigned(16)


#: byte offsets in the GHCB page (§2)
GHCB_OFFSETS = {"rax": 0x1F8, "rcx": 0x308, "rdx": 0x310, "rbx": 0x318,
                "sw_exit_code": 0x390, "sw_exit_info_1": 0x398, "sw_exit_info_2": 0x3A0,
                "sw_scratch": 0x3A8, "valid_bitmap": 0x3F0, "protocol_version": 0xFFA,
                "ghcb_usage": 0xFFC}
#: valid-bitmap bit of a save-area field = its offset / 8
VALID_BIT = {name: offset // 8 for name, offset in GHCB_OFFSETS.items() if offset < 0x3F0}

#: HV feature bits (§1): bit 0 SEV-SNP, bit 1 SNP AP creation
HV_FEATURES = {"snp": 1 << 0, "snp_ap_creation": 1 << 1}


def layout_bits(layout, **fields):
    """The integer of a constant ``layout`` value (a reset value, a fixed reply)."""
    return data.Layout.cast(layout).const(fields).as_bits()


def layout_cat(layout, **fields):
    """A value of ``layout`` built from ``fields`` (values or constants; others 0) without a
    signal, so constant fields stay constants in the Verilog."""
    parts = []
    for name, field in sorted(data.Layout.cast(layout), key=lambda item: item[1].offset):
        value = fields.get(name, 0)
        value = value.value if isinstance(value, _enum.Enum) else value
        parts.append(Const(value, field.width) if isinstance(value, int) else value[:field.width])
    return Cat(*parts)
