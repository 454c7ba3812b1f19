"""Reference model of the start-context unit, written from its rules (docs/ARCHITECTURE.md
"Start-context unit"; Linux ``vmi_32.c``/``asm/vmi.h``; Intel SDM vol. 3 §2.5, §3.4.5, §5.4.1;
KVM ``kvm_is_valid_cr0``/``kvm_is_valid_sregs``), not from the RTL: the block tests compare the
two bit for bit.

* :func:`encode_vmi_ap_state` builds the guest's ``struct vmi_ap_state``; :func:`descriptor` a GDT
  code or data descriptor.
* :func:`decode` is what the unit does with a struct address: the address check, the memory
  reads (in the unit's order, through the caller's reader, so a test also learns which words
  are read) and the validation; it returns the status, the field and the StartState.
* :class:`UnitModel` adds the per-vCPU state (running, armed, paravirtual) and predicts every
  call's outcome and every launch record.

The bit positions of the checks are typed here from the SDM, on purpose not taken from
:mod:`apwake.rtl.start_context.layouts` (``tests/test_start_context.py`` compares the two).
"""

from apwake.rtl.start_context.layouts import (LaunchKind, StartOp, StartStatus, StateField,
                                              VMI_AP_STATE_OFFSETS, VMI_AP_STATE_SIZE)

__all__ = ["encode_vmi_ap_state", "descriptor", "decode", "zero_state", "null_segment",
           "UnitModel", "LINUX_SELECTORS", "linux_gdt", "linux_ap_state"]

_U32 = (1 << 32) - 1

# --- the rules' bits (Intel SDM) ------------------------------------------------------------------
_CR0_PE, _CR0_MP, _CR0_EM, _CR0_TS, _CR0_ET, _CR0_NE = 1, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5
_CR0_WP, _CR0_AM, _CR0_NW, _CR0_CD, _CR0_PG = 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
_CR0_KNOWN = (_CR0_PE | _CR0_MP | _CR0_EM | _CR0_TS | _CR0_ET | _CR0_NE | _CR0_WP | _CR0_AM
              | _CR0_NW | _CR0_CD | _CR0_PG)
_CR4_RESERVED_BITS = [15, 19, *range(25, 32)]
_EFER_SCE, _EFER_LME, _EFER_LMA, _EFER_NXE = 1, 1 << 8, 1 << 10, 1 << 11
_EFER_SVME, _EFER_LMSLE, _EFER_FFXSR, _EFER_TCE = 1 << 12, 1 << 13, 1 << 14, 1 << 15
_EFER_KNOWN = (_EFER_SCE | _EFER_LME | _EFER_LMA | _EFER_NXE | _EFER_SVME | _EFER_LMSLE
               | _EFER_FFXSR | _EFER_TCE)
_EFLAGS_RESERVED_BITS = [3, 5, 15, *range(22, 32)]
_EFLAGS_VM = 1 << 17
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")


def _check(name, value, bits):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} = {value!r} does not fit in {bits} bits")
    return value


def encode_vmi_ap_state(**fields):
    """The bytes of a ``struct vmi_ap_state`` (``sizeof`` on i386, 92: the 90 bytes of data and
    2 of padding) with ``fields`` (names as in Linux's struct; missing ones 0, as Linux's
    ``memset``).

    Raises
    ------
    ValueError
        An unknown field name, or a value that does not fit its field (naming the field).
    """
    data = bytearray(VMI_AP_STATE_SIZE)
    for name, value in fields.items():
        if name not in VMI_AP_STATE_OFFSETS:
            raise ValueError(f"{name!r} is not a field of struct vmi_ap_state")
        offset, size = VMI_AP_STATE_OFFSETS[name]
        data[offset:offset + size] = _check(name, value, 8 * size).to_bytes(size, "little")
    return bytes(data)


def descriptor(base, limit, type, s=1, dpl=0, p=1, avl=0, l=0, db=1, g=1):  # noqa: E741
    """An 8-byte segment descriptor as an integer (SDM vol. 3 §3.4.5): ``limit`` is the 20-bit
    field (in 4 KiB units when ``g``), ``type`` the 4-bit type, the rest one bit each but
    ``dpl`` (2 bits).  Defaults: a present, 32-bit, page-granular code or data segment.

    Raises
    ------
    ValueError
        A value that does not fit its field (naming it).
    """
    for name, value, bits in (("base", base, 32), ("limit", limit, 20), ("type", type, 4),
                              ("s", s, 1), ("dpl", dpl, 2), ("p", p, 1), ("avl", avl, 1),
                              ("l", l, 1), ("db", db, 1), ("g", g, 1)):
        _check(name, value, bits)
    return ((limit & 0xFFFF) | (base & 0xFF_FFFF) << 16 | type << 40 | s << 44 | dpl << 45
            | p << 47 | (limit >> 16) << 48 | avl << 52 | l << 53 | db << 54 | g << 55
            | (base >> 24) << 56)


def null_segment(selector=0):
    return {"selector": selector, "attrib": 0, "limit": 0, "base": 0}


def zero_state():
    """A StartState of zeros, as nested dicts (what a record that is not CONTEXT carries)."""
    state = {name: 0 for name in ("cr0", "cr2", "cr3", "cr4", "efer", "eip", "esp", "eflags",
                                  "eax", "ebx", "ecx", "edx", "ebp", "esi", "edi")}
    state.update({name: null_segment() for name in _SEGMENTS})
    state.update(gdtr={"limit": 0, "base": 0}, idtr={"limit": 0, "base": 0})
    return state


def _segment_from_descriptor(selector, value):
    """The segment a selector loads from its descriptor: the type's Accessed bit (bit 0) is set,
    as the CPU sets it in the descriptor and its cache when it loads a selector (SDM vol. 3
    §3.4.5.1; VMX's guest-state checks want CS and SS accessed)."""
    limit = (value & 0xFFFF) | ((value >> 48) & 0xF) << 16
    g = value >> 55 & 1
    return {"selector": selector,
            "attrib": (value >> 40) & 0xFF | 1 | ((value >> 52) & 0xF) << 8,
            "limit": (limit << 12 | 0xFFF) if g else limit,
            "base": (value >> 16) & 0xFF_FFFF | (value >> 56) << 24}


def decode(read, address):
    """What the unit does with the struct at ``address``: ``(status, field, state)``, ``state``
    the StartState as nested dicts (segments and descriptor tables as dicts) when the status is
    OK, else None.  ``read(address, size)`` gives guest memory (``Memory.read``); it is called
    once per 32-bit word the unit reads, in the unit's order."""
    if address % 4 or address + 90 > 1 << 32:          # aligned; the 90 bytes stay below 4 GiB
        return StartStatus.BAD_ADDRESS, StateField.NONE, None
    raw = b"".join(read(address + 4 * k, 4) for k in range(23))
    f = {name: int.from_bytes(raw[offset:offset + size], "little")
         for name, (offset, size) in VMI_AP_STATE_OFFSETS.items()}
    refuse = lambda status, field: (status, field, None)
    cr0, cr4, efer, eflags = f["cr0"], f["cr4"], f["efer"], f["eflags"]
    if cr0 & ~_CR0_KNOWN & _U32:
        return refuse(StartStatus.RESERVED_BITS, StateField.CR0)
    if not cr0 & _CR0_PE or (cr0 & _CR0_PG and not cr0 & _CR0_PE) or (cr0 & _CR0_NW and not cr0 & _CR0_CD):
        return refuse(StartStatus.INVALID_STATE, StateField.CR0)
    if any(cr4 >> bit & 1 for bit in _CR4_RESERVED_BITS):
        return refuse(StartStatus.RESERVED_BITS, StateField.CR4)
    if efer & ~_EFER_KNOWN:
        return refuse(StartStatus.RESERVED_BITS, StateField.EFER)
    if efer & (_EFER_LME | _EFER_LMA):
        return refuse(StartStatus.INVALID_STATE, StateField.EFER)
    if any(eflags >> bit & 1 for bit in _EFLAGS_RESERVED_BITS):
        return refuse(StartStatus.RESERVED_BITS, StateField.EFLAGS)
    if eflags & _EFLAGS_VM:
        return refuse(StartStatus.INVALID_STATE, StateField.EFLAGS)
    if f["ldtr"]:
        return refuse(StartStatus.INVALID_STATE, StateField.LDTR)
    segments = {}
    for name in _SEGMENTS:
        selector, field = f[name], StateField[name.upper()]
        if selector < 4:                                    # null: index 0, TI 0
            if name in ("cs", "ss"):
                return refuse(StartStatus.INVALID_STATE, field)
            segments[name] = null_segment(selector)
            continue
        if selector & 4:                                    # TI: an LDT selector, and no LDT
            return refuse(StartStatus.INVALID_STATE, field)
        index = selector >> 3
        if index * 8 + 7 > f["gdtr_limit"]:
            return refuse(StartStatus.INVALID_STATE, field)
        if f["gdtr_base"] % 8:
            return refuse(StartStatus.INVALID_STATE, StateField.GDTR)
        at = (f["gdtr_base"] + index * 8) & _U32
        value = int.from_bytes(read(at, 4) + read(at + 4, 4), "little")
        type_, s, p = value >> 40 & 0xF, value >> 44 & 1, value >> 47 & 1
        is_code, writable = bool(type_ & 8), bool(type_ & 2)
        if name == "cs":
            bad = not (p and s and is_code)
        elif name == "ss":
            bad = not (p and s and not is_code and writable) or (selector & 3) != (f["cs"] & 3)
        else:
            bad = not (p and s) or (is_code and not writable)
        if bad:
            return refuse(StartStatus.INVALID_STATE, field)
        segments[name] = _segment_from_descriptor(selector, value)
    state = {name: f[name] for name in ("cr0", "cr2", "cr3", "cr4", "efer", "eip", "esp",
                                        "eax", "ebx", "ecx", "edx", "ebp", "esi", "edi")}
    state["eflags"] = eflags | 0x2
    state.update(segments)
    state["gdtr"] = {"limit": f["gdtr_limit"], "base": f["gdtr_base"]}
    state["idtr"] = {"limit": f["idtr_limit"], "base": f["idtr_base"]}
    return StartStatus.OK, StateField.NONE, state


def _record(vcpu, kind, *, vector=0, via_sipi=True, state=None):
    return {"vcpu": vcpu, "kind": kind, "vector": vector, "via_sipi": int(via_sipi),
            "state": state if kind is LaunchKind.CONTEXT else zero_state()}


class UnitModel:
    """The unit's per-vCPU state and outcomes.

    Parameters
    ----------
    apic_ids : sequence of int
        In port order.
    bsp_index : int

    Attributes
    ----------
    running, armed : list of bool
    stored : list of dict or None
        The armed contexts (kept when disarmed, as the unit's memory keeps them).
    paravirt : bool
    """

    def __init__(self, apic_ids, bsp_index):
        self.apic_ids = list(apic_ids)
        self.bsp_index = bsp_index
        self.running = [i == bsp_index for i in range(len(self.apic_ids))]
        self.armed = [False] * len(self.apic_ids)
        self.stored = [None] * len(self.apic_ids)
        self.paravirt = False

    def call(self, op, address, apic_id, read):
        """``(status, field, record)`` of a call; ``record`` the launch record a successful
        START emits, else None.  Applies the call's effects."""
        if not isinstance(op, StartOp):
            if op not in (0, 1, 2):
                return StartStatus.BAD_OP, StateField.NONE, None
            op = StartOp(op)
        if op is StartOp.PARAVIRT:
            self.paravirt = True
            return StartStatus.OK, StateField.NONE, None
        if apic_id not in self.apic_ids:
            return StartStatus.UNKNOWN_APIC_ID, StateField.NONE, None
        vcpu = self.apic_ids.index(apic_id)
        if address % 4 or address + 90 > 1 << 32:
            return StartStatus.BAD_ADDRESS, StateField.NONE, None
        if op is StartOp.START and self.running[vcpu]:
            return StartStatus.ALREADY_RUNNING, StateField.NONE, None
        status, field, state = decode(read, address)
        if status is not StartStatus.OK:
            return status, field, None
        if op is StartOp.SET_INITIAL_AP_STATE:
            self.armed[vcpu], self.stored[vcpu] = True, state
            return status, field, None
        self.running[vcpu] = True
        return status, field, _record(vcpu, LaunchKind.CONTEXT, via_sipi=False, state=state)

    def sipi(self, vcpu, vector):
        """The launch record of a SIPI to port ``vcpu``; applies its effect."""
        if self.running[vcpu]:
            return _record(vcpu, LaunchKind.DROPPED, vector=vector)
        if self.armed[vcpu]:
            self.armed[vcpu], self.running[vcpu] = False, True
            return _record(vcpu, LaunchKind.CONTEXT, vector=vector, state=self.stored[vcpu])
        if self.paravirt:
            return _record(vcpu, LaunchKind.REFUSED, vector=vector)
        self.running[vcpu] = True
        return _record(vcpu, LaunchKind.REAL_MODE, vector=vector)

    def init(self, vcpu):
        """The CPU took an INIT: an AP waits for SIPI (its armed context kept); the BSP is
        unchanged."""
        if vcpu != self.bsp_index:
            self.running[vcpu] = False


# --- what Linux fills (vmi_startup_ipi_hook, i386 segment.h) --------------------------------------
#: __KERNEL_CS, __KERNEL_DS, __USER_DS, __KERNEL_PERCPU, __KERNEL_STACK_CANARY (GDT entries 12, 13,
#: 15 with RPL 3, 27, 28)
LINUX_SELECTORS = {"kernel_cs": 0x60, "kernel_ds": 0x68, "user_ds": 0x7B, "percpu": 0xD8,
                   "stack_canary": 0xE0}


def linux_gdt(*, percpu_base=0, canary_base=0):
    """``{index: descriptor}`` of an i386 Linux per-CPU GDT (arch/x86/kernel/cpu/common.c
    ``gdt_page``, ``GDT_ENTRY_INIT(flags, base, limit)``): kernel and user code and data, per-CPU
    data and the stack-canary segment (0x4090: a byte-granular read-only data segment)."""
    return {12: descriptor(0, 0xFFFFF, 0xA, dpl=0),                      # 0xc09a kernel CS
            13: descriptor(0, 0xFFFFF, 0x2, dpl=0),                      # 0xc092 kernel DS
            14: descriptor(0, 0xFFFFF, 0xA, dpl=3),                      # 0xc0fa user CS
            15: descriptor(0, 0xFFFFF, 0x2, dpl=3),                      # 0xc0f2 user DS
            27: descriptor(percpu_base, 0xFFFFF, 0x2, dpl=0),            # 0xc092 per-CPU
            28: descriptor(canary_base, 0x18, 0x0, dpl=0, g=0)}          # 0x4090 stack canary


def linux_ap_state(*, gdt_base, idt_base, cr3, eip, esp, cr4=0x0000_0690, efer=0, canary=False):
    """The fields ``vmi_startup_ipi_hook`` fills (everything else 0, as its ``memset``)."""
    return dict(cr0=0x8005_0023, cr3=cr3, cr4=cr4, efer=efer, eip=eip, esp=esp, eflags=0,
                cs=LINUX_SELECTORS["kernel_cs"], ss=LINUX_SELECTORS["kernel_ds"],
                ds=LINUX_SELECTORS["user_ds"], es=LINUX_SELECTORS["user_ds"],
                fs=LINUX_SELECTORS["percpu"], gs=LINUX_SELECTORS["stack_canary"] if canary else 0,
                ldtr=0, gdtr_limit=255, gdtr_base=gdt_base, idtr_limit=2047, idtr_base=idt_base)
