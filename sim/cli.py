"""The ``apwake`` command line.

``apwake demo``   INIT-SIPI-SIPI broadcast on the APIC fabric, with a waveform.
``apwake registers``   the local APIC register map (Markdown), from the one register table.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _demo(args):
    from .build import REPO_ROOT, build
    from .lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
    from .run import run_cocotb

    config = FabricConfig.contiguous(args.cpus)
    waves = None if args.no_waves else Path(args.waves or REPO_ROOT / "build" / "demo" /
                                            "init-sipi-broadcast.fst")
    started = time.monotonic()
    the_build = build(FabricDesign(config), waves=waves is not None)
    report_file = REPO_ROOT / "build" / "demo" / "report.json"
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.unlink(missing_ok=True)
    result = run_cocotb(the_build, "sim.scenarios.init_sipi_broadcast", label="demo",
                        extra_env={CONFIG_ENV: config.to_json(), "APWAKE_REPORT": str(report_file)},
                        waves_file=waves)
    outcome = result.outcomes.get("init_sipi_broadcast")
    if not report_file.exists():
        print(f"demo failed before reporting; log {result.log_file}:\n{result.log_tail(60)}")
        return 1
    report = json.loads(report_file.read_text())
    print(f"INIT-SIPI-SIPI broadcast on {report['cpus']} local APICs "
          f"({report['bus_messages']} fabric messages, {report['sim_time_ns'] / 1000:.1f} us "
          f"simulated, {time.monotonic() - started:.1f} s wall)")
    print(f"{'port':>4} {'APIC ID':>7} {'role':>4} {'INIT at':>10} {'SIPI at':>10} "
          f"{'starts at':>10} {'2nd SIPI':>9}")
    for cpu in report["cpus_detail"]:
        if cpu["role"] == "BSP":
            print(f"{cpu['port']:>4} {cpu['apic_id']:>#7x} {'BSP':>4} {'-':>10} {'-':>10} "
                  f"{'running':>10} {'-':>9}")
            continue
        print(f"{cpu['port']:>4} {cpu['apic_id']:>#7x} {'AP':>4} {cpu['init_ns']:>8.0f}ns "
              f"{cpu['sipi_ns']:>8.0f}ns {cpu['start_address']:>#10x} "
              f"{'ignored' if cpu['ignored_sipis'] else '-':>9}")
    print(f"BSP ESR after the SIPIs: {report['esr_after']:#x}")
    if result.waves:
        print(f"waveform: {result.waves}")
        print(f"GTKWave view (signals grouped per APIC): gtkwave {result.gtkw}")
    if outcome is None or not outcome.passed:
        print(f"FAILED: {outcome.message if outcome else 'no result'} (log {result.log_file})")
        return 1
    return 0


def _registers(args):
    from rtl.lapic.registers import markdown
    print(markdown(), end="")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="apwake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="INIT-SIPI-SIPI broadcast on the APIC fabric")
    demo.add_argument("--cpus", type=int, default=8, help="number of CPUs (1-255, default 8)")
    demo.add_argument("--waves", metavar="FILE.fst", help="where to write the waveform")
    demo.add_argument("--no-waves", action="store_true", help="skip the waveform build")
    demo.set_defaults(func=_demo)
    registers = sub.add_parser("registers", help="print the local APIC register map")
    registers.set_defaults(func=_registers)
    args = parser.parse_args(argv)
    if getattr(args, "cpus", 1) is not None and not 1 <= getattr(args, "cpus", 1) <= 255:
        parser.error(f"--cpus must be 1 to 255, not {args.cpus}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # the cocotb runner echoes every command line; build.log in the build folder keeps them
    logging.getLogger("apwake.verilator").setLevel(logging.WARNING)
    from .toolchain import ToolchainError
    try:
        return args.func(args)
    except ToolchainError as error:
        print(f"apwake: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
