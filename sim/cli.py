"""The ``apwake`` command line.

``apwake list``                      the scenarios
``apwake run SCENARIO [options]``    run one: CPU models on the RTL (``soc-demo``: firmware on the soft-SoC)
``apwake bench``                     simulation speed figures (see docs/PERFORMANCE.md)
``apwake registers [--write|--check]``  the register maps (Markdown), or regenerate the files
``apwake build BOARD``               the soft-SoC bitstream for icebreaker or ulx3s
``apwake prove [BLOCK]``             the formal proofs (SymbiYosys; docs/FORMAL.md)
"""

import argparse
import json
import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

__all__ = ["main", "run_scenario_cli", "run_soc_demo"]


def _show_progress(stream):
    """Progress is for a person watching a terminal: not for pipes, files or CI (CI=true)."""
    return stream.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


class _Progress:
    """A spinner with the elapsed time on stderr for each long phase (build, simulation), or
    nothing at all; log records go through the same console so they print above it."""

    def __init__(self, enabled):
        self.console = None
        if enabled:
            from rich.console import Console
            self.console = Console(stderr=True)

    def log_handler(self):
        if self.console is None:
            return logging.StreamHandler(sys.stderr)
        from rich.logging import RichHandler
        return RichHandler(console=self.console, show_time=False, show_level=False,
                           show_path=False, markup=False)

    @contextmanager
    def phase(self, text):
        if self.console is None:
            yield
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=self.console, transient=True) as progress:
            progress.add_task(text, total=None)
            yield


_QUIET = _Progress(False)


def _simulate(design, module, *, label, request_env, waves, gate_level, threads=1, progress=_QUIET):
    """Build ``design`` (its gate-level netlist with ``gate_level``; a model with ``threads``
    threads) and run the cocotb ``module`` on it.

    The simulator gets two variables: the design's configuration (its ``EnvConfig``, as pytest
    passes it) and ``request_env(report_path)``, the scenario request.  Returns the report the
    module wrote, with the build figures; RuntimeError with the simulator log's tail when no
    report came out.
    """
    from apwake.sim.harness.build import build
    from apwake.sim.harness.run import run_cocotb, runs_dir

    env = {design.config.ENV: design.config.to_json()}
    if gate_level:
        from apwake.sim.harness.gate_level import GateLevelDesign, label_suffix
        design = GateLevelDesign(design, gate_level)
        label += label_suffix(gate_level)
    started = time.monotonic()
    with progress.phase(f"building {label} (Verilator; minutes the first time, then cached)"):
        the_build = build(design, waves=waves is not None, threads=threads)
    build_s = time.monotonic() - started
    # the simulator hands its report over in a file beside the run logs, deleted once read
    out = runs_dir() / "reports"
    out.mkdir(parents=True, exist_ok=True)
    # one file per run: runs of the same scenario in parallel (pytest-xdist) never share it
    report_file = out / f"{label}-{uuid.uuid4().hex[:12]}.json"
    env.update(request_env(report_file))
    with progress.phase(f"simulating {label}"):
        result = run_cocotb(the_build, module, label=label, waves_file=waves, extra_env=env)
    if not report_file.exists():
        raise RuntimeError(f"{label} ended without a report; simulator log "
                           f"{result.log_file}:\n{result.log_tail(60)}")
    report = json.loads(report_file.read_text())
    report_file.unlink()
    report.update(build_s=round(build_s, 2), build_reused=the_build.binary_reused,
                  gate_level=gate_level, threads=threads, waves=str(waves) if waves else None)
    from apwake.sim.harness.handshake import seeds
    if seeds():
        report["driver_seeds"] = seeds()     # {APWAKE_JITTER / APWAKE_STALL: seed}: to reproduce
    if result.gtkw:
        report["gtkw"] = str(result.gtkw)
    return report


def run_scenario_cli(name, *, cpus=8, apic_ids=None, options=None, waves=None, timeline=None,
                     timeline_axis="guest", label=None, gate_level=None, threads=1, progress=_QUIET):
    """Build (or reuse) the design scenario ``name`` runs on, for ``cpus`` CPUs, and run it.

    Parameters
    ----------
    name : str
        A CPU-model scenario (not ``soc-demo``: :func:`run_soc_demo`).
    apic_ids : sequence of int, optional
        The CPUs' APIC IDs in port order (``--topology``, ``--apic-ids``); default 0 to
        ``cpus`` - 1.
    options : ScenarioOptions, optional
        Checked already (:func:`apwake.sim.scenarios.options.parse_arguments`).
    waves, timeline : Path, optional
        Output files; ``timeline_axis`` ("guest" or "sim") is the picture's time axis.
    threads : int
        Threads of the Verilated model (:func:`apwake.sim.harness.build.build`); the report
        does not depend on it.

    Returns
    -------
    dict
        The report (:mod:`apwake.sim.scenarios.report`) with the build figures.

    Raises
    ------
    RuntimeError
        The simulator ended without a report (the log's tail is in the message).
    ValueError
        ``threads`` out of range (1 to :data:`apwake.sim.harness.build.MAX_THREADS`).
    """
    from apwake.sim.vip.ghcb_msr.design import SevSystemConfig, SevSystemDesign
    from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign
    from apwake.sim.vip.mpwk_mailbox.design import MpwkSystemConfig, MpwkSystemDesign
    from apwake.sim.vip.start_context.design import PvStartSystemConfig, PvStartSystemDesign
    from apwake.sim.scenarios.registry import SCENARIOS
    from apwake.sim.scenarios.options import ScenarioOptions, ScenarioRequest
    from apwake.sim.scenarios.report import plot_timeline

    scenario = SCENARIOS[name]
    options = options or ScenarioOptions()
    # A scenario about one version fixes it (it does not take the option); the report's options
    # then say which version ran.
    if scenario.mailbox_version is not None:
        options = replace(options, mailbox_version=scenario.mailbox_version)
    if scenario.ghcb_version is not None:
        options = replace(options, ghcb_version=scenario.ghcb_version)
    config = FabricConfig(tuple(apic_ids)) if apic_ids else FabricConfig.contiguous(cpus)
    if scenario.system == "sev":
        design = SevSystemDesign(SevSystemConfig(config, max_version=options.ghcb_version,
                                                 snp=scenario.snp))
    elif scenario.system == "pvstart":
        design = PvStartSystemDesign(PvStartSystemConfig(config))
    elif scenario.system == "mpwk":
        design = MpwkSystemDesign(MpwkSystemConfig(config, version=options.mailbox_version))
    else:
        design = FabricDesign(config)

    def request_env(report_file):
        return ScenarioRequest(name, options, report=str(report_file),
                               waves=str(waves) if waves else None).env()

    report = _simulate(design, "apwake.sim.scenarios.entry", label=label or f"{name}-{config.label}",
                       request_env=request_env, waves=waves, gate_level=gate_level, threads=threads,
                       progress=progress)
    if timeline:
        plot_timeline(report, timeline, axis=timeline_axis)
        report["timeline_picture"] = str(timeline)
    return report


def run_soc_demo(*, cpus, waves=None, gate_level=None, ap_start="sipi", core=None, apic_storage="flops",
                 x2apic=True, msr_window=True, local_interrupts=True, pipelined_fabric=False, progress=_QUIET):
    """Build the soft-SoC for ``cpus`` cores of kind ``core`` (``"picorv32"`` or ``"serv"``; None:
    the SoC's default) and run its firmware; returns the report dict.  ``apic_storage``,
    ``x2apic``, ``msr_window``, ``local_interrupts`` and ``pipelined_fabric`` are the board
    builds' options of the same names (``apwake build``): a board's configuration runs as it is
    built.

    The SoC's configuration (``SocConfig``, which holds ``ap_start`` and ``core``) is the whole request; the
    cocotb module :mod:`apwake.sim.scenarios.soc_entry` reads the report path from ``APWAKE_REPORT``.
    """
    from apwake.sim.vip.lapic.design import FabricConfig
    from apwake.sim.vip.soc.design import SocConfig, SocDesign

    # past 8 cores the stacks (256 bytes each) and the firmware need the ULX3S's 16 KiB
    fabric = FabricConfig.contiguous(cpus, n_vectors=32, storage=apic_storage, x2apic_support=x2apic,
                                     local_interrupts=local_interrupts, pipelined=pipelined_fabric)
    config = SocConfig(fabric, ap_start=ap_start, msr_window=msr_window,
                       ram_bytes=8192 if cpus <= 8 else 16384, **({} if core is None else {"core": core}))
    with progress.phase("building the SoC firmware"):
        design = SocDesign(config)
    report = _simulate(design, "apwake.sim.scenarios.soc_entry",
                       request_env=lambda report_file: {"APWAKE_REPORT": str(report_file)},
                       label=f"demo-{config.label}",
                       waves=waves, gate_level=gate_level, progress=progress)
    return {"scenario": "soc-demo", "ap_start": ap_start, "core": config.core, "apic_storage": fabric.storage,
            "x2apic": fabric.x2apic_support, "msr_window": config.msr_window,
            "local_interrupts": fabric.local_interrupts, "pipelined_fabric": fabric.pipelined, **report}


def _cores(mask):
    """``"0, 2"`` for the bits set in ``mask``."""
    return ", ".join(str(i) for i in range(mask.bit_length()) if mask >> i & 1)


def _print_soc(report):
    from apwake.sim.harness.handshake import seed_note
    print(report["transcript"], end="" if report["transcript"].endswith("\n") else "\n")
    if report["trap"]:
        print(f"trapped: core {_cores(report['trap'])}")
    if report["bus_error"]:
        print(f"an access no window answers (a runaway fetch, a store to nowhere): core {_cores(report['bus_error'])}")
    print(f"LEDs {report['leds']:#010b}, {report['cycles']} cycles; "
          + ("PASSED" if report["passed"] else "FAILED" + seed_note(report.get("driver_seeds", {}))))
    if report["waves"]:
        print(f"waveform: {report['waves']}")


def _print_model(report, axis):
    from apwake.sim.scenarios.report import format_report
    print(format_report(report, axis=axis))
    if report.get("waves"):
        print(f"waveform: {report['waves']}")
        print(f"GTKWave view (grouped per APIC): gtkwave {report.get('gtkw')}")
    if report.get("timeline_picture"):
        print(f"timeline picture: {report['timeline_picture']}")


def _scenario_lines(scenarios, indent=""):
    """One line per scenario: its name and what it shows."""
    width = max(len(n) for n in scenarios)
    return [f"{indent}{name:<{width}}  {s.description}" for name, s in scenarios.items()]


def _run_usage(scenarios):
    lines = ["usage: apwake run SCENARIO [options]   ('apwake run SCENARIO --help': its options)",
             "", "scenarios:"]
    return "\n".join(lines + _scenario_lines(scenarios, "  "))


def _takers(scenarios, flag):
    """Which scenarios take ``flag``, in words (the shorter of the list and its complement),
    for the message that refuses it elsewhere; None when none does."""
    takers = [name for name, s in scenarios.items() if any(o.flag == flag for o in s.all_options)]
    if not takers:
        return None
    others = [name for name in scenarios if name not in takers]
    if len(others) < len(takers):
        return f"every scenario takes it except {', '.join(others)}"
    return f"{', '.join(takers)} take{'s' if len(takers) == 1 else ''} it"


def _parse_run(args):
    """``apwake run``'s scenario and checked values, or an exit status: 0 after --help, 2
    after a one-line error naming the option.  Nothing is built before this returns."""
    from apwake.sim.scenarios.registry import SCENARIOS
    from apwake.sim.scenarios.options import OptionError, format_help, parse_arguments

    if args.scenario is None:
        print(_run_usage(SCENARIOS), file=sys.stdout if args.help else sys.stderr)
        return None, None, 0 if args.help else 2
    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        print(f"apwake: unknown scenario {args.scenario!r}; 'apwake list' shows them",
              file=sys.stderr)
        return None, None, 2
    prog = f"apwake run {scenario.name}"
    try:
        values = parse_arguments(prog, scenario.all_options, args.arguments,
                                 takers=lambda flag: _takers(SCENARIOS, flag))
        if values is None:
            print(format_help(prog, scenario.description, scenario.options, scenario.run_options))
            return None, None, 0
        if scenario.check:
            scenario.check(values)
    except OptionError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return None, None, 2
    return scenario, values, None


def _run(args):
    from apwake.sim.scenarios.options import ScenarioOptions

    progress = args.progress
    scenario, values, status = _parse_run(args)
    if status is not None:
        return status
    waves = Path(values["waves"]).resolve() if values["waves"] else None
    if scenario.system == "soc":
        report = run_soc_demo(cpus=values["cpus"], waves=waves, gate_level=values["gate_level"],
                              ap_start=values["ap_start"], core=values["core"],
                              apic_storage=values["apic_storage"], x2apic=not values["no_x2apic"],
                              msr_window=not values["no_msr_window"],
                              local_interrupts=not values["no_local_interrupts"],
                              pipelined_fabric=values["pipelined_fabric"], progress=progress)
    else:
        report = run_scenario_cli(
            scenario.name, cpus=values["cpus"], apic_ids=values["apic_ids"],
            options=ScenarioOptions.from_values(scenario.all_options, values), waves=waves,
            timeline=Path(values["timeline"]).resolve() if values["timeline"] else None,
            timeline_axis=values["timeline_axis"], gate_level=values["gate_level"],
            threads=values["threads"], progress=progress)
    if values["json"]:
        print(json.dumps(report))
    elif scenario.system == "soc":
        _print_soc(report)
    else:
        _print_model(report, values["timeline_axis"])
    return 0 if report["passed"] else 1


def _list(args):
    from apwake.sim.scenarios.registry import SCENARIOS
    print("\n".join(_scenario_lines(SCENARIOS)))
    return 0


def _bench(args):
    from .bench import main as bench_main
    return bench_main(args)


def _registers(args):
    from apwake.firmware.export import main as export_main
    return export_main(["--write"] if args.write else ["--check"] if args.check else [])


def _build(args):
    from apwake.synth.boards import (BoardBuildError, board_variant, build_board, check_clock, format_report,
                                     write_report)
    try:
        board = board_variant(args.board, core=args.core, n_cores=args.cores, ap_start=args.ap_start,
                              clock_mhz=args.clock_mhz, local_interrupts=args.local_interrupts,
                              msr_window=args.msr_window, apic_storage=args.apic_storage, x2apic=args.x2apic,
                              pipelined_fabric=args.pipelined_fabric, seed=args.seed)
        check_clock(board)
    except ValueError as error:
        print(f"apwake build: {error}", file=sys.stderr)
        return 2
    try:
        result = build_board(board)
    except BoardBuildError as error:
        print(f"apwake build: {error}", file=sys.stderr)
        return 1
    write_report([result])
    print(format_report(result))
    print(f"bitstream: {result['bitstream']}; report: synth/REPORT.md")
    # a large ECP5 build routes and reports even when it misses its clock (--timing-allow-fail):
    # the bitstream then runs only slower, so say so and fail
    missed = {clock: mhz for clock, mhz in result["fmax_mhz"].items() if mhz < result["clock_mhz"]}
    if missed:
        print(f"apwake build: {result['board']} missed its {result['clock_mhz']:g} MHz clock: "
              + ", ".join(f"{clock} {mhz} MHz" for clock, mhz in missed.items())
              + " (the critical path is in synth/REPORT.md; --seed N places the same netlist another way)",
              file=sys.stderr)
        return 1
    return 0


def _prove(args):
    """Run the proofs of one block (or all): one line per property, exit 1 on a failure."""
    from apwake.formal import DEFECTS_DOC, harness, proofs_of, run
    try:
        proofs = proofs_of(args.block, slow=args.slow)
    except ValueError as error:
        print(f"apwake prove: {error}", file=sys.stderr)
        return 2
    if args.defect:
        defects = set(harness(proofs[0]).DEFECTS) if proofs else set()
        if args.defect not in defects or len({p.block for p in proofs}) != 1:
            print(f"apwake prove: --defect needs one block and one of its defects "
                  f"({', '.join(sorted(defects)) or 'none'}); {DEFECTS_DOC}", file=sys.stderr)
            return 2
        proofs = [p for p in proofs if p.mode == "bmc"][:1]
    failed = 0
    print(f"{'property':<36} {'status':<9} {'mode':<6} {'depth':>5}  {'solver':<9} {'seconds':>8}  run")
    for proof in proofs:
        with args.progress.phase(f"proving {proof.name} ({proof.mode}, depth {proof.depth})"):
            result = run(proof, defect=args.defect, solver=args.solver)
        for prop in result.properties:
            depth = "-" if prop.depth is None else prop.depth
            print(f"{prop.name:<36} {prop.status:<9} {prop.mode:<6} {depth:>5}  "
                  f"{prop.solver:<9} {prop.seconds:>8.2f}  {result.name}")
        if not result.passed:
            failed += 1
            print(f"{result.name}: {result.status}; log {result.workdir / 'sby.log'}")
            for prop in result.failing():
                if prop.status == "fail":
                    print(f"  counterexample for {prop.name}: waveform {result.waves} "
                          f"(view: gtkwave {result.gtkw}); trace {result.text_trace}")
    print(f"{len(proofs) - failed} of {len(proofs)} runs passed")
    return 1 if failed else 0


def _cpus(text):
    from apwake.rtl.lapic.fabric import MAX_APICS
    return _whole_number(text, "--cpus", 1, MAX_APICS)


def _whole_number(text, flag, low, high, meaning=""):
    """``text`` as an integer from ``low`` to ``high``, for argparse; ArgumentTypeError naming
    ``flag``, the range (``meaning`` said for ``low``) and the text otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        first = f"{low} ({meaning}) or {low + 1}" if meaning else f"{low}"
        raise argparse.ArgumentTypeError(f"{flag} must be {first} to {high}, not {text}")
    return value


def _threads(text):
    from apwake.sim.harness.build import MAX_THREADS
    return _whole_number(text, "--threads", 1, MAX_THREADS)


def _runs(text):
    return _whole_number(text, "--runs", 1, 99)


def _seed(text):
    from apwake.synth.boards import MAX_SEED
    return _whole_number(text, "--seed", 0, MAX_SEED)


def _cluster_size(text):
    from apwake.rtl.lapic.cluster import MAX_CLUSTER_SIZE
    return _whole_number(text, "--cluster-size", 0, MAX_CLUSTER_SIZE, "the harness's choice")


def main(argv=None):
    """``apwake``; returns the exit status (0 passed, 1 failed, 2 a usage or tool error)."""
    parser = argparse.ArgumentParser(prog="apwake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios").set_defaults(func=_list)
    # The options of `run` belong to the scenario named first: its own parser
    # (apwake.sim.scenarios.options) reads the rest, so `apwake run NAME --help` shows only those.
    run = sub.add_parser("run", add_help=False, usage="apwake run SCENARIO [options]",
                         help="run a scenario ('apwake run SCENARIO --help': its options)")
    run.add_argument("-h", "--help", action="store_true")
    run.add_argument("scenario", nargs="?")
    run.add_argument("arguments", nargs=argparse.REMAINDER)
    run.set_defaults(func=_run)
    bench = sub.add_parser("bench", help="simulation speed figures")
    bench.add_argument("--cpus", type=_cpus, action="append", help="sizes (default 8, 64, 255; up to 4096)")
    bench.add_argument("--no-icarus", action="store_true", help="skip the Icarus comparison")
    bench.add_argument("--no-cpp", action="store_true",
                       help="skip the pure-C++ ceilings (hierarchical and flat builds)")
    bench.add_argument("--icarus-timeout", type=float, default=600,
                       help="give up on an Icarus run after this many seconds")
    bench.add_argument("--threads", type=_threads, default=1, metavar="N",
                       help="threads of the Verilated model for the scenario and idle runs (the "
                            "C++ ceilings and Icarus stay single-threaded)")
    bench.add_argument("--cluster-size", type=_cluster_size, default=0, metavar="K",
                       help="APICs per fabric cluster (default: the harness's, 32; docs/PERFORMANCE.md, "
                            "\"Clusters\"); a size with fewer CPUs than K is one cluster of them all (said "
                            "in the output)")
    bench.add_argument("--skip-public-flat-rw", action="store_true",
                       help="skip the --public-flat-rw measurement at 64 CPUs")
    bench.add_argument("--runs", type=_runs, default=3, metavar="N",
                       help="runs of the scenario, the idle clocking and each C++ ceiling per size, "
                            "one of each in turn (the machine's speed drifts); the table shows medians "
                            "and bench.json every run (default 3)")
    bench.set_defaults(func=_bench)
    registers = sub.add_parser("registers", help="print the register maps (Markdown); --write regenerates "
                               "firmware/soc_regs.h, link.ld's MEMORY, docs/REGISTERS.md and docs/registers.json")
    what = registers.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="rewrite the generated files")
    what.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    registers.set_defaults(func=_registers)
    board = sub.add_parser("build", help="build the soft-SoC bitstream for a board (YoWASP tools)")
    board.add_argument("board", choices=["icebreaker", "ulx3s"])
    from apwake.sim.scenarios.soc import AP_START, CORE    # the soc-demo's choices, the same here
    board.add_argument("--core", choices=CORE.choices, default=None,
                       help="the RISC-V core of every CPU (default: the board's, synth/REPORT.md)")
    board.add_argument("--cores", type=int, default=None, metavar="N", help="how many cores (default: the board's)")
    board.add_argument("--ap-start", choices=AP_START.choices, default=None,
                       help="how the APs start, fixed in the bitstream (default: sipi)")
    board.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                       help="the clock to run and constrain at (default: the board's)")
    board.add_argument("--local-interrupts", action=argparse.BooleanOptionalAction, default=None,
                       help="the APICs' local sources: timer, LINT0/1, error LVT, TSC MSRs "
                            "(default: the board's)")
    board.add_argument("--msr-window", action=argparse.BooleanOptionalAction, default=None,
                       help="each core's MSR window (x2APIC and GHCB MSRs; default: the board's)")
    from apwake.rtl.lapic.register_file import STORAGE_CHOICES
    board.add_argument("--apic-storage", choices=STORAGE_CHOICES, default=None,
                       help="where the APICs keep their storage-only registers: flip-flops or one "
                            "block RAM each (default: the board's; the cost of each in synth/REPORT.md)")
    board.add_argument("--x2apic", action=argparse.BooleanOptionalAction, default=None,
                       help="the APICs' x2APIC mode; --no-x2apic leaves it out (EXTD is #GP, the firmware "
                            "stays in xAPIC mode), the x2APIC logic's LUTs with it (default: the board's)")
    board.add_argument("--pipelined-fabric", action=argparse.BooleanOptionalAction, default=None,
                       help="the IPI fabric pipelined (an IPI takes five cycles from grant to "
                            "delivery), for clocks the one-cycle fabric misses at many cores "
                            "(default: the board's)")
    board.add_argument("--seed", type=_seed, default=None, metavar="N",
                       help="nextpnr's placement seed (default: none, nextpnr's own fixed start, so a build "
                            "is repeatable either way); the report's label and command carry it")
    board.set_defaults(func=_build)
    prove = sub.add_parser("prove", help="formal proofs of the blocks (SymbiYosys; docs/FORMAL.md)")
    prove.add_argument("block", nargs="?", help="lapic (fabric), mpwk_mailbox (mailbox) or ghcb_msr "
                       "(ghcb); default every block")
    prove.add_argument("--slow", action="store_true", help="also the longer runs (bigger configurations, depths)")
    prove.add_argument("--solver", choices=["yices", "z3", "boolector"], default=None,
                       help="the SMT solver (default: each run's, yices)")
    prove.add_argument("--defect", default=None, help="inject a deliberate defect of BLOCK's harness: "
                       "its BMC must fail with a counterexample (docs/FORMAL.md)")
    prove.set_defaults(func=_prove)
    args = parser.parse_args(argv)
    args.progress = _Progress(_show_progress(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s",
                        handlers=[args.progress.log_handler()], force=True)
    # the cocotb runner echoes every command line; build.log in the build folder keeps them
    logging.getLogger("apwake.verilator").setLevel(logging.WARNING)
    from apwake.sim.harness.toolchain import ToolchainError
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`apwake list | head`): stop quietly, as other tools do; stdout
        # goes to /dev/null so that the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ToolchainError as error:
        print(f"apwake: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"apwake: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
