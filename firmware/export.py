"""One exporter for every register description (issue 11 part 3).

From the register maps (:mod:`apwake.rtl.lib.registers`: the soft-SoC's address map and windows in
:mod:`apwake.rtl.soc.memory_map`, the local APIC's table, the mailbox's and the GHCB MSR's) and the
start-context unit's layouts (the ``struct vmi_ap_state`` offsets, the GDT descriptor, the call
codes) it writes the checked-in files that must not drift from the RTL:

``firmware/soc_regs.h``
    the firmware's static register header (``soc.h``, written per build by
    :mod:`apwake.firmware.build`, includes it and adds the cores' APIC IDs);
``firmware/link.ld``
    its MEMORY block (between the ``GENERATED MEMORY`` marker comments);
``docs/REGISTERS.md`` and ``docs/registers.json``
    the register reference, as Markdown and as a JSON map.

``python -m apwake.firmware.export`` (or ``apwake registers --write``) rewrites them;
``--check`` exits 1 naming each stale file; without options the Markdown goes to stdout.
``tests/test_registers_export.py`` checks that the checked-in files are current.
"""

import argparse
import json
import sys
from pathlib import Path

from amaranth.lib import data

from apwake.rtl.ghcb_msr.layouts import MsrCode, SevInfo
from apwake.rtl.ghcb_msr.registers import MSR_MAP as GHCB_MSR_MAP
from apwake.rtl.lapic.layouts import MSR_IA32_APIC_BASE, ApicBase, DeliveryMode, Icr, Level, Svr, Trigger
from apwake.rtl.lapic.registers import X2APIC_MAP, XAPIC_MAP
from apwake.rtl.lib.registers import Access
from apwake.rtl.mpwk_mailbox.layouts import Command
from apwake.rtl.mpwk_mailbox.registers import PAGE_MAP, STATUS_MAP
from apwake.rtl.soc import memory_map as mm
from apwake.rtl.start_context.layouts import (CR0_PE, VMI_AP_STATE_OFFSETS, VMI_AP_STATE_SIZE, GdtDescriptor,
                                              StartOp, StartStatus)
from apwake.sim.harness.codec import field_mask, pack
from apwake.sim.harness.paths import CHECKOUT

__all__ = ["REGISTER_MAPS", "SPURIOUS_VECTOR", "TRAMPOLINE_VECTOR", "c_header", "link_script", "markdown",
           "json_map", "outputs", "stale", "main"]

#: every register map, in the order of the docs
REGISTER_MAPS = (mm.IO_MAP, mm.CONTROL_MAP, mm.MSR_WINDOW_MAP, mm.START_MAP, PAGE_MAP, STATUS_MAP, XAPIC_MAP,
                 X2APIC_MAP, GHCB_MSR_MAP)
#: the firmware's spurious-interrupt vector (SVR bits 7:0): 0xFF, the vector Linux uses
#: (SPURIOUS_APIC_VECTOR, arch/x86/include/asm/irq_vectors.h), so both worlds program the same SVR
SPURIOUS_VECTOR = 0xFF
#: the SIPI vector of the trampoline page (see firmware/link.ld)
TRAMPOLINE_VECTOR = mm.TRAMPOLINE >> 12

COMMAND = "python -m apwake.firmware.export"
_HEADER_PATH, _LINK_PATH = "firmware/soc_regs.h", "firmware/link.ld"
_DOCS_PATH, _JSON_PATH = "docs/REGISTERS.md", "docs/registers.json"
_BEGIN, _END = "/* GENERATED MEMORY", "/* END GENERATED MEMORY */"


# --- the C header ---------------------------------------------------------------------------------

def _layout_defines(prefix, layout):
    """``<prefix>_<FIELD>_SHIFT`` and ``_MASK`` (unshifted) of a data layout's fields."""
    for name, field in data.Layout.cast(layout):
        if not name.startswith("rsvd"):
            yield f"{prefix}_{name.upper()}_SHIFT", field.offset, None
            yield f"{prefix}_{name.upper()}_MASK", (1 << field.width) - 1, None


def _map_defines(regmap):
    """Per register its offset in the window (MMIO) or its MSR number, and the shift and
    (unshifted) mask of each named field."""
    yield None, None, f"{regmap.name}: {regmap.doc}"
    for r in regmap:
        value = regmap.address(r.name) if regmap.space == "msr" else r.offset
        yield f"{regmap.prefix}_{r.name}", value, f"{r.access_code}: {r.doc}"
        named = [f for f in r.fields if f.access is not Access.RSVD]
        if len(named) == 1 and named[0].name == "value":
            continue
        for f in named:
            yield f"{regmap.prefix}_{r.name}_{f.name.upper()}_SHIFT", f.lsb, None
            yield f"{regmap.prefix}_{r.name}_{f.name.upper()}_MASK", (1 << f.width) - 1, None


def _constants():
    """Values the firmware programs, packed with the RTL's own layouts and enums."""
    yield None, None, "soc: windows and fixed addresses"
    for window in mm.SOC_MAP.windows:
        yield f"SOC_{window.name.upper()}_BASE", window.base, window.doc
    yield "SOC_UNDECODED_BASE", mm.UNDECODED_BASE, "the first window no core's bus decodes (a load sets bus_error)"
    yield "SOC_AP_BOOT", mm.AP_BOOT, "where every AP core starts (its stub: sp = START_SP unless 0, jump to START_ADDR)"
    yield "SOC_TRAMPOLINE_VECTOR", TRAMPOLINE_VECTOR, "the SIPI vector of the trampoline page"
    for name, value in mm.AP_START.items():
        yield f"SOC_AP_START_{name.upper()}", value, None
    yield None, None, "values"
    yield "SPURIOUS_VECTOR", SPURIOUS_VECTOR, None
    yield "MSR_IA32_APIC_BASE", MSR_IA32_APIC_BASE, None
    yield "APIC_BASE_X2APIC", field_mask(ApicBase, "extd") | field_mask(ApicBase, "enable"), "EN | EXTD"
    yield "ICR_DELIVERY_STATUS", field_mask(Icr, "delivery_status"), None
    yield "ICR_INIT", pack(Icr, delivery_mode=DeliveryMode.INIT), None
    yield "ICR_STARTUP", pack(Icr, delivery_mode=DeliveryMode.STARTUP), None
    yield "ICR_LEVEL_ASSERT", pack(Icr, level=Level.ASSERT), None
    yield "ICR_TRIGGER_LEVEL", pack(Icr, trigger=Trigger.LEVEL), None
    yield "SVR_APIC_ENABLE", field_mask(Svr, "apic_enable"), None
    for command in Command:
        yield f"MAILBOX_CMD_{command.name}", command.value, None
    for code in (MsrCode.SEV_INFO_REQ, MsrCode.SEV_INFO_RESP, MsrCode.AP_RESET_HOLD_REQ,
                 MsrCode.AP_RESET_HOLD_RESP):
        yield f"GHCB_{code.name}", code.value, None
    yield from _layout_defines("SEV_INFO", SevInfo)
    yield None, None, "the start-context unit (ap_start=\"context\"): calls, the guest's struct, its GDT"
    for op in StartOp:
        yield f"START_OP_{op.name}", op.value, None
    for status in StartStatus:
        yield f"START_STATUS_{status.name}", status.value, None
    for name, (offset, _) in VMI_AP_STATE_OFFSETS.items():
        yield f"VMI_AP_STATE_{name.upper()}", offset, None
    yield "VMI_AP_STATE_SIZE", VMI_AP_STATE_SIZE, "sizeof(struct vmi_ap_state) on i386"
    yield "X86_CR0_PE", CR0_PE, None
    yield from _layout_defines("GDT_DESC", GdtDescriptor)


def c_header():
    """``firmware/soc_regs.h``: ``#define``s only, so assembly includes it too.

    Raises
    ------
    ValueError
        Two definitions with one name.
    """
    lines = [f"/* generated by `{COMMAND}` from the register descriptions (rtl/soc/memory_map.py,",
             "   rtl/lapic/registers.py, rtl/mpwk_mailbox/registers.py, rtl/ghcb_msr/registers.py): do not edit.",
             "   MMIO registers: offsets in their window; MSRs: MSR numbers; fields: _SHIFT and unshifted _MASK. */",
             "#pragma once"]
    seen = {}
    for name, value, comment in (*_constants(), *(d for m in REGISTER_MAPS for d in _map_defines(m))):
        if name is None:
            lines += ["", f"/* {comment} */"]
            continue
        if name in seen:
            raise ValueError(f"{name} is defined twice ({seen[name]:#x} and {value:#x})")
        seen[name] = value
        line = f"#define {name} 0x{value:08X}u"
        lines.append(line if comment is None else f"{line:<56} /* {comment.replace('*/', '* /')} */")
    return "\n".join(lines) + "\n"


# --- the linker script ------------------------------------------------------------------------------

def link_memory():
    """The MEMORY block and the fixed entry addresses, for link.ld."""
    lines = [f"{_BEGIN}: `{COMMAND}` writes this block from rtl/soc/memory_map.py */", "MEMORY", "{"]
    for region in mm.SOC_MAP.memory:
        lines.append(f"    {region.name} ({region.attributes}) : ORIGIN = 0x{region.base:08X}, "
                     f"LENGTH = 0x{region.size:08X}")
    lines += ["}", f"AP_BOOT = 0x{mm.AP_BOOT:08X};", f"TRAMPOLINE = 0x{mm.TRAMPOLINE:08X};", _END]
    return "\n".join(lines)


def link_script(current):
    """``current`` (link.ld's text) with its generated block replaced.

    Raises
    ------
    ValueError
        The markers are missing or out of order.
    """
    begin, end = current.find(_BEGIN), current.find(_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{_LINK_PATH} has no '{_BEGIN} ... {_END}' block to regenerate")
    return current[:begin] + link_memory() + current[end + len(_END):]


# --- the register reference ---------------------------------------------------------------------------

def _hex(value, width=32):
    return f"0x{value:0{max(width // 4, 1)}X}"


def _fields_cell(r):
    named = [f for f in r.fields if f.access is not Access.RSVD]
    if len(named) == 1 and named[0].name == "value" and named[0].width == r.width:
        return ""
    return ", ".join(f"{f.name} {f.bits} {f.access.value}" for f in named)


def _map_markdown(regmap):
    where = "MSR" if regmap.space == "msr" else "Offset"
    lines = [f"## {regmap.name}", "", regmap.doc, ""]
    base = f"MSR {_hex(regmap.base, 16)}" if regmap.space == "msr" else f"{_hex(regmap.base)}"
    lines.append(f"Base {base}, {regmap.size:#x} {'MSRs' if regmap.space == 'msr' else 'bytes'} decoded; "
                 f"C prefix `{regmap.prefix}_`" + (f"; source: {regmap.source}." if regmap.source else "."))
    lines += ["", f"| Register | {where} | Width | Access | Reset | Fields | Description |",
              "|---|---|---|---|---|---|---|"]
    for r in regmap:
        at = _hex(regmap.address(r.name), 12) if regmap.space == "msr" else f"0x{r.offset:03X}"
        reset = r.reset_doc if r.reset_doc is not None else _hex(r.reset, r.width)
        field_docs = "; ".join(f"{f.name}: {f.doc}" for f in r.fields if f.doc)
        doc = r.doc + (f" ({field_docs})" if field_docs else "")
        lines.append(f"| {r.name} | {at} | {r.width} | {r.access_code} | {reset} | {_fields_cell(r)} | {doc} |")
    return lines


def markdown():
    """``docs/REGISTERS.md``: the SoC's address map, then every register map."""
    lines = ["# Register maps", "",
             f"Generated by `{COMMAND}` (or `apwake registers --write`) from the register descriptions",
             "(`rtl/lib/registers.py`; the maps in `rtl/soc/memory_map.py`, `rtl/lapic/registers.py`,",
             "`rtl/mpwk_mailbox/registers.py`, `rtl/ghcb_msr/registers.py`); `tests/test_registers_export.py`",
             "checks it is current. The same data is in `docs/registers.json`, and in `firmware/soc_regs.h`",
             "for the firmware.", "",
             "Access: `R` the read returns the value, `W` a write stores it, `S` after `R` or `W`: that access",
             "has a side effect (a strobe, an RDMSR, a test-and-set), `W1C` a 1 written clears the bit, `-`",
             "reserved; `mixed`: see the fields. Unlisted bits are reserved (read 0, writes ignored).", "",
             "## Soft-SoC address map", "", mm.SOC_MAP.doc, "",
             "| Window | Base | Register maps | Contents |", "|---|---|---|---|"]
    for w in mm.SOC_MAP.windows:
        maps = ", ".join(f"{m.name} at {_hex(m.base)}" for m in w.maps)
        lines.append(f"| {w.name} | {_hex(w.base)} | {maps} | {w.doc} |")
    lines += ["", "Firmware memory (the linker script's MEMORY):", "",
              "| Region | Origin | Length | Attributes | Contents |", "|---|---|---|---|---|"]
    for region in mm.SOC_MAP.memory:
        lines.append(f"| {region.name} | {_hex(region.base)} | {_hex(region.size)} | {region.attributes} "
                     f"| {region.doc} |")
    for regmap in REGISTER_MAPS:
        lines += [""] + _map_markdown(regmap)
    return "\n".join(lines) + "\n"


def _map_json(regmap):
    return {"name": regmap.name, "base": regmap.base, "size": regmap.size, "space": regmap.space,
            "prefix": regmap.prefix, "doc": regmap.doc, "source": regmap.source,
            "registers": [{"name": r.name, "offset": r.offset, "address": regmap.address(r.name),
                           "width": r.width, "access": r.access_code, "reset": r.reset,
                           "reset_doc": r.reset_doc, "doc": r.doc,
                           "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "access": f.access.value,
                                       "doc": f.doc} for f in r.fields]}
                          for r in regmap]}


def json_map():
    """``docs/registers.json``: the address map and every register map."""
    soc = mm.SOC_MAP
    document = {
        "generated_by": COMMAND,
        "address_maps": [{"name": soc.name, "window_bits": soc.window_bits, "doc": soc.doc,
                          "windows": [{"name": w.name, "base": w.base, "doc": w.doc,
                                       "maps": [{"map": m.name, "base": m.base} for m in w.maps]}
                                      for w in soc.windows],
                          "memory": [{"name": r.name, "base": r.base, "size": r.size,
                                      "attributes": r.attributes, "doc": r.doc} for r in soc.memory]}],
        "register_maps": [_map_json(m) for m in REGISTER_MAPS],
    }
    return json.dumps(document, indent=1) + "\n"


# --- the files ---------------------------------------------------------------------------------------

def outputs(root):
    """``{relative path: text}`` of every generated file (link.ld from its current text in ``root``)."""
    return {_HEADER_PATH: c_header(),
            _LINK_PATH: link_script((Path(root) / _LINK_PATH).read_text()),
            _DOCS_PATH: markdown(),
            _JSON_PATH: json_map()}


def stale(root):
    """The generated files under ``root`` whose text differs from what the descriptions give."""
    root = Path(root)
    return [path for path, text in outputs(root).items()
            if not (root / path).is_file() or (root / path).read_text() != text]


def main(argv=None):
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the generated files")
    action.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    parser.add_argument("--root", type=Path, default=CHECKOUT, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(markdown(), end="")
        return 0
    if args.root is None:
        parser.error("not run from a checkout: give --root")
    if args.check:
        old = stale(args.root)
        for path in old:
            print(f"{path} is stale: run `{COMMAND} --write`", file=sys.stderr)
        return 1 if old else 0
    for path, text in outputs(args.root).items():
        target = args.root / path
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
