"""Packs and unpacks integers with the RTL's own ``amaranth.lib.data`` layouts.

Models and tests never repeat a bit position: ``pack(Icr, vector=0x40, delivery_mode=...)``
uses the same field table as the hardware.
"""

import enum

from amaranth.lib import data

__all__ = ["pack", "unpack", "field_mask"]


class _Table:
    """One layout's fields, read once: casting an ``amaranth.lib.data`` layout and walking its
    fields costs more than the packing itself, and the models pack or unpack on every register
    access and bus message (an ICR write, each fabric message)."""

    __slots__ = ("layout", "fields", "by_name", "_enums")

    def __init__(self, layout):
        self.layout = data.Layout.cast(layout)
        #: (name, offset, width, enum class or None), in the layout's order
        self.fields = tuple(
            (name, field.offset, field.width,
             field.shape if isinstance(field.shape, type) and issubclass(field.shape, enum.Enum)
             else None)
            for name, field in self.layout)
        self.by_name = {name: (offset, width) for name, offset, width, _ in self.fields}
        self._enums = {}          # (enum class, raw) -> member, or raw when not a member

    def member(self, shape, raw):
        """``shape(raw)``, or ``raw`` when it is no member; remembered, as an enum's members do
        not change."""
        key = (shape, raw)
        try:
            return self._enums[key]
        except KeyError:
            pass
        try:
            value = shape(raw)
        except ValueError:
            value = raw
        self._enums[key] = value
        return value


_TABLES = {}


def _table(layout):
    try:
        return _TABLES[layout]
    except KeyError:
        table = _TABLES[layout] = _Table(layout)
        return table
    except TypeError:           # an unhashable layout-like object: not remembered
        return _Table(layout)


def pack(layout, **fields):
    """An integer with ``fields`` placed per ``layout``; unknown names or values that do not
    fit raise ValueError naming the field."""
    table = _table(layout)
    known = table.by_name
    value = 0
    for name, field_value in fields.items():
        if name not in known:
            raise ValueError(f"{name!r} is not a field of {table.layout!r}")
        offset, width = known[name]
        raw = field_value.value if isinstance(field_value, enum.Enum) else int(field_value)
        if not 0 <= raw < (1 << width):
            raise ValueError(f"field {name} = {field_value!r} does not fit in {width} bits")
        value |= raw << offset
    return value


def unpack(layout, value):
    """``{field: value}`` of an integer; enum-shaped fields come back as enum members."""
    table = _table(layout)
    value = int(value)
    result = {}
    for name, offset, width, shape in table.fields:
        raw = (value >> offset) & ((1 << width) - 1)
        result[name] = raw if shape is None else table.member(shape, raw)
    return result


def field_mask(layout, name):
    """The bits of field ``name`` of ``layout``, in place; KeyError for an unknown name."""
    offset, width = _table(layout).by_name[name]
    return ((1 << width) - 1) << offset
