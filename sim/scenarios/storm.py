"""``ipi-storm``: call-function IPIs between every online CPU after a parallel bring-up; each
queued call must run exactly once."""

import random

import cocotb

from apwake.sim.harness.deadline import Deadline

from apwake.sim.models.cpu.linux import CALL_FUNCTION_VECTOR, BootMethod
from .boot import FABRIC_BOOT_OPTIONS, boot, boot_detail
from .options import Option
from .registry import scenario

__all__ = []

IPIS = Option("ipis", int, 20, "call-function IPIs each online CPU sends", minimum=1)


@scenario("ipi-storm", "parallel bring-up, then every online CPU sends --ipis call-function IPIs "
                       "to random other CPUs; each queued call must run exactly once",
          options=(IPIS,) + FABRIC_BOOT_OPTIONS)
async def ipi_storm(machine, options):
    kernel = await boot(machine, options, BootMethod.PARALLEL)
    detail = boot_detail(kernel)
    online = kernel.online_cpus()
    if len(online) < 2:
        detail["storm"] = {"calls": 0, "note": "fewer than two CPUs online: no storm"}
        return detail
    rng = random.Random(options.seed)
    plan = {n: [(n, k, rng.choice([t for t in online if t != n])) for k in range(options.ipis)]
            for n in online}
    expected = sorted((target, (sender, k)) for calls in plan.values() for sender, k, target in calls)
    by_cpu = {kernel.cpuid_to_apicid.index(c.apic_id): c for c in machine.cpus
              if c.apic_id in kernel.cpuid_to_apicid}

    async def sender(n):
        cpu = by_cpu[n]
        for sender_n, k, target in plan[n]:
            await kernel.smp_call_function_single(cpu, target, (sender_n, k))

    messages_before = len(machine.env.monitor.cycles)
    for task in [cocotb.start_soon(sender(n)) for n in online]:
        await task
    deadline = Deadline(machine.scaled_ns(options.callin_timeout_us * 1000))
    while len(kernel.calls_done) < len(expected):
        kernel.call_ran.clear()
        if not await deadline.wait(kernel.call_ran.wait()):
            break
    # Every call sent one IPI.  A target can run a call an earlier IPI found queued before
    # that call's own IPI is on the bus (the pipelined fabric's stages), so the report waits for
    # each IPI to be on the bus; one that never gets there fails the fabric monitor's watchdog.
    await machine.env.monitor.wait_for(len(expected), since=messages_before, timeout_cycles=64 * len(online) + 64,
                                       where=lambda cycle: cycle.msg["vector"] == CALL_FUNCTION_VECTOR,
                                       what=f"the storm's {len(expected)} call-function IPIs")
    done = sorted(kernel.calls_done)
    lost = sorted(set(expected) - set(done))
    duplicated = len(done) - len(set(done))
    for target, entry in lost[:10]:
        machine.fail(by_cpu[target], f"call {entry} queued for CPU {target} never ran")
    if duplicated:
        machine.fail(machine.bsp, f"{duplicated} calls ran more than once")
    # the call-function interrupts only (each CPU also took its local timer tick)
    interrupts = sum(vector == CALL_FUNCTION_VECTOR for c in machine.cpus
                     for _, vector in c.interrupts_taken)
    detail["storm"] = {"calls": len(expected), "ran": len(done), "lost": len(lost),
                       "duplicated": duplicated, "interrupts": interrupts,
                       "merged_ipis": len(expected) - interrupts}
    return detail

