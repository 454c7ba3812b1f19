"""The scenario registry and the run that sets a machine up for a scenario.

A scenario is an ``async def body(machine, options) -> dict`` registered under a name with
:func:`scenario`; the dict is scenario-specific detail for the report.  :func:`run_scenario`
sets up the machine, runs the body under a watchdog and returns the report
(:mod:`.report`).  One module per family registers its scenarios (:mod:`.bringup`,
:mod:`.mailbox`, :mod:`.storm`, :mod:`.sev`, :mod:`.pvstart`, :mod:`.soc`).
"""

import gc
import time
from dataclasses import dataclass

from cocotb.triggers import SimTimeoutError, with_timeout

from apwake.sim.models.cpu.machine import Machine
from apwake.sim.models.cpu.smm import setup_smm
from apwake.sim.vip.ghcb_msr.design import SevSystemConfig
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.vip.mpwk_mailbox.bfm import MailboxPorts
from apwake.sim.vip.mpwk_mailbox.design import MpwkSystemConfig
from apwake.sim.vip.start_context.design import PvStartSystemConfig
from .options import MODEL_RUN_OPTIONS
from .report import make_report

__all__ = ["Scenario", "SCENARIOS", "scenario", "run_scenario", "start_machine", "watchdog_ns"]


@dataclass
class Scenario:
    """A registered scenario.

    Attributes
    ----------
    name, description : str
    body : coroutine function or None
        ``async def body(machine, options) -> dict``; None for a scenario with a cocotb module
        of its own (``soc-demo``).
    system : str
        The RTL it runs on: "fabric" (APIC fabric only), "mpwk" (:class:`apwake.rtl.system.mpwk.MpwkSystem`,
        APs parked on the MP wakeup mailbox), "sev" (:class:`apwake.rtl.system.sev.SevSystem`, an
        SEV-ES guest), "pvstart" (:class:`apwake.rtl.system.pvstart.PvStartSystem`, a
        paravirtualised guest whose hypervisor carries start state) or "soc" (the soft-SoC).
    mailbox_version, ghcb_version : int or None
        The version the scenario is about, fixed; None when the scenario takes the option.
    snp : bool
        System "sev" only: the VM is SEV-SNP (the GHCB unit with ``snp=True``: AP Creation).
    options : tuple of Option
        The scenario options it takes besides ``run_options``.
    run_options : tuple of Option
        The run settings it takes (:data:`.options.MODEL_RUN_OPTIONS` for the CPU models).
    check : callable or None
        ``check(values)``: constraints between options (values: name -> value), raising
        :class:`.options.OptionError`.
    """

    name: str
    description: str
    body: object
    system: str = "fabric"
    mailbox_version: int | None = None
    ghcb_version: int | None = None
    options: tuple = ()
    run_options: tuple = MODEL_RUN_OPTIONS
    check: object = None
    snp: bool = False

    @property
    def all_options(self):
        """The run settings, then the scenario's own options."""
        return self.run_options + self.options


SCENARIOS = {}


def scenario(name, description, *, system="fabric", mailbox_version=None, ghcb_version=None,
             options=(), run_options=MODEL_RUN_OPTIONS, check=None, snp=False):
    """Register the decorated ``async def body(machine, options)`` as scenario ``name``, taking
    ``options`` (:class:`.options.Option` s) besides ``run_options``."""
    def register(body):
        SCENARIOS[name] = Scenario(name, description, body, system, mailbox_version,
                                   ghcb_version, tuple(options), tuple(run_options), check, snp)
        return body
    return register


def watchdog_ns(machine, options):
    """Longer than every timeout the guest software has of its own: a wait that exceeds it is
    a model bug, reported with every CPU's state."""
    return machine.scaled_ns(options.callin_timeout_us * 1000) * (machine.env.n + 3) + 1_000_000


async def start_machine(dut, options):
    """Clock, reset and CPU models for ``dut`` (not started yet)."""
    mailbox_system = MpwkSystemConfig.from_env(required=False)
    sev_system = SevSystemConfig.from_env(required=False)
    pv_system = PvStartSystemConfig.from_env(required=False)
    system = mailbox_system or sev_system or pv_system
    fabric = system.fabric if system else None
    env = await FabricEnv.start(dut, config=fabric)
    machine = Machine(env, time_scale=options.time_scale,
                        sipi_before_init=options.sipi_before_init)
    if options.time_skip:
        machine.time_skipper = env.time_skipper()
        machine.time_skipper.start()
    if sev_system is not None:
        machine.attach_sev(dut, sev_system)
    if pv_system is not None:
        machine.attach_start_unit(dut)
    if mailbox_system is not None:
        ap_ids = [c.apic_id for c in machine.cpus if not c.is_bsp]
        machine.park_aps(MailboxPorts(dut, ap_ids, mailbox_system.base, watched=env.watched))
        machine.madt += mailbox_system.madt_entry()
    if options.unresponsive and sev_system is not None:
        # KVM offers no SMM to SEV-ES guests (arch/x86/kvm/svm/svm.c svm_has_emulated_msr)
        raise ValueError("--unresponsive is not modelled for SEV-ES guests, which have no SMM")
    if options.unresponsive and mailbox_system is None:
        # an AP stuck in SMM: parked by the firmware, its SMI handler never returns
        setup_smm(machine, options.unresponsive, None)
    for index in options.unresponsive if mailbox_system is not None else ():
        if not 0 <= index < env.n or machine.cpus[index].is_bsp:
            raise ValueError(f"unresponsive CPU port {index} is not an AP (ports 0 to {env.n - 1})")
        cpu = machine.cpus[index]
        # parked on the mailbox: the VMM never runs the vCPU, its loop answers nothing
        cpu.mailbox.deschedule()
        cpu.where = "firmware: mailbox poll loop, vCPU descheduled by the VMM"
    return machine


async def run_scenario(dut, name, options, *, waves=None):
    """Run scenario ``name`` on ``dut``; returns the report dict."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    machine = await start_machine(dut, options)
    # the machine's objects (models, ports, handles) live as long as the run: out of the cyclic
    # collector's full passes, which at 255 CPUs took about 5% of the Python time; unfrozen
    # after it, so that a testbench running several scenarios collects each one's cycles
    gc.freeze()
    # Everything the kernel waits for is bounded by its own timeouts; the watchdog catches a
    # model that would hang anyway, and says where each CPU is.
    limit = watchdog_ns(machine, options)
    detail = {}
    try:
        detail = await with_timeout(SCENARIOS[name].body(machine, options), limit, "ns")
    except SimTimeoutError:
        for cpu in machine.cpus:
            machine.fail(cpu, f"scenario watchdog ({limit / 1e6:g} ms simulated): "
                               f"{cpu.name} is {cpu.position}")
    finally:
        gc.unfreeze()
    if machine.time_skipper is not None:
        machine.time_skipper.stop()
    # wall time from the clock's start, as docs/PERFORMANCE.md defines it; the ports' set-up
    # before it (the simulator's handle lookups, a few ms per 100 CPUs) is reported apart
    clock_started = machine.env.clock_started
    return make_report(name, machine, options, detail, wall_s=time.monotonic() - clock_started,
                       setup_s=clock_started - started, waves=waves)
