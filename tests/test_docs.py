"""Generated documentation stays in step with the data it is generated from."""

from pathlib import Path

from rtl.lapic.registers import markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_register_reference_is_current():
    text = (DOCS / "REGISTERS.md").read_text()
    assert markdown() in text, ("docs/REGISTERS.md is out of date with rtl/lapic/registers.py: "
                                "regenerate its table with `apwake registers`")
