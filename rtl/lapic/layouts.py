"""Bit layouts of the local APIC registers and of the fabric message, declared once.

The RTL, the Python models and the tests all take field positions from here
(``docs/spec/lapic.md`` §2.1 for the ICR, §4 for the ESR, §1 for IA32_APIC_BASE).
"""

from amaranth import Cat, Const, unsigned
from amaranth.lib import data, enum

__all__ = [
    "DeliveryMode", "DestMode", "Shorthand", "Level", "Trigger",
    "Icr", "Esr", "ApicBase", "Svr", "FabricMessage", "TimerMode", "Lvt",
    "TIMER_DIVIDE_CODES", "TIMER_DIVIDE_VALUES", "LVT_MODE_BITS", "MSR_IA32_TSC",
    "MSR_IA32_TSC_DEADLINE",
    "ICR_X2APIC_RESERVED", "XAPIC_BROADCAST", "X2APIC_BROADCAST", "XAPIC_MAX_ID",
    "MSR_IA32_APIC_BASE", "MSR_X2APIC_FIRST", "MSR_X2APIC_LAST", "XAPIC_DEFAULT_BASE",
    "x2apic_logical_id",
]


class DeliveryMode(enum.Enum, shape=unsigned(3)):
    """ICR bits 10:8 (docs/spec/lapic.md §2.1) and LVT bits 10:8 (SDM vol. 3 §11.5.1): one
    encoding.  An LVT takes Fixed, SMI, NMI, INIT and ExtINT; the ICR all but ExtINT."""

    FIXED = 0b000
    LOWEST_PRIORITY = 0b001
    SMI = 0b010
    RESERVED_3 = 0b011   # 82489DX remote read; refused by the sender (see LocalApic docstring)
    NMI = 0b100
    INIT = 0b101
    STARTUP = 0b110
    EXTINT = 0b111       # only in LVT and I/O APIC entries; in the ICR refused by the sender


class DestMode(enum.Enum, shape=unsigned(1)):
    PHYSICAL = 0
    LOGICAL = 1


class Shorthand(enum.Enum, shape=unsigned(2)):
    NONE = 0b00
    SELF = 0b01
    ALL_INCLUDING_SELF = 0b10
    ALL_EXCLUDING_SELF = 0b11


class Level(enum.Enum, shape=unsigned(1)):
    DEASSERT = 0
    ASSERT = 1


class Trigger(enum.Enum, shape=unsigned(1)):
    EDGE = 0
    LEVEL = 1


class Icr(data.Struct):
    """Interrupt Command Register, 64 bits (xAPIC: ICR_LO @0x300 + ICR_HI @0x310; x2APIC: MSR 0x830).

    ::

        63          32 31   20 19  18 17 16 15 14 13 12 11 10  8 7      0
        | destination |  rsvd | shorthand| rsvd|T |L |r |DS|DM| mode | vector |

    In xAPIC mode only destination[31:24] (ICR bits 63:56) is kept.
    """

    vector: unsigned(8)
    delivery_mode: DeliveryMode
    dest_mode: DestMode
    delivery_status: unsigned(1)
    rsvd13: unsigned(1)
    level: Level
    trigger: Trigger
    rsvd16: unsigned(2)
    shorthand: Shorthand
    rsvd20: unsigned(12)
    destination: unsigned(32)


def _mask(layout, *names):
    value = 0
    for name in names:
        field = data.Layout.cast(layout)[name]
        value |= ((1 << field.width) - 1) << field.offset
    return value


#: x2APIC ICR bits that must be zero (WRMSR with any of them set is #GP; docs/spec/lapic.md §2.1, §8 #13).
ICR_X2APIC_RESERVED = _mask(Icr, "rsvd13", "rsvd16", "rsvd20")
XAPIC_BROADCAST = 0xFF
X2APIC_BROADCAST = 0xFFFF_FFFF
#: the largest APIC ID an xAPIC can hold; an APIC with a larger one runs only in x2APIC mode
XAPIC_MAX_ID = XAPIC_BROADCAST - 1


class Esr(data.Struct):
    """Error Status Register (docs/spec/lapic.md §4).  Bits 0, 1, 3 are P6 APIC-bus errors and never set.

    apwake uses ``send_accept`` (bit 2) to make a refused or unaccepted IPI visible: the
    message reached no APIC (see :class:`apwake.rtl.lapic.local_apic.LocalApic`).
    """

    send_checksum: unsigned(1)
    receive_checksum: unsigned(1)
    send_accept: unsigned(1)
    receive_accept: unsigned(1)
    redirectable_ipi: unsigned(1)
    send_illegal_vector: unsigned(1)
    receive_illegal_vector: unsigned(1)
    illegal_register_address: unsigned(1)
    rsvd8: unsigned(24)


class ApicBase(data.Struct):
    """IA32_APIC_BASE (MSR 0x1B), docs/spec/lapic.md §1."""

    rsvd0: unsigned(8)
    bsp: unsigned(1)
    rsvd9: unsigned(1)
    extd: unsigned(1)
    enable: unsigned(1)
    base: unsigned(24)      # physical address bits 35:12 (MAXPHYADDR = 36 in apwake)
    rsvd36: unsigned(28)


class Svr(data.Struct):
    """Spurious-interrupt Vector Register (docs/spec/lapic.md §5)."""

    spurious_vector: unsigned(8)
    apic_enable: unsigned(1)
    focus_disable: unsigned(1)
    rsvd10: unsigned(2)
    eoi_broadcast_suppression: unsigned(1)
    rsvd13: unsigned(19)


class FabricMessage(data.Struct):
    """What travels on the IPI fabric: the ICR fields that matter to receivers.

    ``x2apic`` says in which format the sender wrote the destination (8-bit xAPIC with
    broadcast 0xFF, or 32-bit x2APIC with broadcast 0xFFFF_FFFF).  The sender's format decides
    what a broadcast is; receivers match IDs under their own mode, without aliasing (docs/spec/lapic.md
    §8 #16, #17; see :class:`apwake.rtl.lapic.local_apic.LocalApic`).
    """

    vector: unsigned(8)
    delivery_mode: DeliveryMode
    dest_mode: DestMode
    level: Level
    trigger: Trigger
    shorthand: Shorthand
    destination: unsigned(32)
    x2apic: unsigned(1)


MSR_IA32_APIC_BASE = 0x1B
MSR_X2APIC_FIRST = 0x800
MSR_X2APIC_LAST = 0xBFF
XAPIC_DEFAULT_BASE = 0xFEE0_0000
MSR_IA32_TSC = 0x10                 #: IA32_TIME_STAMP_COUNTER (SDM vol. 3 §18.17)
MSR_IA32_TSC_DEADLINE = 0x6E0       #: TSC-deadline timer target (SDM vol. 3 §11.5.4.1)


class TimerMode(enum.Enum, shape=unsigned(2)):
    """LVT timer bits 18:17 (SDM vol. 3 §11.5.4)."""

    ONE_SHOT = 0b00
    PERIODIC = 0b01
    TSC_DEADLINE = 0b10
    RESERVED = 0b11       # apwake counts it as one-shot (see LocalApic)


class Lvt(data.Struct):
    """A local vector table entry (SDM vol. 3 §11.5.1).

    ::

        31     19 18 17 16 15 14 13 12 11 10   8 7      0
        |  rsvd  |timer|M |T |RI|P |DS|r | mode | vector |

    ``timer_mode`` exists in the timer LVT only, ``trigger``/``remote_irr``/``polarity`` in
    LINT0/LINT1 only, ``delivery_mode`` not in the timer and error LVTs (always Fixed there);
    the register table's write masks say which bits each LVT keeps.
    """

    vector: unsigned(8)
    delivery_mode: DeliveryMode
    rsvd11: unsigned(1)
    delivery_status: unsigned(1)
    polarity: unsigned(1)          # LINT: 0 active high, 1 active low
    remote_irr: unsigned(1)        # LINT, level-triggered Fixed: accepted, EOI not yet seen
    trigger: Trigger               # LINT only
    mask: unsigned(1)
    timer_mode: TimerMode
    rsvd19: unsigned(13)


#: Divide configuration register: the value of bits {3, 1, 0} -> divisor (SDM vol. 3 §11.5.4,
#: figure "Divide Configuration Register").
TIMER_DIVIDE_CODES = {0b000: 2, 0b001: 4, 0b010: 8, 0b011: 16, 0b100: 32, 0b101: 64,
                      0b110: 128, 0b111: 1}

#: divisor -> the TIMER_DIVIDE register value that selects it (code bit 2 is register bit 3)
TIMER_DIVIDE_VALUES = {divisor: ((code & 0b100) << 1) | (code & 0b011)
                       for code, divisor in TIMER_DIVIDE_CODES.items()}
#: the LVT delivery-mode bits: an LVT whose write mask has them chooses its mode
LVT_MODE_BITS = _mask(Lvt, "delivery_mode")


def x2apic_logical_id(apic_id):
    """The x2APIC logical ID (LDR) derived from a 32-bit x2APIC ID value (docs/spec/lapic.md §1):
    cluster ``apic_id[19:4]`` in bits 31:16, one-hot position ``1 << apic_id[3:0]`` in 15:0
    (SDM vol. 3A §11.12.10.2).  ``apic_id`` is an Amaranth value (the RTL) or an int (models and
    tests), and so is the result."""
    if isinstance(apic_id, int):
        return ((apic_id >> 4) & 0xFFFF) << 16 | 1 << (apic_id & 0xF)
    return Cat((Const(1, 16) << apic_id[0:4])[0:16], apic_id[4:20])
