"""Packs and unpacks integers with the RTL's own ``amaranth.lib.data`` layouts.

Models and tests never repeat a bit position: ``pack(Icr, vector=0x40, delivery_mode=...)``
uses the same field table as the hardware.
"""

import enum

from amaranth.lib import data

__all__ = ["pack", "unpack", "field_mask"]


def _fields(layout):
    return data.Layout.cast(layout)


def pack(layout, **fields):
    """An integer with ``fields`` placed per ``layout``; unknown names or values that do not
    fit raise ValueError naming the field."""
    layout = _fields(layout)
    known = {name: field for name, field in layout}
    value = 0
    for name, field_value in fields.items():
        if name not in known:
            raise ValueError(f"{name!r} is not a field of {layout!r}")
        field = known[name]
        raw = field_value.value if isinstance(field_value, enum.Enum) else int(field_value)
        if not 0 <= raw < (1 << field.width):
            raise ValueError(f"field {name} = {field_value!r} does not fit in {field.width} bits")
        value |= raw << field.offset
    return value


def unpack(layout, value):
    """``{field: value}`` of an integer; enum-shaped fields come back as enum members."""
    result = {}
    for name, field in _fields(layout):
        raw = (int(value) >> field.offset) & ((1 << field.width) - 1)
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            try:
                raw = shape(raw)
            except ValueError:
                pass
        result[name] = raw
    return result


def field_mask(layout, name):
    field = dict(iter(_fields(layout)))[name]
    return ((1 << field.width) - 1) << field.offset
