"""The register description layer (rtl/lib/registers.py): its checks name what is wrong, and its
decoder selects and reads the right register in Amaranth's simulator."""

import pytest
from amaranth import Module, Signal

from apwake.rtl.lib.registers import (Access, AddressMap, Field, MemoryRegion, Register, RegisterDecoder,
                                      RegisterMap, Window, fields_of)
from apwake.rtl.mpwk_mailbox.layouts import MailboxStatus


def _reg(name="A", offset=0, **kw):
    return Register(name, offset, access=Access.RW, **kw)


@pytest.mark.parametrize("make, message", [
    (lambda: Field("2x", 1), r"field name must be an identifier, not '2x'"),
    (lambda: Field("a", 0), r"field a width must be an integer at least 1, not 0"),
    (lambda: Register("R", 0, [Field("a", 4), Field("b", 4, lsb=2)]),
     r"register R: field b \[5:2\] overlaps field a \[3:0\]"),
    (lambda: Register("R", 0, [Field("a", 4, lsb=30)]), r"register R: field a \[33:30\] does not fit in 32 bits"),
    (lambda: Register("R", 0, [Field("a", 1), Field("a", 1)]), r"register R: two fields are named 'a'"),
    (lambda: Register("R", 0), r"register R: give either fields or access, not neither"),
    (lambda: Register("R", 0, [Field("a", 1)], access=Access.R),
     r"register R: give either fields or access, not both"),
    (lambda: _reg(reset=1 << 32), r"register A reset must be an integer 0 to 4294967295, not 4294967296"),
    (lambda: _reg(width=24), r"register A width must be 8, 16, 32 or 64 bits, not 24"),
    (lambda: RegisterMap("m", 0, 0x10, [_reg(offset=0x10)]),
     r"register map m: register A at 0x10 is outside the window of 0x10"),
    (lambda: RegisterMap("m", 0, 0x10, [_reg(offset=2)]),
     r"register map m: register A at 0x2 is not aligned to its 4 bytes"),
    (lambda: RegisterMap("m", 0, 0x10, [_reg(), _reg()]), r"register map m: two registers are named 'A'"),
    (lambda: RegisterMap("m", 0, 0x10, [_reg(width=64), _reg("B", 4)]),
     r"register map m: register B at 0x4 overlaps register A at 0x0"),
    (lambda: RegisterMap("m", 0, 0x18, []), r"register map m size must be a power of two, not 0x18"),
    (lambda: RegisterMap("m", 0, 0x10, [], space="io"), r"register map m space must be 'mmio' or 'msr', not 'io'"),
    (lambda: AddressMap("s", 28, [Window("a", 0x1000_0000), Window("b", 0x1800_0000)]),
     r"address map s: window b at 0x18000000 is not at a 0x10000000 boundary"),
    (lambda: AddressMap("s", 28, [Window("a", 0), Window("b", 0)]), r"address map s: windows a and b share window 0"),
    (lambda: AddressMap("s", 28, [Window("a", 0, [RegisterMap("m", 0x1000_0000, 0x10)])]),
     r"address map s: register map m at 0x10000000 is not an MMIO map inside window a"),
    (lambda: MemoryRegion("RAM", 0, 0x100, "rwz"), r"memory region RAM attributes must be letters of 'rwx', not 'rwz'"),
    (lambda: fields_of(MailboxStatus, docs={"nope": ""}), r"\['nope'\] are not fields of"),
    (lambda: RegisterDecoder(RegisterMap("m", 0, 0x10, [_reg(width=64)]), Signal(4)),
     r"register map m: register A is 64 bits, wider than the 32-bit bus that decodes it"),
])
def test_errors_name_the_culprit(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_access_must_be_an_access():
    with pytest.raises(TypeError, match=r"field a access must be an Access, not 'RW'"):
        Field("a", 1, "RW")


def test_fields_are_placed_in_order_and_access_summarised():
    r = Register("R", 0, [Field("lo", 4, Access.R), Field("hi", 2, Access.RW, lsb=8)])
    assert [(f.name, f.lsb, f.bits) for f in r.fields] == [("lo", 0, "[3:0]"), ("hi", 8, "[9:8]")]
    assert r.access_code == "mixed" and r.mask(Access.RW) == 0x300 and r.mask() == 0x30F
    status = Register("S", 0, fields_of(MailboxStatus, Access.RW1C))
    assert status.access is Access.RW1C and status["rsvd"].access is Access.RSVD
    assert [a for a in Access if a.read_effect] == [Access.RS, Access.RSW]
    assert not Access.RSVD.readable and not Access.WS.readable and Access.RW1C.write_effect


def test_decoder_read_values_must_match_the_description():
    regmap = RegisterMap("m", 0, 0x10, [Register("A", 0, access=Access.R), Register("B", 4, access=Access.WS)])
    decoder = RegisterDecoder(regmap, Signal(4))
    with pytest.raises(ValueError, match=r"register map m: read values miss the readable registers \['A'\]"):
        decoder.read({})
    with pytest.raises(ValueError, match=r"name registers that are not readable: \['B'\]"):
        decoder.read({"A": 1, "B": 2})


def test_decoder_selects_and_reads_in_simulation(simulate):
    regmap = RegisterMap("m", 0x100, 0x20, [Register("A", 0x0, access=Access.R), Register("B", 0x8, access=Access.RW),
                                            Register("C", 0x1C, access=Access.WS)])
    m = Module()
    addr = Signal(32)
    decoder = RegisterDecoder(regmap, addr)
    rdata, sel_c = Signal(32), Signal()
    m.d.comb += [rdata.eq(decoder.read({"A": 0x1111, "B": 0xB0B0})), sel_c.eq(decoder["C"])]
    seen = []

    async def bench(ctx):
        for offset in (0x0, 0x2, 0x8, 0x1C, 0x4, 0x28):   # 0x2: a byte of A's word; 0x28 aliases 0x8
            ctx.set(addr, regmap.base + offset)
            seen.append((offset, ctx.get(rdata), ctx.get(sel_c)))

    simulate(m, bench, clocked=False)
    assert seen == [(0x0, 0x1111, 0), (0x2, 0x1111, 0), (0x8, 0xB0B0, 0), (0x1C, 0, 1), (0x4, 0, 0), (0x28, 0xB0B0, 0)]
