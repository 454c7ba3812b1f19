"""Scenario options as data, and the one request object that carries a run to the simulator.

Each scenario names the options it takes where it is registered
(``@scenario(..., options=(...))`` in :mod:`.bringup`, :mod:`.sev` and :mod:`.soc`); an option is
an :class:`Option`: its name, type, default, allowed range or choices and help.  ``apwake run
NAME`` builds its parser from the scenario's options plus the run options every scenario of its
kind takes (:data:`MODEL_RUN_OPTIONS`), so ``--help`` shows only those, an option the scenario
does not take is refused, and every value is checked against its range before anything is
built (:func:`parse_arguments`).

The checked values become one :class:`ScenarioOptions`; that and the scenario's name, the report
path and the waveform path travel to the simulator process as one :class:`ScenarioRequest`,
JSON in the ``APWAKE_SCENARIO_REQUEST`` environment variable.
"""

import argparse
import json
import math
import re
import textwrap
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, ClassVar

from apwake.rtl.lapic.fabric import MAX_APICS

from apwake.sim.harness.build import MAX_THREADS
from apwake.sim.harness.config import EnvConfig
from apwake.sim.models.cpu.lapic_setup import TIMER_MODES, X2APIC_MODES
from apwake.sim.models.cpu.linux import X2APIC_HANDOFFS
from apwake.sim.models.cpu.machine import DEFAULT_TIME_SCALE
from apwake.sim.models.topology import TopologyError, parse_apic_ids, parse_topology

__all__ = ["Option", "OptionError", "ScenarioOptions", "ScenarioRequest", "parse_arguments",
           "format_help", "MODEL_RUN_OPTIONS", "NO_TIME_SKIP", "THREADS", "CPUS", "SEED", "TIME_SCALE", "WAVES",
           "TIMELINE", "TIMELINE_AXIS", "JSON", "GATE_LEVEL", "METHOD", "KVM", "NR_CPUS",
           "CALLIN_TIMEOUT_MS", "UNRESPONSIVE", "LAPIC_TIMER", "MAILBOX_VERSION", "GHCB_VERSION",
           "BOOT_OPTIONS", "TDX_BOOT_OPTIONS", "FIRMWARE_X2APIC", "X2APIC", "X2APIC_UNFIXED",
           "TOPOLOGY", "APIC_IDS"]


class OptionError(ValueError):
    """A command-line value outside its option's range, or an option the scenario does not
    take; the message is one line that names the option."""


@dataclass
class ScenarioOptions:
    """What a run can vary.  Times are guest time (scaled by ``time_scale`` in simulation)."""

    seed: int = 1
    method: str = "modern"                 # init-sipi: "modern" or "legacy"
    time_scale: float = DEFAULT_TIME_SCALE
    sipi_before_init: bool = True          # hardware: True; KVM: False
    nr_cpus: int | None = None
    callin_timeout_us: float = 10_000_000  # Linux waits 10 s for an AP
    ipis: int = 20                         # ipi-storm: call-function IPIs per CPU
    #: port indices of APs stuck where the OS cannot reach them: in SMM for good (fabric), or a
    #: vCPU the VMM never runs (mailbox machine)
    unresponsive: list = field(default_factory=list)
    smm_cpu: int | None = None             # init-sipi-smm: the AP in SMM (port; default 1)
    smm_us: float = 50_000                 # init-sipi-smm: guest us the SMI handler holds it
    classic_ap: int | None = None          # pv-startup-vmi-mixed: the AP started the classic way
    mailbox_version: int = 1               # mpwk scenarios: MADT mailbox version
    ghcb_version: int = 2                  # SEV-ES scenarios: the hypervisor's maximum GHCB protocol
    force_kexec: bool = False              # kexec-sev-es-v1: go past the kernel's refusal
    parking_page: str = "kernel"           # kexec-mpwk-parking-loop: "kernel" or "firmware"
    firmware_reuses_mailbox: bool = False  # firmware takes its mailbox page back after the last wakeup
    lapic_timer: str = "deadline"          # how each CPU programs its APIC timer (lapic_setup.TIMER_MODES)
    firmware_x2apic: str = "auto"          # which APICs the firmware leaves in x2APIC (linux.X2APIC_HANDOFFS)
    x2apic: str = "auto"                   # the kernel's x2APIC choice (lapic_setup.X2APIC_MODES)
    x2apic_unfixed: bool = False           # the kernel without the x2APIC hand-over fix (69a7386c)
    time_skip: bool = True                 # skip the clock of a quiescent design (harness.timeskip)
    topology: str | None = None            # --topology PxCxT as given (the APIC IDs travel apart)
    rounds: int = 2                        # tdx-host-*: IPI rounds for VMXON and LP.INIT (1 or 2)
    tdx_rule: str = "relaxed"              # tdx-host-*: the TDX module's LP.INIT rule
    smt: str = "on"                        # tdx-host-*: "off" keeps SMT siblings offline (nosmt)
    tdx_module: str = "loaded"             # tdx-host-*: "none": no module in the SEAM range
    hotplug_order: str = "tdx-first"       # tdx-host-hotplug: TDX's online callback before KVM's
    no_td: bool = False                    # tdx-host-offline-last: no TD holds a KeyID

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_values(cls, options, values):
        """The options a scenario takes (``options``, :class:`Option` s), set from the parsed
        ``values`` (name -> value); everything else keeps its default."""
        settings = {}
        for option in options:
            if option.field is not None and option.name in values:
                value = values[option.name]
                settings[option.field] = option.convert(value) if option.convert else value
        return cls(**settings)


@dataclass(frozen=True)
class ScenarioRequest(EnvConfig):
    """One run of a scenario in the simulator: what :mod:`.entry` reads.

    Parameters
    ----------
    scenario : str
        A name registered in :data:`apwake.sim.scenarios.registry.SCENARIOS`.
    options : ScenarioOptions
    report : str
        Where the simulator writes the JSON report.
    waves : str or None
        The waveform file the run records into, named in the report.
    """

    ENV: ClassVar[str] = "APWAKE_SCENARIO_REQUEST"
    scenario: str
    options: ScenarioOptions = field(default_factory=ScenarioOptions)
    report: str = ""
    waves: str | None = None

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        return cls(**{**data, "options": ScenarioOptions(**data["options"])})

    def env(self):
        """The environment variable that carries this request: ``{ENV: JSON}``."""
        return {self.ENV: self.to_json()}


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Option:
    """One command-line option of ``apwake run``.

    Parameters
    ----------
    name : str
        Python name; the flag is ``--`` + name with ``-`` for ``_`` (``nr_cpus``: ``--nr-cpus``).
    type : type
        ``int``, ``float``, ``str`` or ``bool`` (a flag that takes no value).
    default : object
        The value when the option is not given.
    help : str
        One sentence; the range and the default are appended by :func:`format_help`.
    choices : tuple, optional
        The allowed values.
    minimum, maximum : number, optional
        The allowed range (inclusive); ``above`` excludes ``minimum``.
    ap_port : bool
        The value is the port index of an AP: 1 to ``--cpus`` - 1 (port 0 is the BSP).
    repeat : bool
        The option may be given several times; the value is the list.
    suffixes : tuple of str, optional
        A file name that must end in one of these.
    metavar : str, optional
    const : object, optional
        The option's value may be left out, meaning ``const`` (``--gate-level`` alone: generic).
    field : str or None
        The :class:`ScenarioOptions` field the value sets (default: ``name``); ``None`` for the
        run settings (``--cpus``, the output files), which are no scenario option.
    convert : callable, optional
        From the command-line value to the field's (``--callin-timeout-ms`` sets microseconds).

    Raises
    ------
    TypeError
        ``type`` is not int, float, str or bool.
    ValueError
        A range on a non-numeric option, or a value constraint on a flag.
    """

    name: str
    type: type = int
    default: object = None
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    ap_port: bool = False
    repeat: bool = False
    suffixes: tuple | None = None
    metavar: str | None = None
    const: object = None
    field: str | None = ""
    convert: Callable | None = None

    def __post_init__(self):
        if self.type not in (int, float, str, bool):
            raise TypeError(f"option {self.name}: type must be int, float, str or bool, "
                            f"not {self.type!r}")
        bounded = (self.minimum, self.maximum) != (None, None)
        if bounded and self.type not in (int, float):
            raise ValueError(f"option {self.name}: a range needs an int or float type, "
                             f"not {self.type.__name__}")
        if self.type is bool and (self.choices or self.repeat or self.ap_port or self.suffixes):
            raise ValueError(f"option {self.name}: a bool option is a flag without a value")
        if self.field == "":
            object.__setattr__(self, "field", self.name)

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def allowed(self, cpus=None):
        """The allowed values in words ("an integer >= 1", "one of modern, legacy")."""
        if self.choices is not None:
            return "one of " + ", ".join(_number(c) for c in self.choices)
        if self.ap_port:
            return ("an AP port, 1 to N-1 with --cpus N" if cpus is None
                    else f"an AP port, 1 to {cpus - 1} (0 is the BSP)")
        if self.suffixes:
            return "a file name ending in " + " or ".join(self.suffixes)
        kind = {int: "an integer", float: "a number"}.get(self.type, "a string")
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not self.above:
            return f"{kind} from {_number(low)} to {_number(high)}"
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if self.above else '>='} {_number(low)}")
        if high is not None:
            bounds.append(f"<= {_number(high)}")
        return " and ".join([f"{kind} {bounds[0]}"] + bounds[1:]) if bounds else kind

    def _refuse(self, text, cpus=None):
        return OptionError(f"{self.flag} must be {self.allowed(cpus)}, not {text}")

    def parse(self, text):
        """The value of ``text`` (a string from the command line), checked against every
        bound that does not depend on another option; :class:`OptionError` otherwise."""
        try:
            value = self.type(text)
        except ValueError:
            raise self._refuse(repr(text) if self.type is str else text) from None
        if self.type is float and not math.isfinite(value):   # NaN passes every comparison
            raise self._refuse(text)
        if self.choices is not None and value not in self.choices:
            raise self._refuse(repr(text) if self.type is str else text)
        if self.suffixes and not value.endswith(self.suffixes):
            raise self._refuse(repr(text))
        low, high = self.minimum, self.maximum
        if (low is not None and (value <= low if self.above else value < low)) or (
                high is not None and value > high):
            raise self._refuse(text)
        return value

    def check_port(self, value, cpus):
        """A port value against ``--cpus`` (known only once every option is parsed)."""
        if cpus < 2:
            raise OptionError(f"{self.flag} names an AP, but --cpus {cpus} has none "
                              f"(port 0 is the BSP)")
        if not 1 <= value < cpus:
            raise self._refuse(value, cpus)


# The run settings: the design's size and what the run writes.  Each scenario kind lists the
# ones it takes (MODEL_RUN_OPTIONS; soc-demo its own).
CPUS = Option("cpus", int, 8, "CPUs on the APIC fabric", minimum=1, maximum=MAX_APICS, metavar="N",
              field=None)
TOPOLOGY = Option("topology", str, None, "CPUs as PACKAGESxCORESxTHREADS (2x4x2): APIC IDs made "
                  "of package, core and thread bit fields as CPUID reports them (sparse when a "
                  "count is not a power of two); sets --cpus", metavar="PxCxT")
APIC_IDS = Option("apic_ids", str, None, "the CPUs' APIC IDs in port order (the BSP first): a "
                  "comma-separated list (decimal or 0x hex) or a file of them; sets --cpus",
                  metavar="LIST|FILE", field=None)
WAVES = Option("waves", str, None, "write an FST waveform (and a GTKWave .gtkw view beside it)",
               suffixes=(".fst",), metavar="FILE.fst", field=None)
TIMELINE = Option("timeline", str, None, "draw each CPU's state over time", suffixes=(".png", ".svg"),
                  metavar="FILE.png|svg", field=None)
TIMELINE_AXIS = Option("timeline_axis", str, "guest",
                       "the time the timeline (text and picture) uses: guest time (simulated "
                       "time / --time-scale, as the kernel sees its delays) or simulated time",
                       choices=("guest", "sim"), metavar="AXIS", field=None)
JSON = Option("json", bool, False, "print the report as one JSON object "
                                   "(sim/scenarios/report.schema.json)", field=None)
GATE_LEVEL = Option("gate_level", str, None,
                    "simulate the Yosys gate-level netlist instead of the RTL: generic gates "
                    "or the iCE40/ECP5-mapped netlist with Yosys's cell models (slow to build)",
                    choices=("generic", "ice40", "ecp5"), metavar="FLAVOUR", const="generic",
                    field=None)

THREADS = Option("threads", int, 1, "threads of the Verilated model (a build of its own): "
                 "faster for hundreds of CPUs on otherwise idle cores, the same results; its "
                 "threads spin while they wait, so leave it at 1 beside other simulations",
                 minimum=1, maximum=MAX_THREADS, metavar="N", field=None)

NO_TIME_SKIP = Option("no_time_skip", bool, False,
                      "clock every cycle, even while the design is quiescent and every CPU waits "
                      "on a timer (the results are the same; only the wall time differs)",
                      field="time_skip", convert=lambda off: not off)

# Scenario options several scenarios take; the ones a single scenario takes are declared
# beside its registration.
SEED = Option("seed", int, 1, "seed of the scenario's random choices", metavar="N")
TIME_SCALE = Option("time_scale", float, DEFAULT_TIME_SCALE,
                    "factor on guest software delays in simulation; 1 is real time",
                    minimum=0, above=True, maximum=1, metavar="F")
METHOD = Option("method", str, "modern", "INIT-SIPI-SIPI timing: modern (no INIT delay, 10 us "
                "gaps) or legacy (10 ms after INIT, 300/200 us around the SIPIs)",
                choices=("modern", "legacy"), metavar="METHOD")
KVM = Option("kvm", bool, False, "APs start UNINITIALIZED and drop a SIPI that comes before "
                                 "any INIT, as in KVM", field="sipi_before_init",
             convert=lambda kvm: not kvm)
NR_CPUS = Option("nr_cpus", int, None, "the kernel brings up at most this many CPUs",
                 minimum=1, metavar="K")
CALLIN_TIMEOUT_MS = Option("callin_timeout_ms", float, 10_000,
                           "how long the BSP waits for an AP to call in (guest ms; Linux: 10000)",
                           minimum=0, above=True, metavar="MS", field="callin_timeout_us",
                           convert=lambda ms: ms * 1000)
UNRESPONSIVE = Option("unresponsive", int, (), "this AP is stuck in SMM (an SMI whose handler "
                      "never returns: INIT latched, SIPIs lost); on a mailbox machine a vCPU "
                      "the VMM never runs; repeatable", ap_port=True, repeat=True, metavar="PORT")
LAPIC_TIMER = Option("lapic_timer", str, "deadline", "how each CPU's kernel programs its local "
                     "APIC timer tick (TSC-deadline as Linux prefers, one-shot or periodic count)",
                     choices=TIMER_MODES, metavar="MODE")
FIRMWARE_X2APIC = Option("firmware_x2apic", str, "auto", "which APICs the firmware hands over in "
                         "x2APIC mode: auto (every CPU's when an APIC ID is above 0xFE, as "
                         "firmware must, else none), none, only the BSP's (the inconsistent "
                         "firmware Linux commit 69a7386c met), or every CPU's",
                         choices=X2APIC_HANDOFFS, metavar="WHICH")
#: TDX guests: the TDX module runs every vCPU's APIC in x2APIC mode from the start
TDX_FIRMWARE_X2APIC = replace(FIRMWARE_X2APIC, default="all")
X2APIC = Option("x2apic", str, "auto", "the kernel's APIC mode: auto (x2APIC, physical, when the "
                "firmware hands the BSP over in it), off (nox2apic), or x2APIC enabled by the "
                "kernel in physical or cluster mode", choices=X2APIC_MODES, metavar="MODE")
X2APIC_UNFIXED = Option("x2apic_unfixed", bool, False, "Linux 6.5 parallel bring-up without commit "
                        "69a7386c: an xAPIC AP under an x2APIC kernel reads its APIC ID from the "
                        "unmapped xAPIC page and dies (matters after --firmware-x2apic bsp)")
MAILBOX_VERSION = Option("mailbox_version", int, 1, "the MADT MP wakeup mailbox version",
                         choices=(0, 1), metavar="V")
GHCB_VERSION = Option("ghcb_version", int, 2, "the hypervisor's maximum GHCB protocol version",
                      choices=(1, 2), metavar="V")

#: what every scenario on the CPU models takes
MODEL_RUN_OPTIONS = (CPUS, TOPOLOGY, APIC_IDS, SEED, TIME_SCALE, WAVES, TIMELINE, TIMELINE_AXIS, JSON,
                     GATE_LEVEL, NO_TIME_SKIP, THREADS)
#: what a Linux boot by the CPU models takes (:func:`apwake.sim.scenarios.boot.boot`)
BOOT_OPTIONS = (NR_CPUS, CALLIN_TIMEOUT_MS, LAPIC_TIMER, FIRMWARE_X2APIC, X2APIC, X2APIC_UNFIXED)
#: the same for a TDX-style boot, whose firmware hands every CPU over in x2APIC mode
TDX_BOOT_OPTIONS = (NR_CPUS, CALLIN_TIMEOUT_MS, LAPIC_TIMER, TDX_FIRMWARE_X2APIC, X2APIC, X2APIC_UNFIXED)


class _Parser(argparse.ArgumentParser):
    """argparse for the syntax only (which flags, how many values); its errors become one-line
    :class:`OptionError` s instead of a usage block."""

    def error(self, message):
        missing = re.fullmatch(r"argument (\S+): expected (one|at most one) argument", message)
        raise OptionError(f"{missing[1]} needs a value" if missing else message)


def _parser(prog, options):
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true")
    for option in options:
        if option.type is bool:
            parser.add_argument(option.flag, dest=option.name, action="store_true")
        else:
            parser.add_argument(option.flag, dest=option.name, metavar=option.metavar,
                                action="append" if option.repeat else "store",
                                **({} if option.const is None else {"nargs": "?", "const": option.const}))
    return parser


def format_help(prog, description, options, run_options):
    """``apwake run NAME --help``: the scenario's description, its own options, then the run
    settings it takes, each with its range and default."""
    lines = [f"usage: {prog} [options]", ""]
    lines += textwrap.wrap(description, width=100)
    for title, group in (("scenario options", options), ("run options", run_options)):
        if not group:
            continue
        lines += ["", f"{title}:"]
        for option in group:
            flag = option.flag
            if option.type is not bool:
                metavar = option.metavar or option.name.upper()
                flag += f" [{metavar}]" if option.const is not None else f" {metavar}"
            detail = ""
            if option.type is not bool:
                shown = option.default is not None and not option.repeat
                detail = (f" ({option.allowed()}"
                          + (f"; default {_number(option.default)})" if shown else ")"))
            lines.append(f"  {flag}")
            lines += textwrap.wrap(f"{option.help}{detail}", width=100, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6, break_on_hyphens=False)
    return "\n".join(lines)


def parse_arguments(prog, options, arguments, *, takers=None):
    """Parse and check ``arguments`` (after ``apwake run NAME``) against ``options``.

    Parameters
    ----------
    prog : str
        ``apwake run NAME``, for messages.
    options : sequence of Option
        What the scenario takes (its run options and its own).
    arguments : list of str
    takers : callable, optional
        flag -> which scenarios take it, in words (None: none does), for the message that
        refuses it here.

    Returns
    -------
    dict or None
        Option name -> checked value (the default where not given); None when ``--help`` was
        asked for.

    Raises
    ------
    OptionError
        One line naming the option, the value and what is allowed.
    """
    parser = _parser(prog, options)
    parsed, extra = parser.parse_known_args(arguments)
    for word in extra:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            where = takers(flag) if takers else None
            if where:
                raise OptionError(f"{flag} does not apply to {prog.split()[-1]}; {where}")
            raise OptionError(f"unknown option {flag}; '{prog} --help' lists the options")
        raise OptionError(f"unexpected argument {word!r}; '{prog} --help' lists the options")
    if parsed.help:
        return None
    values = {}
    for option in options:
        given = getattr(parsed, option.name)
        if option.type is bool:
            values[option.name] = given
        elif given is None:
            values[option.name] = list(option.default) if option.repeat else option.default
        elif option.repeat:
            values[option.name] = [option.parse(text) for text in given]
        else:
            values[option.name] = option.parse(given)
    _apply_topology(values, given_cpus="cpus" in {o.name for o in options} and parsed.cpus is not None)
    cpus = values.get("cpus", CPUS.default)
    for option in options:
        if option.ap_port:
            ports = values[option.name] if option.repeat else [values[option.name]]
            for port in ports:
                if port is not None:
                    option.check_port(port, cpus)
    return values



def _apply_topology(values, *, given_cpus):
    """``--topology`` or ``--apic-ids`` become ``values["apic_ids"]`` (a list) and set
    ``values["cpus"]``; without them ``apic_ids`` is None (contiguous IDs from 0)."""
    topology, ids = values.get("topology"), values.get("apic_ids")
    if topology is not None and ids is not None:
        raise OptionError("--topology and --apic-ids both give the APIC IDs: use one")
    try:
        if topology is not None:
            ids, flag, text = parse_topology(topology).apic_ids(), TOPOLOGY.flag, topology
        elif ids is not None:
            ids, flag, text = parse_apic_ids(ids), APIC_IDS.flag, ids
        else:
            return
    except TopologyError as error:
        raise OptionError(f"{APIC_IDS.flag if topology is None else TOPOLOGY.flag}: {error}") from None
    if given_cpus and values["cpus"] != len(ids):
        raise OptionError(f"--cpus {values['cpus']} disagrees with {flag} {text} ({len(ids)} CPUs)")
    if not CPUS.minimum <= len(ids) <= CPUS.maximum:
        raise OptionError(f"{flag} {text} gives {len(ids)} CPUs; the fabric takes "
                          f"{CPUS.minimum} to {CPUS.maximum}")
    values["apic_ids"], values["cpus"] = ids, len(ids)
