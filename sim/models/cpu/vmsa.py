"""The VMSA (VM Save Area) of an SEV-ES/SEV-SNP vCPU as guest memory holds it: encode an
:class:`~apwake.sim.models.cpu.state.ArchState` into one, decode one back.

The layout is Linux's ``struct sev_es_save_area`` (arch/x86/include/asm/svm.h, checked there by
``BUILD_BUG_ON(sizeof(struct sev_es_save_area) != EXPECTED_SEV_ES_SAVE_AREA_SIZE)``, 1648 bytes,
and the ``reserved_0x...`` offset asserts); :data:`VMSA_OFFSETS` gives the fields the models
use.  A segment is ``struct vmcb_seg``: selector u16, attrib u16 (the 12-bit VMCB attribute of
:func:`apwake.sim.models.cpu.state.segment_attrib`), limit u32, base u64; GDTR and IDTR use the
limit and base of one.

An SNP guest builds a VMSA for an AP it starts with AP Creation (Linux
``wakeup_cpu_via_vmgexit``); the hypervisor hands the page to the CPU, which loads its whole
register state from it at VMRUN (the CPU model: :meth:`CpuModel.start_from_vmsa
<apwake.sim.models.cpu.model.CpuModel.start_from_vmsa>`).
"""

from .state import ArchState, DescriptorTable, Segment

__all__ = ["VMSA_OFFSETS", "VMSA_SIZE", "VMSA_SEGMENTS", "encode_vmsa", "decode_vmsa"]

#: the segments, in save-area order, 16 bytes each from offset 0
VMSA_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
#: field -> (offset, size in bytes), ``struct sev_es_save_area``
VMSA_OFFSETS = {
    **{name: (16 * k, 16) for k, name in enumerate(VMSA_SEGMENTS)},
    "vmpl": (0xCA, 1), "cpl": (0xCB, 1), "efer": (0xD0, 8), "xss": (0x140, 8),
    "cr4": (0x148, 8), "cr3": (0x150, 8), "cr0": (0x158, 8), "dr7": (0x160, 8),
    "dr6": (0x168, 8), "rflags": (0x170, 8), "rip": (0x178, 8), "rsp": (0x1D8, 8),
    "rax": (0x1F8, 8), "cr2": (0x240, 8), "g_pat": (0x268, 8), "sev_features": (0x3B0, 8),
    "xcr0": (0x3E8, 8), "mxcsr": (0x408, 4), "x87_ftw": (0x40C, 2), "x87_fcw": (0x410, 2),
}
#: sizeof(struct sev_es_save_area)
VMSA_SIZE = 1648
#: the ArchState registers a VMSA carries in full, besides the segments and tables
_REGISTERS = ("cr0", "cr2", "cr3", "cr4", "efer", "rip", "rsp", "rflags")
#: ArchState's segment registers and tables (ldtr and tr are VMSA-only: :func:`decode_vmsa`'s extra)
_STATE_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")


def _segment_bytes(selector=0, attrib=0, limit=0, base=0):
    return (selector.to_bytes(2, "little") + attrib.to_bytes(2, "little")
            + limit.to_bytes(4, "little") + base.to_bytes(8, "little"))


def encode_vmsa(state, **extra):
    """A 4 KiB page holding ``state`` as a VMSA.

    ``extra``: the other fields by their :data:`VMSA_OFFSETS` name, integers (``sev_features``,
    ``vmpl``, ``dr7``...), or for ``ldtr``/``tr`` dicts of ``selector``, ``attrib``,
    ``limit``, ``base``.  Everything else is 0.

    Raises
    ------
    KeyError
        An ``extra`` name that is no VMSA field (or one ``state`` already sets).
    ValueError
        A value that does not fit its field.
    """
    page = bytearray(4096)

    def put(name, data):
        offset, size = VMSA_OFFSETS[name]
        page[offset:offset + size] = data

    for name in _STATE_SEGMENTS:
        put(name, _segment_bytes(**getattr(state, name).as_dict()))
    for name in ("gdtr", "idtr"):
        table = getattr(state, name)
        put(name, _segment_bytes(limit=table.limit, base=table.base))
    for name in _REGISTERS:
        put(name, getattr(state, name).to_bytes(8, "little"))
    for name, value in extra.items():
        if name not in VMSA_OFFSETS or name in _STATE_SEGMENTS + ("gdtr", "idtr") + _REGISTERS:
            raise KeyError(f"{name!r} is not a VMSA field encode_vmsa takes in extra")
        size = VMSA_OFFSETS[name][1]
        if isinstance(value, dict):
            put(name, _segment_bytes(**value))
        else:
            try:
                put(name, int(value).to_bytes(size, "little"))
            except OverflowError:
                raise ValueError(f"VMSA field {name} is {size} bytes: {value:#x} does not fit") from None
    return bytes(page)


def decode_vmsa(data):
    """``(ArchState, extra)`` from VMSA bytes (at least the first 0x412), ``extra`` holding
    every other field of :data:`VMSA_OFFSETS` (``ldtr``/``tr`` as dicts)."""
    if len(data) < 0x412:
        raise ValueError(f"a VMSA is {VMSA_SIZE} bytes; {len(data)} given")

    def field(name):
        offset, size = VMSA_OFFSETS[name]
        return int.from_bytes(data[offset:offset + size], "little")

    def segment(name):
        offset = VMSA_OFFSETS[name][0]
        raw = data[offset:offset + 16]
        return {"selector": int.from_bytes(raw[0:2], "little"),
                "attrib": int.from_bytes(raw[2:4], "little"),
                "limit": int.from_bytes(raw[4:8], "little"),
                "base": int.from_bytes(raw[8:16], "little")}

    state = ArchState(**{name: field(name) for name in _REGISTERS},
                      **{name: Segment(**segment(name)) for name in _STATE_SEGMENTS},
                      **{name: DescriptorTable(base=segment(name)["base"], limit=segment(name)["limit"])
                         for name in ("gdtr", "idtr")})
    extra = {name: (segment(name) if name in ("ldtr", "tr") else field(name))
             for name in VMSA_OFFSETS
             if name not in _STATE_SEGMENTS + ("gdtr", "idtr") + _REGISTERS}
    return state, extra
