"""On Verilator, a design output read in a rising edge's own callback is what that edge samples:
the value the ``ReadOnly`` phase before it showed (sim/harness/handshake.py
``sample_at_edge``, which the drivers use to read ``req_ready`` and the response with one
wake-up a cycle).  tests/test_harness.py runs it on a two-CPU fabric with the simulator's
inertial writes trusted and not.

A checker reads every APIC register port's outputs in the ``ReadOnly`` phase after each
falling edge (the last time step before the rising edge: drivers write at falling edges or
right after rising edges) and again in the next rising edge's callback, while both CPUs' ports
make accesses from random phases; every pair must agree.  So that the check cannot pass on a
quiet design, it counts the response cycles it saw, which must be one per access, and the
cycles in which a port's ``req_ready`` (combinational from its request) was low under a request,
which must happen: both ports send IPIs in x2APIC mode back to back, so a transmit slot is
still full when its next ICR write comes.
"""

import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.sim.harness.signal_io import pin
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.env import FabricEnv

ACCESSES_PER_PORT = 60
OUTPUTS = ("req_ready", "resp_valid", "rdata", "gp")


@cocotb.test(timeout_time=1, timeout_unit="ms")
async def test_edge_callback_reads_what_the_edge_samples(dut):
    env = await FabricEnv.start(dut)
    outputs = lambda port: {"req_ready": port._req_ready, "resp_valid": port._resp_valid, **port._response}
    reads = [[pin(outputs(port)[name]).get for name in OUTPUTS] for port in env.ports]
    requested = [pin(port._req_valid).get for port in env.ports]
    responses, refused = [0] * len(env.ports), [0] * len(env.ports)
    mismatches = []
    done = []

    async def checker():
        while len(done) < len(env.ports):
            await FallingEdge(dut.clk)
            await ReadOnly()
            before = [[read() for read in port] for port in reads]
            waiting = [read() for read in requested]
            await RisingEdge(dut.clk)
            after = [[read() for read in port] for port in reads]
            if before != after:
                mismatches.append((cocotb.utils.get_sim_time("ns"), before, after))
            for i, values in enumerate(after):
                responses[i] += values[OUTPUTS.index("resp_valid")]
                refused[i] += waiting[i] and not values[OUTPUTS.index("req_ready")]

    async def traffic(port, other, seed):
        rng = random.Random(seed)
        for k in range(ACCESSES_PER_PORT // 3):
            if k % 4 == 0:
                await Timer(rng.randrange(1, 40), "ns")     # any phase, then a run back to back
            for _ in range(2):
                await port.send_ipi(make_icr(0x40 + k % 16, DeliveryMode.FIXED, dest=other.apic_id, x2apic=True))
            await port.read("ESR")
        done.append(port)

    for port in env.ports:
        await port.enter_x2apic()
        await port.software_enable()
    check = cocotb.start_soon(checker())
    await cocotb.triggers.Combine(cocotb.start_soon(traffic(env.ports[0], env.ports[1], 1)),
                                  cocotb.start_soon(traffic(env.ports[1], env.ports[0], 2)))
    await check
    assert mismatches == [], f"{len(mismatches)} cycles read differently, the first: {mismatches[0]}"
    assert responses == [ACCESSES_PER_PORT] * 2, (
        f"response cycles seen per port {responses}, expected {ACCESSES_PER_PORT} each (one per access)")
    assert all(refused), f"cycles with req_ready low under a request, per port: {refused} (the check needs some)"
