"""Log-depth priority logic: find-first-set trees and a fair round-robin arbiter.

256-bit IRR/ISR scans and 1024-port arbitration written as if-chains unroll into hundreds of
nested multiplexers; these trees keep depth O(log n) and size O(n), so conversion, Verilator
compile time and FPGA timing stay flat as the fabric grows.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["find_set", "RoundRobinArbiter", "min_tree", "onehot_to_index", "or_tree"]


def find_set(m, value, *, highest, name="ffs"):
    """Index of the highest (or lowest) set bit of ``value``.

    Returns ``(any, index)``: two signals driven in ``m.d.comb``; ``index`` is 0 when no bit
    is set.
    """
    width = len(value)
    nodes = [(value[i], Const(0, 0)) for i in range(width)]   # a leaf needs no index bits
    level = 0
    while len(nodes) > 1:
        merged = []
        for k in range(0, len(nodes), 2):
            if k + 1 == len(nodes):
                lo_any, lo_idx = nodes[k]
                merged.append((lo_any, Cat(lo_idx, Const(0, 1))))
                continue
            (lo_any, lo_idx), (hi_any, hi_idx) = nodes[k], nodes[k + 1]
            any_ = Signal(name=f"{name}_l{level}_{k // 2}_any")
            idx = Signal(len(lo_idx) + 1, name=f"{name}_l{level}_{k // 2}_idx")
            m.d.comb += any_.eq(lo_any | hi_any)
            pick_hi = hi_any if highest else ~lo_any
            m.d.comb += idx.eq(Mux(pick_hi, Cat(hi_idx, Const(1, 1)), Cat(lo_idx, Const(0, 1))))
            merged.append((any_, idx))
        nodes = merged
        level += 1
    any_, idx = nodes[0]
    out_any = Signal(name=f"{name}_any")
    out_idx = Signal(range(max(width, 2)), name=f"{name}_index")
    m.d.comb += [out_any.eq(any_), out_idx.eq(idx)]
    return out_any, out_idx


def min_tree(m, entries, *, name="min"):
    """Lowest ``key`` among valid entries, ties to the lowest position.

    ``entries`` is a list of ``(valid, key)``; returns ``(any, index, key)`` signals: whether
    an entry is valid, the winner's position and its key (both 0 when none is valid).  Trees
    compose: the winners of consecutive groups, fed to another tree with the same tie rule, give
    the winner of all entries (the clustered fabric's lowest-priority selection relies on it).
    """
    nodes = [(v, k, Const(0, 0)) for v, k in entries]
    level = 0
    while len(nodes) > 1:
        merged = []
        for j in range(0, len(nodes), 2):
            if j + 1 == len(nodes):
                v, k, i = nodes[j]
                merged.append((v, k, Cat(i, Const(0, 1))))
                continue
            (av, ak, ai), (bv, bk, bi) = nodes[j], nodes[j + 1]
            v = Signal(name=f"{name}_l{level}_{j // 2}_valid")
            k = Signal(len(ak), name=f"{name}_l{level}_{j // 2}_key")
            i = Signal(len(ai) + 1, name=f"{name}_l{level}_{j // 2}_idx")
            take_b = bv & (~av | (bk < ak))
            m.d.comb += [
                v.eq(av | bv),
                k.eq(Mux(take_b, bk, ak)),
                i.eq(Mux(take_b, Cat(bi, Const(1, 1)), Cat(ai, Const(0, 1)))),
            ]
            merged.append((v, k, i))
        nodes = merged
        level += 1
    v, k, i = nodes[0]
    out_any = Signal(name=f"{name}_any")
    out_idx = Signal(range(max(len(entries), 2)), name=f"{name}_index")
    out_key = Signal(len(k), name=f"{name}_key")
    m.d.comb += [out_any.eq(v), out_idx.eq(i), out_key.eq(Mux(v, k, 0))]
    return out_any, out_idx, out_key


class RoundRobinArbiter(wiring.Component):
    """Grants one requester per cycle, starting the search after the last one granted.

    A requester that keeps requesting is granted within ``n`` grants whatever the others do, so
    no sender starves.

    Parameters
    ----------
    n : int
        Number of requesters, 1 to 4096 (the cost is O(n): n-bit one-hot arithmetic).

    Attributes
    ----------
    requests : Signal(n), in
    grant : Signal(n), out
        One-hot, combinational from ``requests``.
    grant_index : Signal(range(n)), out
    valid : Signal(1), out
        Some requester is granted this cycle; the search pointer advances on it.
    last : Signal(n), out
        The last grant, one-hot, from a register (bit ``n - 1`` until the first grant): a bus
        that answers its granted requester while it grants the next one excludes it with this
        instead of decoding its index again.
    """

    def __init__(self, n):
        if not isinstance(n, int) or not 1 <= n <= 4096:
            raise ValueError(f"RoundRobinArbiter n must be an integer from 1 to 4096, not {n!r}")
        self.n = n
        super().__init__({
            "requests": In(n),
            "grant": Out(n),
            "grant_index": Out(range(max(n, 2))),
            "valid": Out(1),
            "last": Out(n, init=1 << (n - 1)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        # One-hot arithmetic: x & -x isolates the lowest set bit; ~(last | (last - 1)) is every
        # position after the last grant.  O(n) logic that maps to FPGA carry chains.
        last = self.last
        after_last = Signal(n)
        m.d.comb += after_last.eq(~(last | (last - 1)))
        # The requesters after the last grant, then all of them, as one 2n-bit value: its lowest
        # set bit is the first requester after the last grant, wrapping around.  One carry chain
        # instead of testing the masked requests for zero and choosing between the two (four
        # LUT levels fewer on the 32-core ECP5 build's arbitration loops).
        both = Signal(2 * n)
        first = Signal(2 * n)
        m.d.comb += [
            both.eq(Cat(self.requests & after_last, self.requests)),
            first.eq(both & (~both + 1)),
            self.grant.eq(first[:n] | first[n:]),
            self.valid.eq(self.requests != 0),
            self.grant_index.eq(onehot_to_index(self.grant)),
        ]
        with m.If(self.valid):
            m.d.sync += last.eq(self.grant)
        return m


def onehot_to_index(onehot):
    """Binary index of the set bit of a one-hot value (0 when none is set)."""
    n = len(onehot)
    bits = [Cat(*(onehot[i] for i in range(n) if (i >> b) & 1)).any()
            for b in range(max(1, (n - 1).bit_length()))]
    return Cat(*bits)


def or_tree(values):
    """The OR of ``values`` (Amaranth values or constants) as a balanced tree, so that a wide
    OR does not become one long chain; ``Const(0, 1)`` when ``values`` is empty."""
    values = list(values)
    if not values:
        return Const(0, 1)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]
