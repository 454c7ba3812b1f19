"""Layouts and codes of the start-context unit, declared once: the guest's ``struct vmi_ap_state``,
the state a vCPU is launched in, the calls, their outcomes and the launch records.

The RTL uses them as shapes and constants, the verification IP and the tests pack and unpack with
:mod:`apwake.sim.harness.codec`, and docs/ARCHITECTURE.md ("Start-context unit") shows them as
tables.

Sources: Linux 2.6.2x ``arch/x86/include/asm/vmi.h`` (``struct vmi_ap_state``) and
``arch/x86/kernel/vmi_32.c`` (``vmi_startup_ipi_hook``); AMD64 Architecture Programmer's Manual
vol. 2, appendix B "VMCB Layout", table "VMCB State Save Area" (the segment format); Intel SDM
vol. 3 §2.5 "Control Registers", §2.2.1 (EFER), §3.4.5 "Segment Descriptors", vol. 1 §3.4.3
(EFLAGS); KVM ``arch/x86/kvm/x86.c`` (``kvm_is_valid_cr0``, ``kvm_is_valid_sregs``).
"""

from amaranth import unsigned
from amaranth.lib import data, enum

__all__ = ["Segment", "SegmentAttributes", "GdtDescriptor", "DescriptorTable", "StartState",
           "StartOp", "StartStatus", "StateField", "LaunchKind",
           "VMI_AP_STATE_OFFSETS", "VMI_AP_STATE_SIZE", "VMI_AP_STATE_DATA", "VMI_AP_STATE_WORDS",
           "SEGMENTS", "SEGMENT_FIELDS",
           "CR0_DEFINED", "CR0_RESERVED", "CR0_PE", "CR0_PG", "CR0_NW", "CR0_CD",
           "CR4_RESERVED", "EFER_DEFINED", "EFER_RESERVED", "EFER_LME", "EFER_LMA",
           "EFLAGS_RESERVED", "EFLAGS_FIXED1", "EFLAGS_VM"]


class Segment(data.Struct):
    """A segment register as launched, in the SVM VMCB/VMSA format (AMD APM vol. 2, "VMCB State
    Save Area"): 96 bits.

    ``attrib`` [7:0] is byte 5 of the descriptor (type [3:0], S, DPL [1:0], P), [11:8] is bits
    7:4 of byte 6 (AVL, L, D/B, G), [15:12] is 0 (:class:`SegmentAttributes`).  ``limit`` is the
    byte limit: with G = 1 the 20-bit limit ``<< 12 | 0xFFF``.  A null selector gives the
    selector with ``attrib`` = ``limit`` = ``base`` = 0.
    """

    selector: unsigned(16)
    attrib: unsigned(16)
    limit: unsigned(32)
    base: unsigned(32)


class SegmentAttributes(data.Struct):
    """:attr:`Segment.attrib` field by field."""

    type: unsigned(4)
    s: unsigned(1)
    dpl: unsigned(2)
    p: unsigned(1)
    avl: unsigned(1)
    l: unsigned(1)          # noqa: E741  (the SDM's name)
    db: unsigned(1)
    g: unsigned(1)
    zero: unsigned(4)


class GdtDescriptor(data.Struct):
    """An 8-byte code or data segment descriptor in the GDT (Intel SDM vol. 3 §3.4.5, figure
    "Segment Descriptor"), as two little-endian 32-bit words read from guest memory."""

    limit_lo: unsigned(16)
    base_lo: unsigned(24)
    type: unsigned(4)
    s: unsigned(1)
    dpl: unsigned(2)
    p: unsigned(1)
    limit_hi: unsigned(4)
    avl: unsigned(1)
    l: unsigned(1)          # noqa: E741
    db: unsigned(1)
    g: unsigned(1)
    base_hi: unsigned(8)


class DescriptorTable(data.Struct):
    """GDTR or IDTR: 16-bit limit, 32-bit base."""

    limit: unsigned(16)
    base: unsigned(32)


class StartState(data.Struct):
    """The protected-mode state a vCPU is launched in (1184 bits): the guest's
    ``struct vmi_ap_state`` with each selector resolved through the GDT into a :class:`Segment`.
    ``eflags`` is as launched: bit 1 (always 1) set whatever the guest wrote (Linux writes 0).
    LDTR is not carried: the unit refuses any LDTR but 0."""

    cr0: unsigned(32)
    cr2: unsigned(32)
    cr3: unsigned(32)
    cr4: unsigned(32)
    efer: unsigned(64)
    eip: unsigned(32)
    esp: unsigned(32)
    eflags: unsigned(32)
    eax: unsigned(32)
    ebx: unsigned(32)
    ecx: unsigned(32)
    edx: unsigned(32)
    ebp: unsigned(32)
    esi: unsigned(32)
    edi: unsigned(32)
    cs: Segment
    ss: Segment
    ds: Segment
    es: Segment
    fs: Segment
    gs: Segment
    gdtr: DescriptorTable
    idtr: DescriptorTable


class StartOp(enum.Enum, shape=unsigned(2)):
    """What a call asks for."""

    SET_INITIAL_AP_STATE = 0    # VMI SetInitialAPState: arm the context for the target's next SIPI
    START = 1                   # start the (waiting) target now in the context, no INIT/SIPI
    PARAVIRT = 2                # the BSP is paravirtual: a SIPI with no armed context is refused
    # 3 is refused with StartStatus.BAD_OP


class StartStatus(enum.Enum, shape=unsigned(4)):
    """The outcome of a call."""

    OK = 0
    UNKNOWN_APIC_ID = 1     # no vCPU has that APIC ID
    BAD_ADDRESS = 2         # struct GPA not 4-byte aligned, or the struct would cross 4 GiB
    RESERVED_BITS = 3       # a reserved bit set in CR0, CR4, EFER or EFLAGS
    INVALID_STATE = 4       # a state the unit cannot launch (StateField names the register)
    ALREADY_RUNNING = 5     # START to a running vCPU
    BAD_OP = 6              # op 3


class StateField(enum.Enum, shape=unsigned(4)):
    """Which register a refusal names (NONE for the refusals that are not about one)."""

    NONE = 0
    CR0 = 1
    CR3 = 2
    CR4 = 3
    EFER = 4
    EFLAGS = 5
    CS = 6
    SS = 7
    DS = 8
    ES = 9
    FS = 10
    GS = 11
    LDTR = 12
    GDTR = 13
    IDTR = 14


class LaunchKind(enum.Enum, shape=unsigned(2)):
    """What a launch record says happened."""

    REAL_MODE = 0   # an ordinary SIPI start: CS = vector << 8, IP = 0 (state all 0)
    CONTEXT = 1     # start in the carried state (a SIPI with an armed context, or START)
    REFUSED = 2     # a SIPI with no context while the VM is paravirtual: still waiting for SIPI
    DROPPED = 3     # a SIPI to a running vCPU: ignored (reported, so nothing is silently lost)


#: the segment registers in the order the unit resolves and checks them
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
#: the StateField naming each segment register
SEGMENT_FIELDS = {name: StateField[name.upper()] for name in SEGMENTS}

#: ``struct vmi_ap_state`` (Linux asm/vmi.h, i386): name -> (byte offset, size in bytes).  The
#: natural-alignment offsets are also the packed ones (VMware's header packs the struct).
VMI_AP_STATE_OFFSETS = {
    "cr0": (0, 4), "cr2": (4, 4), "cr3": (8, 4), "cr4": (12, 4),
    "efer": (16, 8),
    "eip": (24, 4), "eflags": (28, 4), "eax": (32, 4), "ebx": (36, 4), "ecx": (40, 4),
    "edx": (44, 4), "esp": (48, 4), "ebp": (52, 4), "esi": (56, 4), "edi": (60, 4),
    "cs": (64, 2), "ss": (66, 2), "ds": (68, 2), "es": (70, 2), "fs": (72, 2), "gs": (74, 2),
    "ldtr": (76, 2), "gdtr_limit": (78, 2),
    "gdtr_base": (80, 4), "idtr_base": (84, 4),
    "idtr_limit": (88, 2),
}
#: bytes of data (the packed size)
VMI_AP_STATE_DATA = 90
#: ``sizeof(struct vmi_ap_state)`` on i386 (4-byte struct alignment: 2 bytes of tail padding)
VMI_AP_STATE_SIZE = 92
#: the unit reads the struct as this many aligned 32-bit words (the last holds the padding)
VMI_AP_STATE_WORDS = 23


def _bits(*positions):
    mask = 0
    for position in positions:
        if isinstance(position, range):
            for bit in position:
                mask |= 1 << bit
        else:
            mask |= 1 << position
    return mask


#: CR0 (SDM vol. 3 §2.5): PE 0, MP 1, EM 2, TS 3, ET 4, NE 5, WP 16, AM 18, NW 29, CD 30, PG 31
CR0_PE, CR0_NW, CR0_CD, CR0_PG = 1 << 0, 1 << 29, 1 << 30, 1 << 31
CR0_DEFINED = _bits(range(0, 6), 16, 18, 29, 30, 31)
CR0_RESERVED = ~CR0_DEFINED & 0xFFFF_FFFF
#: CR4 bits reserved on every processor the unit models: 15, 19, 25-31 (SDM vol. 3 §2.5)
CR4_RESERVED = _bits(15, 19, range(25, 32))
#: EFER (SDM vol. 3 §2.2.1, AMD APM vol. 2 §3.1.7): SCE 0, LME 8, LMA 10, NXE 11, SVME 12,
#: LMSLE 13, FFXSR 14, TCE 15; everything else, bits 63:32 too, is reserved
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
EFER_DEFINED = _bits(0, 8, 10, 11, 12, 13, 14, 15)
EFER_RESERVED = ~EFER_DEFINED & (1 << 64) - 1
#: EFLAGS (SDM vol. 1 §3.4.3): bits 3, 5, 15, 22-31 reserved (0); bit 1 always 1; VM is bit 17
EFLAGS_RESERVED = _bits(3, 5, 15, range(22, 32))
EFLAGS_FIXED1 = 1 << 1
EFLAGS_VM = 1 << 17
