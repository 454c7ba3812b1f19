"""GHCB MSR protocol and GHCB page layouts and codes (docs/spec/ghcb.md §1, §2, §3, §4, §6).

Declared once here: the RTL uses them as shapes and constants, the CPU models and tests pack
and unpack with :mod:`apwake.sim.harness.codec`.
"""

import enum as _enum

from amaranth import Cat, Const, unsigned
from amaranth.lib import data, enum

__all__ = ["MSR_GHCB", "MsrCode", "GhcbMsr", "SevInfo", "CpuidRequest", "Termination",
           "HoldReply", "NaeExit", "JumpTableOp", "HvResponse", "MalformedReason",
           "VcpuState", "HoldType", "GHCB_OFFSETS", "VALID_BIT", "GFN_NONE", "HV_FEATURES",
           "TermReason", "PROTOCOL_MIN", "PROTOCOL_MAX", "JumpTableEntry", "ApCreationOp",
           "ApCreationRequest", "SEV_FEATURES", "DEFAULT_VMSA_FEATURES", "VMSA_REFUSED_ALIGNMENT",
           "VMSA_GFN_BITS", "layout_bits", "layout_cat"]

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
    MSR request code that ended it (0 for the NAE form).

    ``no_vmsa`` (with reason 0/0 and code 0): not a guest request but the VMM's end of the VM: the vCPU
    was made runnable with no VMSA (an INIT-SIPI after SNP AP Destroy), KVM refuses the VMRUN
    (``pre_sev_run``: "Reject KVM_RUN if userspace attempts to run the vCPU with an invalid
    VMSA"), KVM_RUN fails with -EINVAL and the VMM stops the VM."""

    valid: unsigned(1)
    vcpu: unsigned(12)      # up to 4096 vCPUs (unit.MAX_VCPUS)
    reason_set: unsigned(4)
    reason_code: unsigned(8)
    code: unsigned(12)
    no_vmsa: unsigned(1)


class NaeExit(enum.Enum, shape=unsigned(32)):
    """SW_EXITCODE values the unit serves (§2); anything else gets (2, 6)."""

    AP_HLT_LOOP = 0x8000_0004       # AP reset hold, GHCB-page form
    AP_JUMP_TABLE = 0x8000_0005
    AP_CREATION = 0x8000_0013       # v2, SNP only (§6)
    HV_FEATURES = 0x8000_FFFD       # v2
    TERM_REQUEST = 0x8000_FFFE      # v2


class JumpTableOp(enum.Enum, shape=unsigned(32)):
    SET = 0
    GET = 1


class ApCreationOp(enum.Enum, shape=unsigned(32)):
    """SW_EXITINFO1[31:0] of AP_CREATION (uapi ``SVM_VMGEXIT_AP_CREATE_ON_INIT`` / ``_CREATE`` /
    ``_DESTROY``).  KVM compares all 32 bits: a VMPL in [19:16] (SVSM guests) is a bad request."""

    CREATE_ON_INIT = 0
    CREATE = 1
    DESTROY = 2


class ApCreationRequest(data.Struct):
    """SW_EXITINFO1 of AP_CREATION: [31:0] the request, [63:32] the target's APIC ID (Linux
    ``vmgexit_ap_control``)."""

    request: ApCreationOp
    apic_id: unsigned(32)


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
    HALTED = 3                  # the CPU models' hlt; the unit: an SNP vCPU with its VMSA dropped (§6)
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

#: SEV_FEATURES bits (the VMSA's field at 0x3B0 = SEV_STATUS >> 2; Linux
#: ``sev_status_feat_names``, KVM ``SVM_SEV_FEAT_*``)
SEV_FEATURES = {"snp_active": 1 << 0, "vtom": 1 << 1, "reflect_vc": 1 << 2,
                "restricted_injection": 1 << 3, "alternate_injection": 1 << 4,
                "debug_swap": 1 << 5}
#: an SNP VM's features by default: SNPActive, which KVM sets for every SNP VM
#: (``__sev_guest_init``), and nothing the VMM adds
DEFAULT_VMSA_FEATURES = SEV_FEATURES["snp_active"]
#: KVM refuses a VMSA at a 2 MiB-aligned GPA (the RMP erratum: ``IS_ALIGNED(exit_info_2,
#: PMD_SIZE)`` in ``sev_snp_ap_creation``); Linux allocates 8 KiB and uses the second page
VMSA_REFUSED_ALIGNMENT = 2 << 20
#: the VMSA GPA the unit keeps: a page frame below 4 GiB (the unit's guest-physical space is the
#: 32-bit memory bus; a GPA at or above it fails KVM's ``page_address_valid`` legality check)
VMSA_GFN_BITS = 20


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
