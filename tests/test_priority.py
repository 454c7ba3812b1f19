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
