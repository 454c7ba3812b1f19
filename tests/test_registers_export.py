"""The generated register files (firmware/soc_regs.h, link.ld's MEMORY, docs/REGISTERS.md,
docs/registers.json) are current and say what the descriptions say."""

import json
import re
import shutil

from apwake.firmware import export
from apwake.rtl.lapic.registers import BY_NAME, REGISTERS, X2APIC_MAP, XAPIC_MAP
from apwake.rtl.soc import memory_map as mm
from apwake.sim.harness.paths import CHECKOUT

_DEFINE = re.compile(r"^#define (\w+) 0x([0-9A-F]+)u", re.M)


def test_generated_files_are_current():
    stale = export.stale(CHECKOUT)
    assert not stale, f"stale generated files {stale}: run `{export.COMMAND} --write` (or `apwake registers --write`)"


def test_a_stale_file_is_named_with_the_command(tmp_path, capsys):
    for path in export.outputs(CHECKOUT):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CHECKOUT / path, tmp_path / path)
    assert export.main(["--check", "--root", str(tmp_path)]) == 0
    header = tmp_path / "firmware/soc_regs.h"
    header.write_text(header.read_text().replace("SOC_CONTROL_START_ADDR 0x00000008u",
                                                 "SOC_CONTROL_START_ADDR 0x0000000Cu"))
    assert export.main(["--check", "--root", str(tmp_path)]) == 1
    assert f"firmware/soc_regs.h is stale: run `{export.COMMAND} --write`" in capsys.readouterr().err
    assert export.main(["--write", "--root", str(tmp_path)]) == 0
    assert export.stale(tmp_path) == []


def test_header_defines_every_register_once():
    defines = {}
    for name, value in _DEFINE.findall((CHECKOUT / "firmware/soc_regs.h").read_text()):
        assert name not in defines, f"{name} defined twice"
        defines[name] = int(value, 16)
    for regmap in export.REGISTER_MAPS:
        for r in regmap:
            want = regmap.address(r.name) if regmap.space == "msr" else r.offset
            assert defines[f"{regmap.prefix}_{r.name}"] == want, (regmap.name, r.name)
    for window in mm.SOC_MAP.windows:
        assert defines[f"SOC_{window.name.upper()}_BASE"] == window.base
    # the names the firmware's C uses for the control window and x2APIC ICR
    assert defines["SOC_CONTROL_START_ADDR"] == mm.CONTROL["START_ADDR"]
    assert defines["MSR_X2APIC_ICR"] == BY_NAME["ICR"].msr


def test_link_script_memory_is_the_address_map():
    text = (CHECKOUT / "firmware/link.ld").read_text()
    regions = re.findall(r"^\s+(\w+) \((\w+)\) : ORIGIN = 0x([0-9A-F]+), LENGTH = 0x([0-9A-F]+)", text, re.M)
    assert [(n, a, int(o, 16), int(s, 16)) for n, a, o, s in regions] == [
        (r.name, r.attributes, r.base, r.size) for r in mm.SOC_MAP.memory]
    rom, ram = mm.SOC_MAP["ROM"], mm.SOC_MAP["RAM"]
    assert rom.size == mm.BOOT_ROM_BYTES and ram.base + ram.size == mm.FIRMWARE_RAM_BYTES


def test_json_map_round_trips():
    document = json.loads((CHECKOUT / "docs/registers.json").read_text())
    maps = {m["name"]: m for m in document["register_maps"]}
    assert set(maps) == {m.name for m in export.REGISTER_MAPS}
    for regmap in export.REGISTER_MAPS:
        assert {r["name"]: r["offset"] for r in maps[regmap.name]["registers"]} == regmap.offsets
    windows = {w["name"]: w["base"] for w in document["address_maps"][0]["windows"]}
    assert windows == {w.name: w.base for w in mm.SOC_MAP.windows}


def test_apic_reset_values_in_the_reference():
    """VERSION reads 0x00060014 (version 0x14, max LVT index 6); ID's reset is the APIC ID."""
    text = (CHECKOUT / "docs/REGISTERS.md").read_text()
    rows = {(line.split("|")[1].strip(), line.split("|")[2].strip()): line for line in text.splitlines()
            if line.startswith("| ") and line.count("|") > 7}
    for regmap in (XAPIC_MAP, X2APIC_MAP):
        at = lambda name: f"0x{regmap.address(name) if regmap.space == 'msr' else regmap[name].offset:03X}"
        assert "| 0x00060014 |" in rows[("VERSION", at("VERSION"))]
        assert "| the APIC ID |" in rows[("ID", at("ID"))]
    lvts = [r for r in REGISTERS if r.name.startswith("LVT_")]
    assert BY_NAME["VERSION"].reset == 0x14 | (len(lvts) - 1) << 16 == 0x00060014
