"""Register maps as data: fields with access actions, registers, windows (issue 11 part 3).

The shape follows amaranth-soc's ``csr.Register``/``csr.Field`` and ``csr.action`` (that package is
only a placeholder on PyPI, so it cannot be a dependency), cut to what apwake needs: a
description that the RTL decodes (:class:`RegisterDecoder`), and that one exporter
(:mod:`apwake.firmware.export`) turns into the firmware's C header, the linker script's MEMORY
block, ``docs/REGISTERS.md`` and ``docs/registers.json``.  Offsets are never typed twice.

Behaviour stays in the blocks: a register's access says what a read and a write *do*
(store, strobe, clear, have a side effect), the block implements it.
"""

import enum
import re
from dataclasses import dataclass

from amaranth import Const, Value
from amaranth.lib import data

__all__ = ["Access", "Field", "Register", "RegisterMap", "MemoryRegion", "Window", "AddressMap",
           "RegisterDecoder", "fields_of"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Access(enum.Enum):
    """What a read and a write of a field do; the value is the code the docs print.

    ``R`` the read returns the value; ``W`` a write stores it; ``S`` after an ``R`` or ``W``: that
    access has a side effect (a strobe, an action); ``W1C`` a 1 written clears that bit.
    Unreadable fields read as 0; writes to unwritable fields are ignored.
    """

    R = "R"            #: read-only
    RS = "RS"          #: read with a side effect (an RDMSR); writes ignored
    W = "W"            #: write-only storage; reads 0
    WS = "WS"          #: a write acts (a one-cycle strobe: VMGEXIT, jmp ResetVector); reads 0
    RW = "RW"          #: storage
    RWS = "RWS"        #: reads the value; a write acts (the WRMSR of DATA_HI)
    RSW = "RSW"        #: a read has a side effect (test-and-set, RDMSR); a write stores
    RW1C = "RW1C"      #: sticky status: reads the value, a 1 written clears that bit
    RSVD = "-"         #: reserved: reads 0, writes ignored

    @property
    def readable(self):
        return self.value.startswith("R") and self is not Access.RSVD

    @property
    def writable(self):
        return "W" in self.value

    @property
    def read_effect(self):
        """A read does more than return the value."""
        return self.value.startswith("RS")

    @property
    def write_effect(self):
        """A write does more than store the value."""
        return self.value.endswith("WS") or self is Access.RW1C


def _check_name(kind, name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name must be an identifier, not {name!r}")


def _find(items, name, where):
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"{where} has no {name!r}")


def _check_int(what, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value >= high):
        bound = f"{low} to {high - 1}" if high is not None else f"at least {low}"
        raise ValueError(f"{what} must be an integer {bound}, not {value!r}")


@dataclass(frozen=True)
class Field:
    """One bit field of a register.

    Parameters
    ----------
    name : str
        An identifier; ``rsvd...`` names with :attr:`Access.RSVD` are reserved bits.
    width : int
        Bits, at least 1.
    access : Access
    lsb : int or None
        The field's lowest bit; ``None`` places it right above the previous field.
    doc : str

    Raises
    ------
    ValueError
        A name that is not an identifier, a width below 1, a negative ``lsb``.
    TypeError
        ``access`` that is not an :class:`Access`.
    """

    name: str
    width: int
    access: Access = Access.RW
    lsb: int = None
    doc: str = ""

    def __post_init__(self):
        _check_name("field", self.name)
        _check_int(f"field {self.name} width", self.width, 1)
        if self.lsb is not None:
            _check_int(f"field {self.name} lsb", self.lsb, 0)
        if not isinstance(self.access, Access):
            raise TypeError(f"field {self.name} access must be an Access, not {self.access!r}")

    @property
    def msb(self):
        return self.lsb + self.width - 1

    @property
    def mask(self):
        """The field's bits in the register (needs a placed field, as :attr:`Register.fields` are)."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def bits(self):
        """``"[msb:lsb]"``, or ``"[bit]"`` for one bit."""
        return f"[{self.lsb}]" if self.width == 1 else f"[{self.msb}:{self.lsb}]"


def fields_of(layout, access=Access.RW, *, docs=None, overrides=None):
    """The fields of an ``amaranth.lib.data`` struct layout, placed at its offsets.

    Fields named ``rsvd...`` are reserved; ``overrides`` maps field names to another
    :class:`Access`, ``docs`` field names to their description.
    """
    docs, overrides = docs or {}, overrides or {}
    result = []
    for name, f in sorted(data.Layout.cast(layout), key=lambda item: item[1].offset):
        if name.startswith("rsvd"):
            result.append(Field(name, f.width, Access.RSVD, lsb=f.offset))
        else:
            result.append(Field(name, f.width, overrides.get(name, access), lsb=f.offset, doc=docs.get(name, "")))
    unknown = (set(docs) | set(overrides)) - {f.name for f in result}
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not fields of {layout!r}")
    return result


@dataclass(frozen=True)
class Register:
    """A register: a name at an offset of its window, made of fields.

    Parameters
    ----------
    name : str
    offset : int
        Byte offset in an MMIO window; for an MSR window, the MSR number minus the window's base.
    fields : list of Field, or None
        Placed in order (a field without ``lsb`` goes right above the one before); bits no field
        covers are reserved.  ``None``: one field named ``value`` over the whole register with
        ``access``.
    access : Access or None
        Only without ``fields``.
    width : int
        Bits: 8, 16, 32 or 64.
    reset : int
        The value after reset.
    reset_doc : str or None
        Printed instead of ``reset`` where the value depends on the instance (the APIC ID).
    doc, source : str
        What it is; the specification it follows (``docs/spec/...`` or a public document).

    Raises
    ------
    ValueError
        Overlapping fields, a field beyond ``width``, a ``reset`` that does not fit, both or
        neither of ``fields`` and ``access``, an unsupported ``width``, a negative ``offset``.
    """

    name: str
    offset: int
    fields: tuple = None
    access: Access = None
    width: int = 32
    reset: int = 0
    reset_doc: str = None
    doc: str = ""
    source: str = ""

    def __post_init__(self):
        _check_name("register", self.name)
        _check_int(f"register {self.name} offset", self.offset, 0)
        if self.width not in (8, 16, 32, 64):
            raise ValueError(f"register {self.name} width must be 8, 16, 32 or 64 bits, not {self.width!r}")
        if (self.fields is None) == (self.access is None):
            raise ValueError(f"register {self.name}: give either fields or access, not "
                             f"{'both' if self.fields is not None else 'neither'}")
        fields = [Field("value", self.width, self.access)] if self.fields is None else list(self.fields)
        placed, next_lsb, names = [], 0, set()
        for f in fields:
            if not isinstance(f, Field):
                raise TypeError(f"register {self.name}: fields must be Field objects, not {f!r}")
            if f.name in names:
                raise ValueError(f"register {self.name}: two fields are named {f.name!r}")
            names.add(f.name)
            lsb = next_lsb if f.lsb is None else f.lsb
            f = Field(f.name, f.width, f.access, lsb=lsb, doc=f.doc)
            for other in placed:
                if f.lsb <= other.msb and other.lsb <= f.msb:
                    raise ValueError(f"register {self.name}: field {f.name} {f.bits} overlaps "
                                     f"field {other.name} {other.bits}")
            if f.msb >= self.width:
                raise ValueError(f"register {self.name}: field {f.name} {f.bits} does not fit in "
                                 f"{self.width} bits")
            placed.append(f)
            next_lsb = f.msb + 1
        _check_int(f"register {self.name} reset", self.reset, 0, 1 << self.width)
        object.__setattr__(self, "fields", tuple(sorted(placed, key=lambda f: f.lsb)))
        if self.access is None:
            accesses = {f.access for f in placed if f.access is not Access.RSVD}
            object.__setattr__(self, "access", accesses.pop() if len(accesses) == 1 else None)

    @property
    def readable(self):
        return any(f.access.readable for f in self.fields)

    @property
    def writable(self):
        return any(f.access.writable for f in self.fields)

    @property
    def access_code(self):
        """The register's :class:`Access` code, or ``"mixed"`` when its fields differ."""
        return "mixed" if self.access is None else self.access.value

    def mask(self, *accesses):
        """The bits of the fields with one of ``accesses`` (all defined bits without any)."""
        return sum(f.mask for f in self.fields if f.access is not Access.RSVD
                   and (not accesses or f.access in accesses))

    def __getitem__(self, name):
        return _find(self.fields, name, f"register {self.name}")


@dataclass(frozen=True)
class RegisterMap:
    """A window of registers: ``size`` bytes (MMIO) or MSR numbers from ``base``.

    Parameters
    ----------
    name : str
        Also the C prefix of its definitions unless ``prefix`` says otherwise.
    base : int
        Address (MMIO) or first MSR number; 0 for a block's window placed by its parent
        (:meth:`rebased`).
    size : int
        Bytes (or MSR numbers) the window decodes: a power of two.  Registers alias every
        ``size`` bytes where a parent gives the window more room.
    registers : list of Register
    space : str
        ``"mmio"`` or ``"msr"``.
    prefix : str or None
        The C prefix (default: ``name`` in capitals).
    doc, source : str

    Raises
    ------
    ValueError
        Two registers with one name, overlapping registers, a register outside ``size``, an
        MMIO register not aligned to its width, a ``size`` that is not a power of two, an
        unknown ``space``.
    """

    name: str
    base: int
    size: int
    registers: tuple = ()
    space: str = "mmio"
    prefix: str = None
    doc: str = ""
    source: str = ""

    def __post_init__(self):
        _check_name("register map", self.name)
        _check_int(f"register map {self.name} base", self.base, 0, 1 << 64)
        _check_int(f"register map {self.name} size", self.size, 1)
        if self.size & (self.size - 1):
            raise ValueError(f"register map {self.name} size must be a power of two, not {self.size:#x}")
        if self.space not in ("mmio", "msr"):
            raise ValueError(f"register map {self.name} space must be 'mmio' or 'msr', not {self.space!r}")
        registers = tuple(self.registers)
        spans, names = [], set()
        for r in registers:
            if not isinstance(r, Register):
                raise TypeError(f"register map {self.name}: registers must be Register objects, not {r!r}")
            if r.name in names:
                raise ValueError(f"register map {self.name}: two registers are named {r.name!r}")
            names.add(r.name)
            length = r.width // 8 if self.space == "mmio" else 1
            if self.space == "mmio" and r.offset % length:
                raise ValueError(f"register map {self.name}: register {r.name} at {r.offset:#x} is not "
                                 f"aligned to its {length} bytes")
            if r.offset + length > self.size:
                raise ValueError(f"register map {self.name}: register {r.name} at {r.offset:#x} is "
                                 f"outside the window of {self.size:#x}")
            for other, start, end in spans:
                if r.offset < end and start < r.offset + length:
                    raise ValueError(f"register map {self.name}: register {r.name} at {r.offset:#x} "
                                     f"overlaps register {other} at {start:#x}")
            spans.append((r.name, r.offset, r.offset + length))
        object.__setattr__(self, "registers", registers)
        object.__setattr__(self, "prefix", self.prefix or self.name.upper())

    def __iter__(self):
        return iter(self.registers)

    def __len__(self):
        return len(self.registers)

    def __contains__(self, name):
        return any(r.name == name for r in self.registers)

    def __getitem__(self, name):
        return _find(self.registers, name, f"register map {self.name}")

    @property
    def offsets(self):
        """``{name: offset}``."""
        return {r.name: r.offset for r in self.registers}

    @property
    def offset_bits(self):
        """Low address bits the window decodes."""
        return (self.size - 1).bit_length()

    def address(self, name):
        """``base + offset`` of register ``name`` (the MSR number in an MSR window)."""
        return self.base + self[name].offset

    def rebased(self, base, *, name=None, prefix=None):
        """The same registers at another ``base`` (a block's window where its parent puts it)."""
        return RegisterMap(name or self.name, base, self.size, self.registers, space=self.space,
                           prefix=prefix or (None if name else self.prefix), doc=self.doc, source=self.source)


@dataclass(frozen=True)
class MemoryRegion:
    """A block of memory (the linker script's MEMORY): ``attributes`` as ld writes them (``rx``)."""

    name: str
    base: int
    size: int
    attributes: str = "rwx"
    doc: str = ""

    def __post_init__(self):
        _check_name("memory region", self.name)
        _check_int(f"memory region {self.name} base", self.base, 0, 1 << 32)
        _check_int(f"memory region {self.name} size", self.size, 1, (1 << 32) - self.base + 1)
        if not self.attributes or set(self.attributes) - set("rwx"):
            raise ValueError(f"memory region {self.name} attributes must be letters of 'rwx', "
                             f"not {self.attributes!r}")


@dataclass(frozen=True)
class Window:
    """One window of an :class:`AddressMap`: a name, a base, and the register maps inside it
    (none for memory)."""

    name: str
    base: int
    maps: tuple = ()
    doc: str = ""

    def __post_init__(self):
        _check_name("window", self.name)
        _check_int(f"window {self.name} base", self.base, 0, 1 << 32)
        for regmap in self.maps:
            if not isinstance(regmap, RegisterMap):
                raise TypeError(f"window {self.name}: maps must be RegisterMap objects, not {regmap!r}")
        object.__setattr__(self, "maps", tuple(self.maps))


@dataclass(frozen=True)
class AddressMap:
    """A bus's address space: windows selected by the top address bits.

    Parameters
    ----------
    name : str
    window_bits : int
        Low bits inside a window; the bits above them select the window (``address >> window_bits``).
    windows : list of Window
        Each at a window boundary, its register maps inside it.
    memory : list of MemoryRegion
        What the firmware is linked into.
    doc : str

    Raises
    ------
    ValueError
        Two windows in one slot, a window not at a window boundary, two windows or regions with
        one name, a register map outside its window.
    """

    name: str
    window_bits: int
    windows: tuple
    memory: tuple = ()
    doc: str = ""

    def __post_init__(self):
        _check_int(f"address map {self.name} window_bits", self.window_bits, 1, 32)
        slots, names = {}, set()
        size = 1 << self.window_bits
        for w in (*self.windows, *self.memory):
            if w.name in names:
                raise ValueError(f"address map {self.name}: two entries are named {w.name!r}")
            names.add(w.name)
        for w in self.windows:
            if not isinstance(w, Window):
                raise TypeError(f"address map {self.name}: windows must be Window objects, not {w!r}")
            if w.base % size:
                raise ValueError(f"address map {self.name}: window {w.name} at {w.base:#x} is not at a "
                                 f"{size:#x} boundary")
            slot = w.base >> self.window_bits
            if slot in slots:
                raise ValueError(f"address map {self.name}: windows {slots[slot]} and {w.name} share "
                                 f"window {slot}")
            slots[slot] = w.name
            for regmap in w.maps:
                if regmap.space != "mmio" or not w.base <= regmap.base <= regmap.base + regmap.size <= w.base + size:
                    raise ValueError(f"address map {self.name}: register map {regmap.name} at "
                                     f"{regmap.base:#x} is not an MMIO map inside window {w.name}")
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "memory", tuple(self.memory))

    def __getitem__(self, name):
        return _find((*self.windows, *self.memory), name, f"address map {self.name}")

    @property
    def window_size(self):
        return 1 << self.window_bits

    def window_of(self, address):
        """The window number of ``address`` (an int, or an Amaranth value: its top bits)."""
        if isinstance(address, int):
            return address >> self.window_bits
        return Value.cast(address)[self.window_bits:]

    def slot(self, name):
        """The window number of window ``name``."""
        return self[name].base >> self.window_bits


class RegisterDecoder:
    """The address decode of one :class:`RegisterMap`, as Amaranth values.

    Parameters
    ----------
    regmap : RegisterMap
    offset : Value
        The address inside the window: its low :attr:`RegisterMap.offset_bits` bits are decoded,
        but for the byte lanes of one bus word (a byte access reaches its word's register).
    bus_bytes : int
        The data bus width of an MMIO window (an MSR window decodes every number).

    Raises
    ------
    ValueError
        A register wider than the bus.

    Attributes
    ----------
    select : dict of str to Value
        Per register, 1 bit: the access is to it.
    """

    def __init__(self, regmap, offset, *, bus_bytes=4):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {regmap!r}")
        if regmap.space == "msr":
            bus_bytes = 1
        if bus_bytes not in (1, 2, 4, 8):
            raise ValueError(f"bus_bytes must be 1, 2, 4 or 8, not {bus_bytes!r}")
        for r in regmap:
            if regmap.space == "mmio" and r.width > 8 * bus_bytes:
                raise ValueError(f"register map {regmap.name}: register {r.name} is {r.width} bits, wider "
                                 f"than the {8 * bus_bytes}-bit bus that decodes it")
        self.regmap = regmap
        low = (bus_bytes - 1).bit_length()
        #: the decoded part of the offset: the byte lanes of one bus word are not decoded
        self.offset = Value.cast(offset)[low:max(regmap.offset_bits, low)]
        self.select = {r.name: self.offset == (r.offset >> low) for r in regmap}

    def __getitem__(self, name):
        if name not in self.select:
            raise KeyError(f"register map {self.regmap.name} has no register {name!r}")
        return self.select[name]

    def read(self, values):
        """The read data: ``values[name]`` for the selected register, 0 for none.

        ``values`` must give exactly the readable registers, so the description and the
        RTL cannot drift apart: a missing one, or one the map says reads as 0, is a ValueError.
        """
        readable = {r.name for r in self.regmap if r.readable}
        missing, extra = readable - set(values), set(values) - readable
        if missing or extra:
            raise ValueError(f"register map {self.regmap.name}: read values "
                             + (f"miss the readable registers {sorted(missing)}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"name registers that are not readable: {sorted(extra)}" if extra else ""))
        result = Const(0, 1)
        for name, value in values.items():
            value = Value.cast(value)
            result = result | (value & self.select[name].replicate(len(value)))
        return result
