"""Board builds of the soft-SoC (issue 6 §4): amaranth-boards platforms, YoWASP tools from PyPI.

Each board has a default build (:data:`BOARDS`: the iCEBreaker's 2 PicoRV32 cores, the ULX3S's 8)
and build-time choices (:func:`board_variant`: core, number of cores, start mode, clock, APIC
options) to fill the device: synth/REPORT.md records what each built or why it did not.  The
build writes the bitstream, per-block utilisation from a separate Yosys pass over the same
Verilog (hierarchy kept), totals and Fmax from nextpnr's JSON report.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from amaranth import Elaboratable, Module
from amaranth.back import verilog

from apwake.rtl.lapic import ApicFabric
from apwake.rtl.lapic.register_file import STORAGE_CHOICES
from apwake.rtl.soc import Soc
from apwake.rtl.soc.cores import DEFAULT_CORE, core_choice
from apwake.rtl.soc.memory_map import AP_START
from apwake.sim.scenarios.soc import SOC_MAX_CPUS
from apwake.sim.harness.paths import CHECKOUT, out_dir as output_dir
from apwake.sim.harness.toolchain import import_extra, run_yosys, yowasp_tool

from .pll import Ecp5Pll, ecp5_pll_config
from .timing import critical_path, format_critical_path

__all__ = ["Board", "BOARDS", "board_variant", "check_clock", "build_board", "BoardBuildError", "tool_failure",
           "BoardTop", "per_block_utilisation", "sim_config", "tool_env"]



@dataclass(frozen=True)
class Board:
    name: str
    platform: str               # "module:Class" in amaranth_boards
    clock_hz: float
    n_cores: int
    n_vectors: int              # implemented APIC vectors (32 to 256): the APIC size knob
    ram_bytes: int
    leds: tuple = ()
    family: str = "ice40"
    msr_window: bool = True     # the per-core MSR window (x2APIC/GHCB MSRs)
    local_interrupts: bool = True   # APIC timer, LINT0/1, error LVT (LocalApic parameter)
    notes: str = ""
    core: str = DEFAULT_CORE    # the RISC-V core (apwake.rtl.soc.cores.CORES): "picorv32" or "serv"
    ap_start: str = "sipi"      # how the APs start (rtl/soc/memory_map.py AP_START), fixed at build
    apic_storage: str = "flops"  # the APICs' storage-only registers: "flops" or "ram" (LocalApic storage)
    x2apic: bool = True         # the APICs have x2APIC mode (LocalApic x2apic_support)
    pipelined_fabric: bool = False  # the fabric pipelined (ApicFabric pipelined), for large builds
    seed: int | None = None     # nextpnr's placement seed (its --seed); None: nextpnr's own default

    def __post_init__(self):
        core_choice(self.core)
        for field in ("msr_window", "local_interrupts", "x2apic", "pipelined_fabric"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{self.name}: {field} must be a bool, not {getattr(self, field)!r}")
        if self.apic_storage not in STORAGE_CHOICES:
            raise ValueError(f"{self.name}: apic_storage must be one of {', '.join(STORAGE_CHOICES)}, "
                             f"not {self.apic_storage!r}")
        if self.ap_start not in AP_START:
            raise ValueError(f"{self.name}: ap_start must be one of {', '.join(AP_START)}, "
                             f"not {self.ap_start!r}")
        if self.ap_start == "ghcb" and not self.msr_window:
            raise ValueError(f"{self.name}: ap_start 'ghcb' needs the MSR window, which this "
                             f"build leaves out (msr_window=False)")
        if not 1 <= self.n_cores <= SOC_MAX_CPUS or (self.ap_start != "sipi" and self.n_cores < 2):
            raise ValueError(f"{self.name}: n_cores must be 1 to {SOC_MAX_CPUS} (2 or more to start an AP "
                             f"with {self.ap_start!r}), not {self.n_cores!r}")
        if not self.clock_hz > 0:
            raise ValueError(f"{self.name}: clock_hz must be positive, not {self.clock_hz!r}")
        if self.seed is not None and (type(self.seed) is not int or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"{self.name}: seed must be an integer from 0 to {MAX_SEED} or None, "
                             f"not {self.seed!r}")

    def choices(self):
        """``[(option, field value)]``: the build-time choices (:data:`_CHOICES`) where this board
        differs from its entry in :data:`BOARDS`."""
        base = BOARDS.get(self.name, self)
        return [(option, getattr(self, field)) for option, field, _, _ in _CHOICES
                if getattr(self, field) != getattr(base, field)]

    @property
    def label(self):
        """The report's section name: the board, then each choice that differs from its entry in
        :data:`BOARDS` (``ulx3s-serv-c16-mailbox-nolocal-50mhz``)."""
        forms = {option: in_label for option, _, in_label, _ in _CHOICES}
        return "-".join([self.name] + [forms[option](value) for option, value in self.choices()])

    @property
    def command(self):
        """The `apwake build` command line that builds this board (it parses back to it)."""
        forms = {option: on_command_line for option, _, _, on_command_line in _CHOICES}
        return " ".join(["apwake build", self.name] + [forms[option](value) for option, value in self.choices()])

    @property
    def isa(self):
        """What the firmware is compiled for: the core's ISA."""
        return core_choice(self.core).isa

    def apic_options(self, storage=None):
        """The APICs' parameters as the board builds them (``storage`` None: the board's), by
        the names :class:`~apwake.rtl.lapic.ApicFabric`, the simulation's ``FabricConfig`` and
        :func:`apwake.synth.apics.apic_utilisation` take."""
        return dict(n_vectors=self.n_vectors, local_interrupts=self.local_interrupts,
                    storage=self.apic_storage if storage is None else storage, x2apic_support=self.x2apic,
                    pipelined=self.pipelined_fabric)

    @property
    def apic_ids(self):
        """One APIC ID per core, shared by the fabric and the firmware's soc.h."""
        return list(range(self.n_cores))

    def make_platform(self):
        module, cls = self.platform.split(":")
        return getattr(import_extra(module, "synth", f"the {self.name} build"), cls)()


#: the build-time choices of `apwake build BOARD`: (option, Board field, its form in the report's
#: label, its form on the command line); the clock goes to the command line exactly (repr), so the
#: command a report records builds the same board
_CHOICES = (
    ("core", "core", str, lambda core: f"--core {core}"),
    ("cores", "n_cores", lambda n: f"c{n}", lambda n: f"--cores {n}"),
    ("ap-start", "ap_start", str, lambda mode: f"--ap-start {mode}"),
    ("local-interrupts", "local_interrupts", lambda on: "local" if on else "nolocal",
     lambda on: "--local-interrupts" if on else "--no-local-interrupts"),
    ("msr-window", "msr_window", lambda on: "msr" if on else "nomsr",
     lambda on: "--msr-window" if on else "--no-msr-window"),
    ("apic-storage", "apic_storage", lambda where: f"apic{where}", lambda where: f"--apic-storage {where}"),
    ("x2apic", "x2apic", lambda on: "x2apic" if on else "nox2apic", lambda on: "--x2apic" if on else "--no-x2apic"),
    ("pipelined-fabric", "pipelined_fabric", lambda on: "pipe" if on else "nopipe",
     lambda on: "--pipelined-fabric" if on else "--no-pipelined-fabric"),
    ("clock-mhz", "clock_hz", lambda hz: f"{hz / 1e6:g}mhz", lambda hz: f"--clock-mhz {hz / 1e6!r}"),
    ("seed", "seed", lambda n: f"seed{n}", lambda n: f"--seed {n}"),
)

#: the largest placement seed: nextpnr reads ``--seed`` as a ``uint64_t`` since 0.8 (commit
#: 6ca64526, common/kernel/command.cc; the YoWASP packages are 0.11) and as an ``int`` before;
#: the tools are not pinned (pyproject.toml), so a seed stays in the range both take.  Without
#: ``--seed`` nextpnr starts from a fixed state (deterministic_rng.h), and ``--seed 0`` is
#: another placement than no seed (``rngseed`` scrambles the state)
MAX_SEED = 2**31 - 1


BOARDS = {
    "icebreaker": Board(
        "icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", 12e6, n_cores=2,
        n_vectors=32, ram_bytes=8192, leds=(("led", 0), ("led", 1)), msr_window=False,
        local_interrupts=False,
        notes="iCE40UP5K: 2 PicoRV32 (RV32I, no MUL/DIV/IRQ) and 2 APICs with 32 vectors (the minimum) fit; "
              "RAM 8 KiB in block RAM; without the MSR window (x2APIC/GHCB MSRs) and the APICs' local "
              "interrupt sources (timer, LINT, error LVT), which do not fit"),
    "ulx3s": Board(
        "ulx3s", "amaranth_boards.ulx3s:ULX3S_85F_Platform", 25e6, n_cores=8, n_vectors=32,
        ram_bytes=16384, leds=tuple(("led", i) for i in range(8)), family="ecp5",
        notes="ECP5-85F: 8 PicoRV32 and 8 APICs with 32 vectors; RAM 16 KiB; with the MSR window"),
}


def board_variant(name, *, core=None, n_cores=None, ap_start=None, clock_mhz=None, local_interrupts=None,
                  msr_window=None, apic_storage=None, x2apic=None, pipelined_fabric=None, seed=None):
    """``BOARDS[name]`` with the build-time choices given (None keeps the board's): the core,
    the number of cores, how the APs start, the clock constraint in MHz, whether the APICs have
    their local sources (timer, LINT0/1, error LVT, the TSC MSRs; their share of an APIC is in
    synth/REPORT.md), whether each core has the MSR window, where the APICs keep their
    storage-only registers (``"flops"`` or ``"ram"``; the cost of each is in synth/REPORT.md),
    whether the APICs have x2APIC mode, whether the fabric is pipelined (five cycles from an
    IPI's grant to its delivery, for clocks the one-cycle fabric cannot meet at many cores),
    nextpnr's placement seed (another seed places the same netlist differently: a build that
    misses its clock by a little may meet it with another; the report's label and command carry
    it, so the build is repeatable).

    Raises
    ------
    ValueError
        An unknown board, or a choice the board refuses (the message names the field and value).
    """
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    changes = {field: value for field, value in (
        ("core", core), ("n_cores", n_cores), ("ap_start", ap_start),
        ("clock_hz", None if clock_mhz is None else clock_mhz * 1e6),
        ("local_interrupts", local_interrupts), ("msr_window", msr_window),
        ("apic_storage", apic_storage), ("x2apic", x2apic), ("pipelined_fabric", pipelined_fabric),
        ("seed", seed))
        if value is not None}
    return replace(BOARDS[name], **changes)


def check_clock(board):
    """``board``'s platform, once its clock is known to be buildable: the oscillator's, or one
    the ECP5 PLL makes exactly (:mod:`.pll`).

    Raises
    ------
    ValueError
        An iCE40 board at another clock than its oscillator (no PLL is wired there), or a clock
        the ECP5 PLL cannot make.
    """
    platform = board.make_platform()
    f_in = platform.default_clk_frequency
    if board.clock_hz != f_in:
        if board.family != "ecp5":
            raise ValueError(f"{board.name}: the clock must be the board's {f_in / 1e6:g} MHz oscillator "
                             f"(a PLL is wired for ECP5 boards only), not {board.clock_hz / 1e6:g} MHz")
        ecp5_pll_config(f_in, board.clock_hz)
    return platform


def sim_config(board):
    """The :class:`~apwake.sim.vip.soc.design.SocConfig` that simulates ``board``'s SoC: the same
    cores, APICs, RAM, MSR window and start mode, so the SoC tests run what the bitstream holds.
    Only the UART is faster (the simulation's 4 clocks a bit, not 115200 baud)."""
    from apwake.sim.vip.lapic.design import FabricConfig
    from apwake.sim.vip.soc.design import SocConfig
    return SocConfig(FabricConfig(tuple(board.apic_ids), **board.apic_options()),
                     ram_bytes=board.ram_bytes, msr_window=board.msr_window, ap_start=board.ap_start,
                     core=board.core)


def make_soc(board, firmware):
    """The SoC of ``board`` with ``firmware`` (a ``FirmwareImage`` of firmware/build.py) in RAM."""
    fabric = ApicFabric(board.apic_ids, **board.apic_options())
    return Soc(fabric, firmware=firmware.words, firmware_bytes=firmware.ram_end, ram_bytes=board.ram_bytes,
               uart_divisor=round(board.clock_hz / 115200), msr_window=board.msr_window, core=board.core,
               ap_start=board.ap_start)


class BoardTop(Elaboratable):
    """The SoC on a board: its UART TX pin, its LEDs, the board clock as ``sync``."""

    def __init__(self, board, firmware):
        self.board = board
        self.soc = make_soc(board, firmware)

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        if platform is not None and self.board.clock_hz != platform.default_clk_frequency:
            # above (or below) the oscillator: the PLL makes the sync clock (ECP5 only, checked
            # by build_board)
            m.submodules.pll = Ecp5Pll(platform.request(platform.default_clk, dir="i").i,
                                       platform.default_clk_frequency, self.board.clock_hz)
        if platform is not None:
            uart = platform.request("uart", 0)
            m.d.comb += uart.tx.o.eq(soc.uart_tx)
            for k, (name, number) in enumerate(self.board.leds):
                m.d.comb += platform.request(name, number).o.eq(soc.leds[k])
        return m


def tool_env():
    """Point Amaranth at the YoWASP tools (no system Yosys/nextpnr)."""
    env = {var: yowasp_tool(name) for var, name in (
        ("YOSYS", "yosys"), ("NEXTPNR_ICE40", "nextpnr-ice40"), ("ICEPACK", "icepack"),
        ("NEXTPNR_ECP5", "nextpnr-ecp5"), ("ECPPACK", "ecppack"))}
    # amaranth-boards' ULX3S asks for its programmer even when only building; we never program
    env.setdefault("OPENFPGALOADER", shutil.which("openFPGALoader") or shutil.which("true"))
    return env


def _tool_versions(env, family):
    versions = {}
    for var in ("YOSYS", "NEXTPNR_ICE40" if family == "ice40" else "NEXTPNR_ECP5"):
        out = subprocess.run([env[var], "--version"], capture_output=True, text=True)
        # searched in both streams: a YoWASP tool's first call prints "Preparing to run ..."
        # (while it compiles itself) before the version
        text = f"{out.stdout}\n{out.stderr}"
        found = re.search(r"(Yosys [\d.]+|nextpnr-[\d.]+)", text)
        versions[Path(env[var]).name] = (found.group(1) if found
                                         else (text.strip().splitlines() or ["version unknown"])[-1])
    return versions


def _progress(message):
    print(f"[apwake build] {message}", flush=True)


class _Heartbeat:
    """Prints the elapsed time every ``every`` seconds while a long silent step runs."""

    def __init__(self, what, every=30):
        self.what, self.every = what, every
        self._stop = threading.Event()

    def __enter__(self):
        started = time.monotonic()

        def beat():
            while not self._stop.wait(self.every):
                _progress(f"{self.what}: {time.monotonic() - started:.0f} s")

        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


#: cell-name prefixes per resource, both families (iCE40 SB_*, ECP5 TRELLIS_*/DP16KD/...); an
#: ECP5 CCU2C is two LUT4s with their carry, so it counts as LUT here
BLOCK_KINDS = {"LUT": ("SB_LUT4", "LUT4", "CCU2C"), "FF": ("SB_DFF", "TRELLIS_FF"),
               "BRAM": ("SB_RAM40_4K", "DP16KD", "PDPW16KD", "SB_SPRAM256KA"),
               "DSP": ("SB_MAC16", "MULT18X18D")}


def count_cells(cells, kinds=BLOCK_KINDS):
    """``{kind: n}``: Yosys's ``num_cells_by_type`` of one module summed per ``kinds``
    (``{kind: cell-name prefixes}``)."""
    return {kind: sum(n for cell, n in cells.items() if cell.startswith(prefixes))
            for kind, prefixes in kinds.items()}


def yosys_stat(yosys, folder, script, *, name="stat"):
    """Run Yosys ``script`` (read and synthesis commands) in ``folder`` followed by ``stat
    -json``; returns the parsed statistics (``{"modules": {...}}``).  The script and log stay in
    ``folder`` as ``NAME.ys`` and ``NAME.log``.

    Raises
    ------
    RuntimeError
        Yosys failed; the message ends with its output.
    """
    run_yosys(yosys, folder, script + f"tee -o {name}.json stat -json\n", name=name, what="yosys")
    return json.loads((folder / f"{name}.json").read_text())


#: the per-block pass synthesises the SoC with at most this many cores: every core and its APIC
#: are the same blocks whatever their number (Yosys synthesises each instance of a block again,
#: which took 13 minutes and more for 32 cores), and the totals of the board's build come from
#: nextpnr on the whole design.  The shared blocks (the interconnect, the windows' engine) grow
#: with the number of cores: their rows are those of a 2-core SoC
PER_BLOCK_CORES = 2


def per_block_utilisation(board, firmware, env, out_dir):
    """Yosys over the SoC's Verilog with the hierarchy kept: cells per module, mapped for the
    board's family, of the board's SoC with at most :data:`PER_BLOCK_CORES` cores (``firmware``:
    the board's ``FirmwareImage``, built again for fewer cores).  Returns
    ``{module: {"LUT": n, "FF": n, "BRAM": n, "DSP": n}}``."""
    if board.n_cores > PER_BLOCK_CORES:
        board = replace(board, n_cores=PER_BLOCK_CORES)
        from apwake.firmware.build import build_firmware
        firmware = build_firmware(board.apic_ids, isa=board.isa)
    top = make_soc(board, firmware)
    (out_dir / "soc.v").write_text(verilog.convert(top, name="apwake_soc", emit_src=False))
    core_files = core_choice(board.core).verilog_files()
    for name, text in core_files.items():
        (out_dir / name).write_text(text)
    synth = "synth_ice40 -noflatten" if board.family == "ice40" else "synth_ecp5 -noflatten"
    script = "".join(f"read_verilog {name}\n" for name in core_files)
    script += f"read_verilog soc.v\n{synth} -top apwake_soc\n"
    stat = yosys_stat(env["YOSYS"], out_dir, script, name="blocks")
    blocks = {}
    for module, data in stat["modules"].items():
        counts = count_cells(data.get("num_cells_by_type", {}))
        # parameterised copies of one Verilog module (each core has its reset address): one row each
        name = module.split("\\")[-1] if module.startswith("$paramod") else module.strip("\\")
        if name in blocks:
            name = f"{name} ({sum(b.startswith(name) for b in blocks) + 1})"
        blocks[name] = counts
    return blocks


#: Yosys commands for ECP5 builds of more than KEEP_HIERARCHY_ABOVE cores: each core, the windows
#: and each APIC (with its parts) stay a module of their own.  Flattened, synth_ecp5's `share`
#: pass compares candidate cells across the whole SoC with a SAT solver: with 32 cores it was
#: still in the first cluster's APICs after 21 minutes of CPU (8 cores had built in 8 minutes).
#: Per module it stays small (32 cores: 31 minutes of synthesis in all), and nextpnr places the
#: hierarchical netlist as it is; the price is logic a flattened build trims across modules.
KEEP_HIERARCHY_ABOVE = 8
ECP5_KEEP_HIERARCHY = ("setattr -mod -set keep_hierarchy 1 apwake_soc.soc.fabric.cluster*.apic* "
                       "apwake_soc.soc.core* apwake_soc.soc.windows*")
#: nextpnr's router for those builds: router2.  On the 32-core SERV build without local sources
#: (83% of the 85F's logic) the default router1 still had about 205,000 arcs to route after 1.6
#: hours; router2 on the same netlist got down to 5 overused wires in 25 minutes (it then
#: oscillated and was stopped: synth/REPORT.md "ulx3s-serv-c32-nolocal-50mhz").  A large build
#: that routes but misses its clock still writes its bitstream and report (--timing-allow-fail):
#: the report then shows the Fmax under the target and the critical path, which is what the next
#: change needs, instead of an hour and a half of build ending in an error line.
ECP5_LARGE_ROUTER = "--router router2 --timing-allow-fail"


class BoardBuildError(RuntimeError):
    """The tool flow of a board build failed; the message says where and why (:func:`tool_failure`)."""


def tool_failure(board, folder, returncode):
    """What to say when the tool flow in ``folder`` (Amaranth's build directory) exits with
    ``returncode``: the tools' ERROR lines and, when placement was reached, nextpnr's logic-cell
    count against the device's (a design that does not fit), with the logs to read."""
    errors, cells = [], []
    for log in sorted(folder.glob("*.rpt")) + sorted(folder.glob("*.tim")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("ERROR"):
                errors.append(line.strip())
            found = re.match(r"Info:\s+(ICESTORM_LC|TRELLIS_COMB|TRELLIS_FF):\s+(\d+)/\s*(\d+)\s+(\d+)%", line)
            if found and int(found.group(2)) > int(found.group(3)):
                cells.append(f"{found.group(1)} {found.group(2)} of {found.group(3)} ({found.group(4)}%)")
    what = f"; the design does not fit: {', '.join(cells)}" if cells else ""
    # nextpnr stops on a missed clock where --timing-allow-fail is not given (its timing report:
    # "Max frequency for clock ...: X MHz (FAIL at Y MHz)"); another placement may meet it
    missed = any("Max frequency" in line and "FAIL at" in line for line in errors)
    hint = "; --seed N places the same netlist another way" if missed else ""
    return (f"{board.label}: the tool flow stopped (exit {returncode}){what}: "
            f"{'; '.join(errors) or 'no ERROR line in the logs'} (logs: {folder}/*.rpt, *.tim){hint}")


def build_board(board, *, out_root=None):
    """Build the bitstream for ``board`` (a :class:`Board`, or a name in :data:`BOARDS`) in
    ``out_root/<board.label>``; returns the report dict (and writes it there as report.json).

    Raises
    ------
    BoardBuildError
        Yosys (in the per-block pass or the build) or nextpnr failed: a design that does not fit
        says so, with its cell count.
    """
    from apwake.firmware.build import build_firmware
    board = board if isinstance(board, Board) else board_variant(board)
    platform = check_clock(board)
    out_root = Path(out_root or output_dir("synth"))
    out_dir = out_root / board.label
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    env = tool_env()
    os.environ.update(env)
    started = time.monotonic()
    _progress(f"{board.name}: firmware for {board.n_cores} cores")
    firmware = build_firmware(board.apic_ids, isa=board.isa)
    _progress("tool versions (the first YoWASP call compiles the tool: about a minute)")
    versions = _tool_versions(env, board.family)
    _progress(f"per-block utilisation (Yosys, hierarchy kept, {board.family})")
    try:
        blocks = per_block_utilisation(board, firmware, env, out_dir)
    except RuntimeError as error:
        raise BoardBuildError(f"{board.label}: the per-block Yosys pass stopped: {error}") from None
    _progress("per-core utilisation of each APIC option (Yosys, one core and one APIC alone)")
    from .apics import per_core_utilisation     # here: apics -> cores -> boards at import
    try:
        per_core = per_core_utilisation(board, work_dir=out_dir)
    except RuntimeError as error:
        raise BoardBuildError(f"{board.label}: the per-core Yosys pass stopped: {error}") from None
    _progress(f"synthesis, place and route, bitstream (Amaranth {board.platform.split(':')[1]})")
    for name, text in core_choice(board.core).verilog_files().items():
        platform.add_file(name, text)
    # YoWASP tools see the file system below their working directory only: a relative path
    nextpnr_report = out_dir / "board" / "nextpnr.json"
    large = board.family == "ecp5" and board.n_cores > KEEP_HIERARCHY_ABOVE
    # beyond the report nextpnr writes: the large builds' router, the placement seed when given
    extra = " ".join(([ECP5_LARGE_ROUTER] if large else [])
                     + ([f"--seed {board.seed}"] if board.seed is not None else []))
    with _Heartbeat("synthesis, place and route still running"):
        try:
            platform.build(BoardTop(board, firmware), name="apwake_soc", build_dir=str(out_dir / "board"),
                           do_program=False, nextpnr_opts=f"--report nextpnr.json {extra}".strip(),
                           synth_opts="-abc9" if board.family == "ice40" else "",
                           **({"script_after_read": ECP5_KEEP_HIERARCHY} if large else {}))
        except subprocess.CalledProcessError as error:
            raise BoardBuildError(tool_failure(board, out_dir / "board", error.returncode)) from None
    report = json.loads(nextpnr_report.read_text())
    bitstream = next((out_dir / "board").glob("apwake_soc.bi[nt]"))
    fmax = {clock: round(v["achieved"], 2) for clock, v in report.get("fmax", {}).items()}
    totals = {cell: {"used": v["used"], "available": v["available"]}
              for cell, v in report["utilization"].items() if v["used"]}
    result = {"board": board.label, "device": platform.device, "clock_mhz": board.clock_hz / 1e6,
              "cores": board.n_cores, "core": board.core, "ap_start": board.ap_start,
              "n_vectors": board.n_vectors, "ram_bytes": board.ram_bytes,
              # the notes describe the board's entry in BOARDS, not a variant of it (another
              # placement seed builds the same design: its notes still hold)
              "notes": "" if any(option != "seed" for option, _ in board.choices()) else board.notes,
              "fmax_mhz": fmax, "totals": totals, "blocks": blocks, "per_core": per_core,
              "apic_storage": board.apic_storage,
              "bitstream": str(bitstream), "tools": versions,
              "wall_s": round(time.monotonic() - started, 1),
              "command": board.command, "nextpnr_options": extra, "critical_path": critical_path(report)}
    (out_dir / "report.json").write_text(json.dumps(result, indent=1))
    _progress(f"done in {result['wall_s']} s: {bitstream}")
    return result


def format_report(result):
    """The Markdown section for synth/REPORT.md."""
    options = result.get("nextpnr_options")
    lines = [f"## {result['board']} ({result['device']}, {result['clock_mhz']:g} MHz target)", "",
             f"Command: `{result['command']}` ({result['wall_s']} s on this machine"
             + (f"; nextpnr with `{options}`" if options else "") + "); tools: "
             + ", ".join(f"{k} {v}" for k, v in result["tools"].items()) + ".", "",
             f"{result['cores']} {result.get('core', DEFAULT_CORE)} cores started by "
             f"{result.get('ap_start', 'sipi')}, APICs with {result['n_vectors']} vectors, "
             f"{result['ram_bytes'] // 1024} KiB RAM." + (f" {result['notes']}." if result["notes"] else ""), "",
             "Fmax (nextpnr): " + ", ".join(f"{c}: {f} MHz" for c, f in result["fmax_mhz"].items())
             + f" (target {result['clock_mhz']:g} MHz"
             + ("; MISSED" if any(f < result["clock_mhz"] for f in result["fmax_mhz"].values()) else "") + ").", "",
             *([format_critical_path(result["critical_path"]), ""] if result.get("critical_path") else []),
             "| Resource (placed) | Used | Available |", "|---|---|---|"]
    for cell, v in result["totals"].items():
        lines.append(f"| {cell} | {v['used']} | {v['available']} |")
    if result.get("per_core"):
        from .apics import format_per_core
        lines += ["", *format_per_core(result["per_core"], core=result.get("core", DEFAULT_CORE),
                                       storage=result.get("apic_storage", "flops"))]
    shown = min(result["cores"], PER_BLOCK_CORES)
    same = f"; the same SoC with {shown} cores" if shown < result["cores"] else ""
    lines += ["", f"| Block (Yosys, before placement{same}) | LUT | FF | BRAM | DSP |", "|---|---|---|---|---|"]
    for module, c in sorted(result["blocks"].items()):
        if any(c.values()):
            lines.append(f"| `{module}` | {c['LUT']} | {c['FF']} | {c['BRAM']} | {c['DSP']} |")
    return "\n".join(lines) + "\n"


def write_report(results, path=None, *, sections=None):
    """Merge ``results`` (board builds) and ``sections`` (``{key: Markdown starting "## key"}``,
    such as the per-core table of :mod:`apwake.synth.cores`) into the report: the checkout's
    synth/REPORT.md, or REPORT.md in the synth output folder of an installed apwake."""
    if path is None:
        path = CHECKOUT / "synth" / "REPORT.md" if CHECKOUT is not None else output_dir("synth") / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    extra, sections = dict(sections or {}), {}
    if path.exists():
        for chunk in re.split(r"(?m)^(?=## )", path.read_text()):
            if chunk.startswith("## "):     # trailing blank lines dropped: joined with one below
                sections[chunk.split()[1]] = chunk.rstrip("\n") + "\n"
    for result in results:
        sections[result["board"]] = format_report(result)
    for key, text in extra.items():
        if text.split()[:2] != ["##", key]:
            raise ValueError(f"section {key!r} must start with '## {key}', not {text[:40]!r}")
        sections[key] = text.rstrip("\n") + "\n"
    header = ("# FPGA builds of the soft-SoC\n\nWritten by `apwake build BOARD` (synth/boards.py); "
              "per-block figures come from a separate Yosys pass with the hierarchy kept, totals and "
              "Fmax from nextpnr after placement and routing.\n\n")
    path.write_text(header + "\n".join(sections[k] for k in sorted(sections)))
