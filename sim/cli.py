"""The ``apwake`` command line.

``apwake list``                      the scenarios
``apwake run SCENARIO [options]``    run one: CPU models on the RTL (``soc-demo``: firmware on the soft-SoC)
``apwake bench``                     simulation speed figures (see docs/PERFORMANCE.md)
``apwake registers``                 the local APIC register map (Markdown)
``apwake build BOARD``               the soft-SoC bitstream for icebreaker or ulx3s
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["main", "run_scenario_cli"]


def _simulate(design, module, *, label, env, waves, gate_level):
    """Build ``design`` (its gate-level netlist with ``gate_level``), run the cocotb ``module``
    that writes the JSON report to ``APWAKE_REPORT``, and return the report with the build
    figures; RuntimeError with the simulator log's tail when no report came out."""
    from .build import REPO_ROOT, build
    from .run import run_cocotb

    if gate_level:
        from .gate_level import GateLevelDesign, label_suffix
        design = GateLevelDesign(design, gate_level)
        label += label_suffix(gate_level)
    started = time.monotonic()
    the_build = build(design, waves=waves is not None)
    build_s = time.monotonic() - started
    out = REPO_ROOT / "build" / "scenarios"
    out.mkdir(parents=True, exist_ok=True)
    report_file = out / f"{label}.json"
    report_file.unlink(missing_ok=True)
    result = run_cocotb(the_build, module, label=label, waves_file=waves,
                        extra_env={**env, "APWAKE_REPORT": str(report_file)})
    if not report_file.exists():
        raise RuntimeError(f"{label} ended without a report; simulator log "
                           f"{result.log_file}:\n{result.log_tail(60)}")
    report = json.loads(report_file.read_text())
    report.update(build_s=round(build_s, 2), build_reused=the_build.binary_reused,
                  gate_level=gate_level, waves=str(waves) if waves else None)
    from .handshake import seeds
    if seeds():
        report["driver_seeds"] = seeds()     # APWAKE_JITTER / APWAKE_STALL: how to reproduce
    if result.gtkw:
        report["gtkw"] = str(result.gtkw)
    return report


def run_scenario_cli(name, *, cpus=8, options=None, waves=None, timeline=None, label=None,
                     gate_level=None):
    """Build (or reuse) the fabric for ``cpus`` and run scenario ``name``; returns the report
    dict (with ``build_s``) or raises RuntimeError with the simulator log's tail."""
    from .lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
    from .scenarios.bringup import ScenarioOptions
    from .scenarios.report import plot_timeline

    from .ghcb.design import SevPlatformConfig, SevPlatformDesign
    from .mpwk.design import PlatformConfig, PlatformDesign
    from .scenarios.bringup import SCENARIOS

    options = options or ScenarioOptions()
    config = FabricConfig.contiguous(cpus)
    scenario = SCENARIOS[name]
    pick = lambda fixed, option: option if fixed is None else fixed    # the scenario's, or --...
    if scenario.platform == "sev":
        design = SevPlatformDesign(SevPlatformConfig(
            config, max_version=pick(scenario.ghcb_version, options.ghcb_version)))
    elif scenario.platform == "mpwk":
        design = PlatformDesign(PlatformConfig(
            config, version=pick(scenario.mailbox_version, options.mailbox_version)))
    else:
        design = FabricDesign(config)
    env = {CONFIG_ENV: config.to_json(), design.config.ENV: design.config.to_json(),
           "APWAKE_SCENARIO": name, "APWAKE_SCENARIO_OPTIONS": json.dumps(options.to_dict()),
           "APWAKE_WAVES_FILE": str(waves) if waves else ""}
    report = _simulate(design, "sim.scenarios.entry", label=label or f"{name}-n{cpus}", env=env,
                       waves=waves, gate_level=gate_level)
    if timeline:
        plot_timeline(report, timeline)
        report["timeline_picture"] = str(timeline)
    return report


def run_soc_demo(*, cpus, waves=None, gate_level=None, ap_start="sipi"):
    """Build the soft-SoC for ``cpus`` cores and run its firmware; returns the report dict."""
    from .lapic.design import FabricConfig
    from .soc.design import SocConfig, SocDesign

    config = SocConfig(FabricConfig.contiguous(cpus, n_vectors=32), ap_start=ap_start)
    return _simulate(SocDesign(config), "sim.soc.entry", env={SocConfig.ENV: config.to_json()},
                     label=f"soc-demo-n{cpus}" + ("" if ap_start == "sipi" else f"-{ap_start}"),
                     waves=waves, gate_level=gate_level)


def _seed_note():
    """The APWAKE_JITTER/APWAKE_STALL seeds a failed run used, to reproduce it."""
    from .handshake import seed_note
    return seed_note()


def _run_soc(args):
    if not 1 <= args.cpus <= 8 or (args.ap_start != "sipi" and args.cpus < 2):
        print(f"apwake: soc-demo --cpus must be 1 to 8 (2 to 8 with --ap-start mailbox or ghcb), "
              f"not {args.cpus}", file=sys.stderr)
        return 2
    report = run_soc_demo(cpus=args.cpus, waves=Path(args.waves).resolve() if args.waves else None,
                          gate_level=args.gate_level, ap_start=args.ap_start)
    if args.json:
        print(json.dumps(report))
    else:
        print(report["transcript"], end="" if report["transcript"].endswith("\n") else "\n")
        print(f"LEDs {report['leds']:#010b}, {report['cycles']} cycles; "
              + ("PASSED" if report["passed"] else "FAILED" + _seed_note()))
        if report["waves"]:
            print(f"waveform: {report['waves']}")
    return 0 if report["passed"] else 1


def _run(args):
    from .scenarios.bringup import SCENARIOS, ScenarioOptions
    from .scenarios.report import format_report

    if args.scenario == "soc-demo":
        return _run_soc(args)
    if args.scenario not in SCENARIOS:
        print(f"apwake: unknown scenario {args.scenario!r}; 'apwake list' shows them", file=sys.stderr)
        return 2
    if args.timeline and Path(args.timeline).suffix not in (".png", ".svg"):
        print(f"apwake: --timeline must end in .png or .svg, not {args.timeline!r}", file=sys.stderr)
        return 2
    for flag, ports in (("--unresponsive", args.unresponsive),
                        ("--smm-cpu", [] if args.smm_cpu is None else [args.smm_cpu])):
        for port in ports:
            if not 1 <= port < args.cpus:     # port 0 is the BSP of the --cpus fabric
                print(f"apwake: {flag} must name an AP port (1 to {args.cpus - 1}), not {port}",
                      file=sys.stderr)
                return 2
    options = ScenarioOptions(seed=args.seed, method=args.method, time_scale=args.time_scale,
                              sipi_before_init=not args.kvm, nr_cpus=args.nr_cpus,
                              callin_timeout_us=args.callin_timeout_ms * 1000, ipis=args.ipis,
                              unresponsive=args.unresponsive, mailbox_version=args.mailbox_version,
                              parking_page=args.parking_page,
                              firmware_reuses_mailbox=args.firmware_reuses_mailbox,
                              ghcb_version=args.ghcb_version, force_kexec=args.force_kexec,
                              smm_cpu=args.smm_cpu, smm_us=args.smm_us,
                              lapic_timer=args.lapic_timer)
    report = run_scenario_cli(args.scenario, cpus=args.cpus, options=options,
                              waves=Path(args.waves).resolve() if args.waves else None,
                              timeline=Path(args.timeline).resolve() if args.timeline else None,
                              gate_level=args.gate_level)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
        if report.get("waves"):
            print(f"waveform: {report['waves']}")
            print(f"GTKWave view (grouped per APIC): gtkwave {report.get('gtkw')}")
        if report.get("timeline_picture"):
            print(f"timeline picture: {report['timeline_picture']}")
        if not report["passed"] and _seed_note():
            print(f"FAILED{_seed_note()}")
    return 0 if report["passed"] else 1


def _list(args):
    from .scenarios.bringup import SCENARIOS
    width = max(len(n) for n in SCENARIOS)
    for name, scenario in SCENARIOS.items():
        print(f"{name:<{width}}  {scenario.description}")
    print(f"{'soc-demo':<{width}}  the soft-SoC (PicoRV32 cores + APIC fabric) runs its firmware: "
          f"the BSP wakes each AP with INIT-SIPI-SIPI; prints the UART transcript")
    return 0


def _bench(args):
    from .bench import main as bench_main
    return bench_main(args)


def _registers(args):
    from rtl.lapic.registers import markdown
    print(markdown(), end="")
    return 0


def _build(args):
    from synth.boards import build_board, format_report, write_report
    result = build_board(args.board)
    write_report([result])
    print(format_report(result))
    print(f"bitstream: {result['bitstream']}; report: synth/REPORT.md")
    return 0


def _cpus(text):
    value = int(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"--cpus must be 1 to 255, not {value}")
    return value


def _smm_us(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--smm-us must be >= 0, not {text}")
    return value


def main(argv=None):
    from .cpu.platform import DEFAULT_TIME_SCALE
    from .cpu.lapic_setup import TIMER_MODES

    parser = argparse.ArgumentParser(prog="apwake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios").set_defaults(func=_list)
    run = sub.add_parser("run", help="run a scenario")
    run.add_argument("scenario")
    run.add_argument("--cpus", type=_cpus, default=8, help="CPUs (1-255, default 8)")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--waves", metavar="FILE.fst", help="write an FST waveform (+ .gtkw)")
    run.add_argument("--timeline", metavar="FILE.png|svg", help="draw each CPU's state over time")
    run.add_argument("--json", action="store_true", help="print the report as one JSON object")
    run.add_argument("--method", default="modern", choices=["modern", "legacy"],
                     help="init-sipi timing (lapic.md §6.3)")
    run.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE,
                     help=f"factor on guest software delays (default {DEFAULT_TIME_SCALE})")
    run.add_argument("--kvm", action="store_true",
                     help="APs start UNINITIALIZED and drop a SIPI before INIT, as in KVM")
    run.add_argument("--nr-cpus", type=int, help="the kernel brings up at most this many CPUs")
    run.add_argument("--callin-timeout-ms", type=float, default=10_000,
                     help="how long the BSP waits for an AP (guest ms, Linux: 10000)")
    run.add_argument("--ipis", type=int, default=20, help="ipi-storm: IPIs per CPU")
    run.add_argument("--mailbox-version", type=int, default=1, choices=[0, 1],
                     help="mpwk scenarios: MADT mailbox version")
    run.add_argument("--parking-page", default="kernel", choices=["kernel", "firmware"],
                     help="kexec-mpwk-parking-loop: where kernel 1's loop polls (own page with "
                          "the MADT patched, or the firmware's page)")
    run.add_argument("--firmware-reuses-mailbox", action="store_true",
                     help="the firmware takes its mailbox page back after the last AP wakeup")
    run.add_argument("--ghcb-version", type=int, default=2, choices=[1, 2],
                     help="SEV-ES scenarios: the hypervisor's maximum GHCB protocol version")
    run.add_argument("--force-kexec", action="store_true",
                     help="kexec-sev-es-v1: go past the kernel's refusal to show why it refuses")
    run.add_argument("--ap-start", default="sipi", choices=["sipi", "mailbox", "ghcb"],
                     help="soc-demo: APs wait for SIPI; or are parked on the MP wakeup mailbox "
                          "(wakeup, offline/online and kexec demo); or start SEV-ES style "
                          "through the GHCB MSR unit (negotiation, AP reset hold)")
    run.add_argument("--gate-level", nargs="?", const="generic", default=None,
                     choices=["generic", "ice40", "ecp5"], metavar="FLAVOUR",
                     help="simulate the Yosys gate-level netlist instead of the RTL: generic "
                          "gates (default) or the iCE40/ECP5-mapped netlist with Yosys's cell models")
    run.add_argument("--unresponsive", type=int, action="append", default=[], metavar="PORT",
                     help="this AP is stuck in SMM (an SMI from the firmware whose handler never "
                          "returns: INIT latched, SIPIs lost); on a mailbox platform a vCPU the "
                          "VMM never runs; repeatable")
    run.add_argument("--lapic-timer", default="deadline", choices=list(TIMER_MODES),
                     help="how each CPU's kernel programs its local APIC timer tick "
                          "(TSC-deadline as Linux prefers, one-shot or periodic count)")
    run.add_argument("--smm-cpu", type=int, metavar="PORT",
                     help="init-sipi-smm: the AP the firmware's SMI holds in SMM (default 1)")
    run.add_argument("--smm-us", type=_smm_us, default=50_000, metavar="US",
                     help="init-sipi-smm: guest microseconds the SMI handler runs (default "
                          "50000: longer than the AP's INIT-SIPI-SIPI)")
    run.set_defaults(func=_run)
    bench = sub.add_parser("bench", help="simulation speed figures")
    bench.add_argument("--cpus", type=_cpus, action="append", help="sizes (default 8, 64, 255)")
    bench.add_argument("--no-icarus", action="store_true", help="skip the Icarus comparison")
    bench.add_argument("--icarus-timeout", type=float, default=600,
                       help="give up on an Icarus run after this many seconds")
    bench.add_argument("--skip-public-flat-rw", action="store_true",
                       help="skip the --public-flat-rw measurement at 64 CPUs")
    bench.set_defaults(func=_bench)
    sub.add_parser("registers", help="print the local APIC register map").set_defaults(func=_registers)
    board = sub.add_parser("build", help="build the soft-SoC bitstream for a board (YoWASP tools)")
    board.add_argument("board", choices=["icebreaker", "ulx3s"])
    board.set_defaults(func=_build)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    # the cocotb runner echoes every command line; build.log in the build folder keeps them
    logging.getLogger("apwake.verilator").setLevel(logging.WARNING)
    from .toolchain import ToolchainError
    try:
        return args.func(args)
    except ToolchainError as error:
        print(f"apwake: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"apwake: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
