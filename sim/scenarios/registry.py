"""The scenario registry and the run that sets a platform up for a scenario.

A scenario is an ``async def body(platform, options) -> dict`` registered under a name with
:func:`scenario`; the dict is scenario-specific detail for the report.  :func:`run_scenario`
sets up the platform, runs the body under a watchdog and returns the report
(:mod:`.report`).  One module per family registers its scenarios (:mod:`.bringup`,
:mod:`.mailbox`, :mod:`.storm`, :mod:`.sev`, :mod:`.soc`).
"""

import time
from dataclasses import dataclass

from cocotb.triggers import SimTimeoutError, with_timeout

from apwake.sim.models.cpu.platform import Platform
from apwake.sim.models.cpu.smm import setup_smm
from apwake.sim.vip.ghcb_msr.design import SevPlatformConfig
from apwake.sim.vip.lapic.env import FabricEnv
from apwake.sim.vip.mpwk_mailbox.bfm import MailboxPorts
from apwake.sim.vip.mpwk_mailbox.design import PlatformConfig
from .options import MODEL_RUN_OPTIONS
from .report import make_report

__all__ = ["Scenario", "SCENARIOS", "scenario", "run_scenario", "start_platform", "watchdog_ns"]


@dataclass
class Scenario:
    """A registered scenario.

    Attributes
    ----------
    name, description : str
    body : coroutine function or None
        ``async def body(platform, options) -> dict``; None for a scenario with a cocotb module
        of its own (``soc-demo``).
    platform : str
        "fabric" (APIC fabric only), "mpwk" (fabric + MP wakeup mailbox, APs parked on it),
        "sev" (fabric + GHCB MSR unit, an SEV-ES guest) or "soc" (the soft-SoC).
    mailbox_version, ghcb_version : int or None
        The version the scenario is about, fixed; None when the scenario takes the option.
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
    platform: str = "fabric"
    mailbox_version: int | None = None
    ghcb_version: int | None = None
    options: tuple = ()
    run_options: tuple = MODEL_RUN_OPTIONS
    check: object = None

    @property
    def all_options(self):
        """The run settings, then the scenario's own options."""
        return self.run_options + self.options


SCENARIOS = {}


def scenario(name, description, *, platform="fabric", mailbox_version=None, ghcb_version=None,
             options=(), run_options=MODEL_RUN_OPTIONS, check=None):
    """Register the decorated ``async def body(platform, options)`` as scenario ``name``, taking
    ``options`` (:class:`.options.Option` s) besides ``run_options``."""
    def register(body):
        SCENARIOS[name] = Scenario(name, description, body, platform, mailbox_version,
                                   ghcb_version, tuple(options), tuple(run_options), check)
        return body
    return register


def watchdog_ns(platform, options):
    """Longer than every timeout the guest software has of its own: a wait that exceeds it is
    a model bug, reported with every CPU's state."""
    return platform.scaled_ns(options.callin_timeout_us * 1000) * (platform.env.n + 3) + 1_000_000


async def start_platform(dut, options):
    """Clock, reset and CPU models for ``dut`` (not started yet)."""
    mailbox_platform = PlatformConfig.from_env(required=False)
    sev_platform = SevPlatformConfig.from_env(required=False)
    fabric = (mailbox_platform or sev_platform).fabric if (mailbox_platform or sev_platform) else None
    env = await FabricEnv.start(dut, config=fabric)
    platform = Platform(env, time_scale=options.time_scale,
                        sipi_before_init=options.sipi_before_init)
    if sev_platform is not None:
        platform.attach_sev(dut)
    if mailbox_platform is not None:
        ap_ids = [c.apic_id for c in platform.cpus if not c.is_bsp]
        platform.park_aps(MailboxPorts(dut, ap_ids, mailbox_platform.base))
        platform.madt += mailbox_platform.madt_entry()
    if options.unresponsive and sev_platform is not None:
        # KVM offers no SMM to SEV-ES guests (arch/x86/kvm/svm/svm.c svm_has_emulated_msr)
        raise ValueError("--unresponsive is not modelled for SEV-ES guests, which have no SMM")
    if options.unresponsive and mailbox_platform is None:
        # an AP stuck in SMM: parked by the firmware, its SMI handler never returns
        setup_smm(platform, options.unresponsive, None)
    for index in options.unresponsive if mailbox_platform is not None else ():
        if not 0 <= index < env.n or platform.cpus[index].is_bsp:
            raise ValueError(f"unresponsive CPU port {index} is not an AP (ports 0 to {env.n - 1})")
        cpu = platform.cpus[index]
        # parked on the mailbox: the VMM never runs the vCPU, its loop answers nothing
        cpu.mailbox.deschedule()
        cpu.where = "firmware: mailbox poll loop, vCPU descheduled by the VMM"
    return platform


async def run_scenario(dut, name, options, *, waves=None):
    """Run scenario ``name`` on ``dut``; returns the report dict."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    platform = await start_platform(dut, options)
    # Everything the kernel waits for is bounded by its own timeouts; the watchdog catches a
    # model that would hang anyway, and says where each CPU is.
    limit = watchdog_ns(platform, options)
    detail = {}
    try:
        detail = await with_timeout(SCENARIOS[name].body(platform, options), limit, "ns")
    except SimTimeoutError:
        for cpu in platform.cpus:
            platform.fail(cpu, f"scenario watchdog ({limit / 1e6:g} ms simulated): "
                               f"{cpu.name} is {cpu.position}")
    return make_report(name, platform, options, detail, wall_s=time.monotonic() - started,
                       waves=waves)
