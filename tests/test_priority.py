"""The log-depth priority logic, in Amaranth's own simulator (fast, no Verilator build)."""

import random

import pytest

from amaranth import Module, Signal

from apwake.rtl.lib.priority import RoundRobinArbiter, find_set, min_tree


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_round_robin_is_fair_and_exact(simulate, n):
    dut = RoundRobinArbiter(n)
    rng = random.Random(n)

    async def bench(ctx):
        last = n - 1
        for _ in range(400):
            assert ctx.get(dut.last) == 1 << last     # the last grant, one-hot, from a register
            requests = rng.getrandbits(n)
            ctx.set(dut.requests, requests)
            grant, index, valid = ctx.get(dut.grant), ctx.get(dut.grant_index), ctx.get(dut.valid)
            assert valid == (requests != 0)
            if not requests:
                assert grant == 0
            else:
                # the first requester after the last one granted, wrapping around
                expected = next(i % n for i in range(last + 1, last + 1 + n) if requests >> (i % n) & 1)
                assert grant == 1 << expected and index == expected, (requests, last, grant)
                last = expected
            await ctx.tick()

    simulate(dut, bench)


def test_find_set_and_min_tree(simulate):
    for width in (1, 5, 16, 40):
        m = Module()
        value = Signal(width)
        keys = [Signal(4) for _ in range(width)]
        hi = find_set(m, value, highest=True, name="hi")
        lo = find_set(m, value, highest=False, name="lo")
        best = min_tree(m, [(value[i], k) for i, k in enumerate(keys)], name="m")
        rng = random.Random(width)

        async def bench(ctx):
            for _ in range(60):
                v = rng.getrandbits(width) & rng.getrandbits(width)
                ks = [rng.randrange(16) for _ in range(width)]
                ctx.set(value, v)
                for sig, k in zip(keys, ks):
                    ctx.set(sig, k)
                bits = [i for i in range(width) if v >> i & 1]
                assert ctx.get(hi[0]) == bool(bits) == ctx.get(best[0])
                if bits:
                    assert ctx.get(hi[1]) == max(bits), (width, v)
                    assert ctx.get(lo[1]) == min(bits), (width, v)
                    winner = min(bits, key=lambda i: (ks[i], i))
                    assert ctx.get(best[1]) == winner, (width, v, ks)
                    assert ctx.get(best[2]) == ks[winner], (width, v, ks)
                else:
                    assert ctx.get(best[2]) == 0
                await ctx.delay(1e-9)

        simulate(m, bench, clocked=False)


@pytest.mark.parametrize("n, group", [(1, 1), (3, 1), (3, 2), (5, 4), (32, 8), (40, 16)])
def test_min_tree_of_groups_gives_the_flat_pick(simulate, n, group):
    """Groups' winners fed to a second tree with ``low_index`` (the pipelined cluster's two
    steps, rtl/lapic/cluster.py) name the same entry, by its position among all, as one tree."""
    m = Module()
    value = Signal(n)
    keys = [Signal(4) for _ in range(n)]
    entries = [(value[i], k) for i, k in enumerate(keys)]
    flat = min_tree(m, entries, name="flat")
    picks = [min_tree(m, entries[g:g + group], name=f"g{g}") for g in range(0, n, group)]
    grouped = min_tree(m, [(p[0], p[2]) for p in picks], low_index=[p[1] for p in picks],
                       low_width=(group - 1).bit_length(), name="top")
    rng = random.Random(n)

    async def bench(ctx):
        checked = 0
        for _ in range(200):
            a, b = rng.getrandbits(n), rng.getrandbits(n)
            v = a & b if rng.random() < 0.5 else a | b          # few entries valid, or many
            ks = [rng.randrange(4) for _ in range(n)]
            ctx.set(value, v)
            for sig, k in zip(keys, ks):
                ctx.set(sig, k)
            assert ctx.get(grouped[0]) == ctx.get(flat[0]) == (v != 0)
            if v:
                winner = min((i for i in range(n) if v >> i & 1), key=lambda i: (ks[i], i))
                assert ctx.get(flat[1]) == ctx.get(grouped[1]) == winner, (v, ks)
                assert ctx.get(grouped[2]) == ks[winner]
                checked += 1
            await ctx.delay(1e-9)
        assert checked > 100

    simulate(m, bench, clocked=False)


def test_min_tree_low_index_must_match_the_entries():
    m = Module()
    m._MustUse__silence = True              # refused before anything is added
    with pytest.raises(ValueError, match="low_index has 1 values for 2 entries"):
        min_tree(m, [(Signal(), Signal(4))] * 2, low_index=[Signal(2)], low_width=2)
    with pytest.raises(ValueError, match="low_width must be an integer from 0 with low_index, not None"):
        min_tree(m, [(Signal(), Signal(4))] * 2, low_index=[Signal(2)] * 2)
