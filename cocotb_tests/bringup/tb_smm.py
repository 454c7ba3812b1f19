"""NMI, SMM and the CPU model's waits, on the APIC fabric with the CPU models.

* NMIs: one in service, one latched, the rest collapse, released at IRET (SDM vol. 3,
  "Handling Multiple NMIs"; KVM arch/x86/kvm/x86.c ``process_nmi``).
* SMM: INIT latched until RSM, SIPIs discarded, NMI and a second SMI latched until RSM, INTR
  held (SDM vol. 3, "System Management Mode"; KVM lapic.c ``kvm_apic_accept_events``, smm.c).
* The ``init-sipi-smm`` scenario: an AP in a long SMI loses its SIPIs; a short one comes up.
* ``CpuModel.wait_until`` wakes on other CPUs' progress and on memory it is told to watch.
"""

import cocotb
from cocotb.triggers import Timer

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.sim.models.cpu.linux import BootMethod
from apwake.sim.models.cpu.model import SMM, MpState
from apwake.sim.models.cpu.smm import SmmHandler
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.boot import boot
from apwake.sim.scenarios.registry import run_scenario, start_machine

TIMEOUT = dict(timeout_time=60, timeout_unit="ms")
#: watchdog for a single expected reaction (simulated ns)
WAIT_NS = 5_000
#: how long the test's NMI hook keeps the handler running (guest us: 2 us simulated)
HANDLER_US = 2_000


async def booted(dut):
    """A machine booted by the modern Linux sequence: ``(machine, kernel)``."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    return machine, await boot(machine, options, BootMethod.MODERN)


async def send(apic, mode, dest, vector=0):
    await apic.send_ipi(make_icr(vector, mode, dest=dest))
    await apic.wait_idle()


def notes(cpu, text):
    return [note for _, _, note in cpu.history if text in note]


async def until_note(cpu, text, count, what):
    """Wait until ``cpu``'s timeline holds ``count`` notes containing ``text``."""
    await cpu.wait_until(lambda: len(notes(cpu, text)) >= count, timeout_ns=WAIT_NS, what=what)


def accepted(machine, mode, port):
    """Fabric messages of delivery mode ``mode`` the APIC at ``port`` accepted."""
    return sum(1 for c in machine.env.monitor.cycles
               if c.msg["delivery_mode"] is mode and port in c.accept)


@cocotb.test(**TIMEOUT)
async def test_nmi_collapse(dut):
    """One NMI runs the handler once; three NMIs while it runs: the first is in service, the
    second latched and run after the IRET, the third collapses; the handler runs twice."""
    machine, kernel = await booted(dut)
    bsp, ap = machine.bsp, machine.cpus[1]
    runs = []

    async def slow_hook(cpu):
        runs.append(cpu.apic_id)
        if cpu is ap:
            await cpu.udelay(HANDLER_US)

    kernel.register_nmi_handler(slow_hook)
    idle = lambda: not (ap.nmi_blocked or ap.nmi_latched)
    for burst, expected_runs, expected_collapsed in ((1, 1, 0), (3, 2, 1)):
        before_runs, before_collapsed = len(runs), ap.nmis_collapsed
        taken = len(notes(ap, "NMI: handler"))
        await send(bsp.apic, DeliveryMode.NMI, ap.apic_id)
        await until_note(ap, "NMI: handler", taken + 1, "the NMI handler started")
        if burst == 3:
            # each NMI reaches the CPU on its own (acknowledged), so the collapse is the CPU's
            await send(bsp.apic, DeliveryMode.NMI, ap.apic_id)
            await until_note(ap, "NMI latched (NMI handler running)", 1, "the second NMI latched")
            await send(bsp.apic, DeliveryMode.NMI, ap.apic_id)
            await until_note(ap, "NMI collapsed", 1, "the third NMI collapsed")
            assert ap.nmi_blocked, "the NMIs did not arrive while the handler ran"
        await ap.wait_until(idle, timeout_ns=4 * WAIT_NS, what="the NMIs handled")
        assert len(runs) - before_runs == expected_runs, runs
        assert ap.nmis_collapsed - before_collapsed == expected_collapsed
    assert runs == [ap.apic_id] * 3 and kernel.nmi_count == {ap.apic_id: 3}
    assert accepted(machine, DeliveryMode.NMI, ap.index) == 4, "an NMI was lost in the fabric"
    assert len(notes(ap, "latched NMI: handler")) == 1, "the latched NMI did not run after IRET"
    assert len(notes(ap, "IRET")) == 3 and not machine.failures, machine.failures


@cocotb.test(**TIMEOUT)
async def test_smm_holds_nmi_smi_and_interrupts(dut):
    """In SMM an NMI is latched, a second SMI latched (a third collapses) and a fixed
    interrupt waits; at RSM the latched SMI enters SMM again, then the NMI and the interrupt
    run; a halted CPU halts again (auto HALT restart)."""
    machine, kernel = await booted(dut)
    bsp, ap = machine.bsp, machine.cpus[1]
    smm = SmmHandler(machine.memory, duration_us=None)     # until released
    await ap.wait_until(lambda: ap.state is MpState.HALTED, timeout_ns=WAIT_NS, what="idle")
    await send(bsp.apic, DeliveryMode.SMI, ap.apic_id)
    await ap.wait_until(lambda: ap.in_smm, timeout_ns=WAIT_NS, what="SMM entry")
    assert ap.status == SMM and ap.where.startswith("SMM: firmware SMI handler"), ap.where
    await send(bsp.apic, DeliveryMode.NMI, ap.apic_id)
    await until_note(ap, "NMI latched (in SMM)", 1, "the NMI latched")
    for _ in range(2):
        await send(bsp.apic, DeliveryMode.SMI, ap.apic_id)
    await until_note(ap, "SMI collapsed", 1, "the third SMI collapsed")
    n = kernel.cpuid_to_apicid.index(ap.apic_id)
    interrupts = len(ap.interrupts_taken)
    await kernel.smp_call_function_single(bsp, n, ("in smm", n))
    await ap.apic.wait_intr()         # the interrupt is pending at the CPU ...
    # ... and stays untaken: an observation window for a negative check, not a synchronisation
    await Timer(100 * CLOCK_NS, "ns")
    assert ap.in_smm and ap.nmis_taken == 0 and len(ap.interrupts_taken) == interrupts
    assert ap.smi_latched and ap.smis_collapsed == 1 and ap.smm_entries == 1

    smm.release(ap)
    await ap.wait_until(lambda: ap.smm_entries == 2, timeout_ns=WAIT_NS, what="the latched SMI")
    assert ap.in_smm and ap.nmis_taken == 0, "the NMI ran between RSM and the latched SMI"
    smm.release(ap)
    await ap.wait_until(lambda: kernel.nmi_count.get(ap.apic_id) == 1 and not ap.in_smm
                        and (n, ("in smm", n)) in kernel.calls_done,
                        timeout_ns=WAIT_NS, what="the NMI and the interrupt after RSM")
    rsm = [note for _, _, note in ap.history if note.startswith("RSM")]
    assert rsm == ["RSM: auto HALT restart"] * 2, rsm
    assert [e[1] for e in ap.history if "enter SMM" in e[2]] == [SMM, SMM]
    assert not machine.failures, machine.failures


@cocotb.test(**TIMEOUT)
async def test_init_latched_in_smm_and_sipis_lost(dut):
    """INIT-SIPI-SIPI to an AP in SMM: the INIT stays pending in its APIC (not acknowledged),
    both SIPIs are discarded and counted; at RSM the INIT takes the AP to wait-for-SIPI, where a
    new SIPI starts it again."""
    machine, kernel = await booted(dut)
    bsp, ap = machine.bsp, machine.cpus[1]
    smm = SmmHandler(machine.memory, duration_us=None)
    await send(bsp.apic, DeliveryMode.SMI, ap.apic_id)
    await ap.wait_until(lambda: ap.in_smm, timeout_ns=WAIT_NS, what="SMM entry")
    ignored = ap.ignored_sipis
    assert await kernel.wakeup_secondary_cpu_via_init(bsp, ap.apic_id), kernel.boot_failures
    await ap.wait_until(lambda: ap.ignored_sipis == ignored + 2, timeout_ns=WAIT_NS,
                        what="both SIPIs discarded")
    assert ap.in_smm and ap.init_latched and ap.apic.init.value == 1, "INIT not held pending"
    assert notes(ap, "SIPI 0x9a ignored (SMM)") == ["SIPI 0x9a ignored (SMM)"] * 2

    smm.release(ap)
    await ap.wait_until(lambda: ap.state is MpState.INIT_RECEIVED, timeout_ns=WAIT_NS,
                        what="the latched INIT at RSM")
    assert ap.where == "wait-for-SIPI" and ap.apic.init.value == 0
    await send(bsp.apic, DeliveryMode.STARTUP, ap.apic_id, vector=0x9A)
    await ap.wait_until(lambda: len(notes(ap, "online")) == 2, timeout_ns=WAIT_NS,
                        what="online again after a new SIPI")
    assert not machine.failures, machine.failures


@cocotb.test(**TIMEOUT)
@cocotb.parametrize(case=["long", "ends-before-sipis"])
async def test_init_sipi_smm_scenario(dut, case):
    """The scenario: a long SMI leaves the AP in wait-for-SIPI with its SIPIs lost and the BSP's
    wait times out naming it; an SMI that ends within the legacy 10 ms INIT delay lets the AP
    take the latched INIT at RSM and come up."""
    options = (ScenarioOptions(callin_timeout_us=1000) if case == "long"
               else ScenarioOptions(method="legacy", smm_us=5_000))
    report = await run_scenario(dut, "init-sipi-smm", options)
    smm = report["smm"]
    stuck = report["timeline"][1]
    assert smm["port"] == 1 and smm["init_latched"], smm
    others = [c["cpu"] for c in report["timeline"] if c["port"] != 1]
    if case == "long":
        assert not report["passed"] and sorted(report["online"]) == sorted(others)
        assert (smm["state"], smm["where"], smm["ignored_sipis"]) == ("INIT_RECEIVED", "wait-for-SIPI", 2)
        assert smm["rsm_ns"] > smm["smi_ns"] and "were lost" in smm["outcome"], smm
        (failure,) = report["failures"]
        assert failure["port"] == 1 and "did not answer within 0.001 s" in failure["message"]
        assert failure["state"] == SMM, failure          # when the BSP gave up
        assert stuck["state"] == "INIT_RECEIVED" and stuck["entry"] is None
    else:
        assert report["passed"], report["failures"]
        assert smm["online"] and smm["state"] == "HALTED" and smm["ignored_sipis"] == 1, smm
        assert stuck["entry"] == {"cs": 0x9A00, "ip": 0}
    labels = [e[1] for e in stuck["events"]]
    assert SMM in labels, labels


@cocotb.test(**TIMEOUT)
async def test_wait_on_another_cpu_wakes(dut):
    """The BSP waits for an AP's progress: the AP's state change wakes the wait at once (the
    wait used to re-check only on the BSP's own changes and timed out)."""
    machine, kernel = await booted(dut)
    bsp, ap = machine.bsp, machine.cpus[-1]
    n = kernel.cpuid_to_apicid.index(ap.apic_id)
    taken = len(ap.interrupts_taken)
    waiter = cocotb.start_soon(bsp.wait_until(lambda: len(ap.interrupts_taken) > taken,
                                              timeout_ns=10 * WAIT_NS, what="the AP's interrupt"))
    bsp_history = len(bsp.history)
    await kernel.smp_call_function_single(bsp, n, ("wake", n))
    await waiter
    woke_ns = cocotb.utils.get_sim_time("ns")
    assert len(bsp.history) == bsp_history, "the BSP's own state changed: not a cross-CPU wait"
    assert woke_ns - ap.interrupts_taken[-1][0] < 200, "the wait did not wake on the AP's change"


@cocotb.test(**TIMEOUT)
async def test_wait_on_memory(dut):
    """A wait on a flag wakes on the write when given the flag's memory.  Without it (and no CPU
    changing state) the late truth is refused at the watchdog instead of passing silently; a
    flag never written ends with the watchdog message naming the CPU, its state, where it is
    and what the wait re-checks on; a wait without a positive timeout is refused."""
    machine, _ = await booted(dut)
    ap, flag = machine.cpus[-1], 0x0700_0000
    memory = machine.memory

    async def store(value, after_ns):
        await Timer(after_ns, "ns")
        memory.write_int(flag, value, 1, writer=None)

    is_set = lambda value: lambda: memory.read_int(flag, 1) == value
    started = cocotb.utils.get_sim_time("ns")
    cocotb.start_soon(store(1, 500))
    await ap.wait_until(is_set(1), timeout_ns=WAIT_NS, what="flag 1", memory=[(flag, 1)])
    assert cocotb.utils.get_sim_time("ns") - started == 500, "woke at the watchdog, not the write"

    async def refused(value, what):
        try:
            await ap.wait_until(is_set(value), timeout_ns=WAIT_NS, what=what)
        except AssertionError as error:
            return str(error)
        raise AssertionError(f"the wait for {what} returned")

    cocotb.start_soon(store(2, 500))
    message = await refused(2, "flag 2 without its memory")
    assert message.startswith(f"{ap.name}: flag 2 without its memory became true without waking "
                              f"the wait, seen only at its {WAIT_NS} ns watchdog"), message
    message = await refused(3, "flag 3")
    assert message == (f"{ap.name}: flag 3 not reached within {WAIT_NS} ns; it is HALTED at idle "
                       f"(hlt loop) (the wait re-checks on any CPU's state change, note or "
                       f"failure)"), message
    for bad in (None, 0):
        try:
            await ap.wait_until(is_set(2), timeout_ns=bad, what="no watchdog")
        except ValueError as error:
            assert "needs a positive timeout_ns" in str(error)
        else:
            raise AssertionError(f"timeout_ns={bad!r} was accepted")
