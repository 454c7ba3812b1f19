"""Reference model of who accepts an IPI (docs/spec/lapic.md §3, §5), written independently of the RTL.

Scoreboards feed it the fabric's messages and the receivers' register state and compare its
answer with the ``accept`` bits the hardware reports.
"""

from dataclasses import dataclass

from apwake.rtl.lapic.layouts import (DeliveryMode, DestMode, Level, Shorthand, XAPIC_BROADCAST,
                               X2APIC_BROADCAST)

__all__ = ["ApicState", "addressed", "expected_acceptors", "x2apic_ldr", "priority_class"]


def x2apic_ldr(apic_id):
    """Derived x2APIC logical ID: cluster ID[19:4] in [31:16], 1 << ID[3:0] in [15:0] (SDM vol. 3A
    §11.12.10.2; written here from the SDM, apart from the RTL's, as a reference model is)."""
    return ((apic_id >> 4) & 0xFFFF) << 16 | 1 << (apic_id & 0xF)


def priority_class(vector):
    return vector >> 4


@dataclass
class ApicState:
    """What a receiver's decision depends on."""

    apic_id: int
    mode: str = "xapic"          # "xapic", "x2apic" or "disabled"
    sw_enabled: bool = False
    ldr: int = 0                 # xAPIC LDR register value
    dfr: int = 0xFFFF_FFFF

    def _physical(self, msg):
        dest = msg["destination"]
        if msg["x2apic"]:
            if dest == X2APIC_BROADCAST:
                return True
        elif dest == XAPIC_BROADCAST:
            return True
        my_id = self.apic_id if self.mode == "x2apic" else self.apic_id & 0xFF
        return dest == my_id

    def _logical(self, msg):
        dest = msg["destination"]
        broadcast = dest == (X2APIC_BROADCAST if msg["x2apic"] else XAPIC_BROADCAST)
        if self.mode != "x2apic" and self.ldr >> 24 == 0:
            return False          # LDR = 0 matches no logical destination (docs/spec/lapic.md §3)
        if broadcast:
            return True
        if self.mode == "x2apic":
            ldr = x2apic_ldr(self.apic_id)
            return (dest >> 16) == (ldr >> 16) and bool(dest & ldr & 0xFFFF)
        if dest > 0xFF:
            return False
        ldr8 = self.ldr >> 24
        model = self.dfr >> 28
        if model == 0xF:
            return bool(ldr8 & dest)
        if model == 0x0:
            return (dest >> 4) == (ldr8 >> 4) and bool(dest & ldr8 & 0xF)
        return False


def addressed(msg, receiver, sender, state):
    """Whether port ``receiver`` (state ``state``) is a destination of ``msg`` sent by port
    ``sender`` (shorthand and destination rules only)."""
    if msg["delivery_mode"] is DeliveryMode.INIT and msg["level"] is Level.DEASSERT:
        return True
    shorthand = msg["shorthand"]
    if shorthand is Shorthand.SELF:
        return receiver == sender
    if shorthand is Shorthand.ALL_INCLUDING_SELF:
        return True
    if shorthand is Shorthand.ALL_EXCLUDING_SELF:
        return receiver != sender
    if msg["dest_mode"] is DestMode.LOGICAL:
        return state._logical(msg)
    return state._physical(msg)


def expected_acceptors(msg, sender, states):
    """Port indices that must accept ``msg`` (for lowest priority: the candidates)."""
    fixed_like = msg["delivery_mode"] in (DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY)
    return {i for i, s in enumerate(states)
            if s.mode != "disabled" and (s.sw_enabled or not fixed_like)
            and addressed(msg, i, sender, s)}
