"""sim/harness/handshake.py ``Driver.bus_access`` (on Verilator its falling-edge form,
``_access_at_falling_edges``; elsewhere ``hold_until``): a request withdrawn before it is taken (its
caller cancelled, as a CPU reset cancels an access) is seen low by one clock edge before the
port's next request, which would otherwise look like the withdrawn one changing its fields
(RegisterBusSignature; a pipelined APIC decodes a request a cycle before it takes it).
tests/test_harness.py runs it on a two-CPU fabric.

CPU 0 sends an IPI in x2APIC mode and at once another, which waits while the transmit slot is
full; right after an edge that saw it waiting, its task is cancelled and, in the same phase, the
port reads TPR.  A monitor records the port's request at every edge: the edges that saw the
ICR write and the first that saw the TPR read must have one with ``req_valid`` low between them.
"""

import cocotb

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.rtl.lapic.registers import BY_NAME
from apwake.sim.harness.handshake import sample_at_edge
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.lapic.env import FabricEnv


@cocotb.test(timeout_time=100, timeout_unit="us")
async def test_a_withdrawn_request_is_seen_low_before_the_next(dut):
    env = await FabricEnv.start(dut)
    port, other = env.ports
    for p in env.ports:
        p.set_exact_timing()        # the test's point is the cycles around the withdrawal
        await p.enter_x2apic()
        await p.software_enable()
    edges = []          # (req_valid, req_ready, addr) as each edge samples them
    icr, tpr = BY_NAME["ICR"].msr, BY_NAME["TPR"].msr

    async def monitor():
        while True:
            edges.append(tuple(await sample_at_edge(dut.clk, port._req_valid.get, port._req_ready.get,
                                                    port._addr.get)))

    watch = cocotb.start_soon(monitor())
    ipi = make_icr(0x40, DeliveryMode.FIXED, dest=other.apic_id, x2apic=True)
    await port.send_ipi(ipi)
    waiting = cocotb.start_soon(port.send_ipi(ipi))     # the transmit slot is still full
    seen = await sample_at_edge(dut.clk, port._req_valid.get, port._req_ready.get, port._addr.get)
    assert seen == [1, 0, icr], f"the second ICR write should be waiting at this edge: {seen}"
    waiting.cancel()
    assert await port.read("TPR") == 0
    watch.cancel()
    last_icr = max(k for k, (valid, _, addr) in enumerate(edges) if valid and addr == icr)
    first_tpr = min(k for k, (valid, _, addr) in enumerate(edges) if valid and addr == tpr)
    assert edges[last_icr][:2] == (1, 0), f"the last edge with the ICR write did not see it waiting: {edges}"
    assert any(not valid for valid, _, _ in edges[last_icr + 1:first_tpr]), (
        f"the TPR read replaced the withdrawn ICR write with no edge between: {edges[last_icr:first_tpr + 1]}")
