"""``apwake bench``: simulation speed figures (printed; no test asserts on them).

For each CPU count (default 8, 64, 255):

* build time: cold (conversion + Verilator compile into an empty cache) and cached;
* ``init-sipi-parallel``: wall time of the run in the simulator from the clock's start (as the
  ceilings below, which time clocked cycles only), simulated cycles, cycles/s; and apart, the
  set-up before the clock started (the ports' handle lookups) and the whole process;
* the idle ceiling: cycles/s of the same build clocked by cocotb with no Python activity;
* what one register access costs (back-to-back reads after the idle run), and how much of that
  is not its two cycles of idle clocking: the drivers' Python per access, and the evaluations
  Verilator adds in each time step in which a testbench writes;
* the pure-C++ ceiling: the same Verilog clocked by a C++ loop (no VPI, no Python), built the
  way the harness builds it (hierarchical APIC) and flat (:mod:`apwake.sim.harness.ceiling`);
  the scenario's share of the fastest of the two is the figure issue 12 sets a target for;
* the same scenario on Icarus Verilog (when ``iverilog`` is installed), as a slowdown ratio;
* ``--runs N`` (default 3): the scenario, the idle clocking and the C++ ceilings run N times,
  one of each in turn, and the table shows medians (``bench.json`` keeps the scenario's runs):
  runs of one on this machine kind vary by 10-15%;
* for 64 CPUs, what the stock runner's ``--public-flat-rw`` would cost (compile, idle speed).

Figures go to stdout and to ``bench.json`` in the bench output folder
(``build/bench`` of a checkout); docs/PERFORMANCE.md records them.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from apwake.sim.harness.build import build
from apwake.sim.harness.ceiling import VARIANTS, build_ceiling
from apwake.sim.harness.paths import CHECKOUT, out_dir
from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
from apwake.sim.harness.run import run_cocotb, simulator_env
from apwake.sim.scenarios.options import ScenarioRequest

__all__ = ["main"]

SCENARIO = "init-sipi-parallel"
#: the register accesses each idle run ends with, times the CPUs (so about as long at every size)
ACCESS_WORK = 200_000


def _report(run, path):
    if not path.exists():
        raise RuntimeError(f"no report from the simulator; log {run.log_file}:\n{run.log_tail(40)}")
    return json.loads(path.read_text())


def _scenario(the_build, config, label, out):
    report_file = out / f"{label}.json"
    report_file.unlink(missing_ok=True)
    env = {CONFIG_ENV: config.to_json(),
           **ScenarioRequest(SCENARIO, report=str(report_file)).env()}
    started = time.monotonic()
    run = run_cocotb(the_build, "apwake.sim.scenarios.entry", label=label, extra_env=env)
    process_s = time.monotonic() - started
    report = _report(run, report_file)
    if not report["passed"]:
        raise RuntimeError(f"{SCENARIO} on {config.n_cpus} CPUs failed: {report['failures'][:3]}")
    return report, process_s


def _idle(the_build, config, label, out, cycles, accesses=0):
    """cocotb's idle clocking of ``cycles`` cycles (sim/scenarios/idle.py), then ``accesses``
    back-to-back register reads: ``(cycles/s, seconds per access or None)``."""
    report_file = out / f"{label}-idle.json"
    report_file.unlink(missing_ok=True)
    env = {CONFIG_ENV: config.to_json(), "APWAKE_REPORT": str(report_file),
           "APWAKE_IDLE_CYCLES": str(cycles), "APWAKE_IDLE_ACCESSES": str(accesses)}
    run = run_cocotb(the_build, "apwake.sim.scenarios.idle", label=f"{label}-idle", extra_env=env)
    idle = _report(run, report_file)
    return idle["cycles"] / idle["wall_s"], (idle["access_wall_s"] / accesses if accesses else None)


#: what the two simulators must agree on (the same Verilog, the same scenario)
SAME_RESULT = ("cycles", "online", "bus_messages", "failures", "timeline")


def _icarus(verilog_build, config, label, out, timeout_s):
    """Run the scenario on Icarus with the Verilog of ``verilog_build``; returns ``(report,
    problem)``: the report dict (None without one) and ``problem``, None or a line saying why
    there is no figure (timed out after ``timeout_s`` seconds, or failed: the log's last error)."""
    from cocotb_tools.runner import get_runner
    build_dir = out / f"icarus-{label}"
    shutil.rmtree(build_dir, ignore_errors=True)
    runner = get_runner("icarus")
    try:
        # -g2005 after the runner's -g2012: Verilog-2005 initialisers raise a time-0 event, which
        # Yosys's output relies on to run its `always @*` blocks once (SystemVerilog's do not).
        runner.build(sources=sorted(verilog_build.verilog_dir.glob("*.v")), hdl_toplevel=verilog_build.toplevel,
                     build_dir=build_dir, build_args=["-g2005"], timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log")
    except Exception as error:          # a bench row, not the end of the bench
        return None, f"iverilog failed: {_last_error(build_dir / 'build.log', str(error))}"
    report_file = out / f"{label}-icarus.json"
    report_file.unlink(missing_ok=True)
    log = build_dir / "sim.log"
    # cocotb's GPI clock, which cocotb's Verilator runner turns on and its Icarus runner does not:
    # time skipping needs it, and both runs must be the same scenario.  cocotb warns that some
    # simulators mishandle inertial writes; SAME_RESULT (below) is the guard against that.
    module = "apwake.sim.scenarios.entry"
    env = dict(os.environ, **{CONFIG_ENV: config.to_json(), "PYTHONPATH": str(CHECKOUT or ""),
                              "COCOTB_TRUST_INERTIAL_WRITES": "1"},
               **simulator_env(module),
               **ScenarioRequest(SCENARIO, report=str(report_file)).env())
    code = (f"from cocotb_tools.runner import get_runner; r = get_runner('icarus'); "
            f"r.test(test_module={module!r}, hdl_toplevel={verilog_build.toplevel!r}, "
            f"hdl_toplevel_lang='verilog', build_dir={str(build_dir)!r}, "
            f"test_dir={str(build_dir)!r}, timescale=('1ns', '1ps'), log_file={str(log)!r})")
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, timeout=timeout_s,
                              capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired:
        return None, f"no result within {timeout_s} s"
    if not report_file.exists():
        return None, f"failed: {_last_error(log, done.stderr)} (log {log})"
    return json.loads(report_file.read_text()), None


def _last_error(log, fallback=""):
    """The last line of ``log`` that names an error (an exception, cocotb's ERROR level,
    iverilog's ``error:``), else the last line of ``fallback`` (the process's own output, for a
    run that died before writing its log)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.strip() for line in lines if "error" in line.lower()]
    if errors:
        return errors[-1]
    rest = [line.strip() for line in fallback.splitlines() if line.strip()]
    return rest[-1] if rest else ("no report and no error in the log" if lines else "no simulator log")


def _icarus_row(report, icarus, problem):
    """The bench row's Icarus fields: the slowdown, or why there is none; a run whose result
    differs from Verilator's (:data:`SAME_RESULT`: cycles, who came online, bus messages,
    failures, the timeline) is a finding, not a figure."""
    if problem is not None:
        return {"icarus": problem}
    differing = [k for k in SAME_RESULT if icarus.get(k) != report.get(k)]
    if differing:
        return {"icarus": "result differs from Verilator's: " + ", ".join(
            f"{k} {icarus.get(k)!r} against {report.get(k)!r}" if k in ("cycles", "bus_messages")
            else k for k in differing)}
    return {"icarus_wall_s": icarus["wall_s"],
            "icarus_slowdown": round(icarus["wall_s"] / report["wall_s"], 1)}


def _public_flat_rw(config, cache):
    """Build and idle-run the fabric the way the stock cocotb runner would (every net public)."""
    from apwake.sim.harness.verilator_runner import ApwakeVerilator
    os.environ["APWAKE_CACHE_DIR"] = str(cache)
    ApwakeVerilator.public_everything = True
    try:
        started = time.monotonic()
        the_build = build(FabricDesign(config), variant="public-flat-rw")
        return the_build, time.monotonic() - started
    finally:
        ApwakeVerilator.public_everything = False


def main(args):
    sizes = args.cpus or [8, 64, 255]
    out = out_dir("bench")
    out.mkdir(parents=True, exist_ok=True)
    have_icarus = shutil.which("iverilog") is not None and not args.no_icarus
    rows = []
    saved_cache = os.environ.get("APWAKE_CACHE_DIR")
    for n in sizes:
        if args.cluster_size > n:
            print(f"{n} CPUs: one cluster of {n} (--cluster-size {args.cluster_size} is more than the CPUs)",
                  flush=True)
        config = FabricConfig.contiguous(n, cluster_size=min(args.cluster_size, n))
        label = config.label
        with tempfile.TemporaryDirectory(prefix="apwake-bench-") as cache:
            os.environ["APWAKE_CACHE_DIR"] = cache
            started = time.monotonic()
            cold = build(FabricDesign(config), threads=args.threads)
            cold_s = time.monotonic() - started
            started = time.monotonic()
            build(FabricDesign(config), threads=args.threads)
            cached_s = time.monotonic() - started
            ceilings = {} if args.no_cpp else {
                variant: build_ceiling(cold, variant, out / f"ceiling-{label}-{variant}")
                for variant in VARIANTS}
            runs = {"scenario_wall_s": [], "setup_s": [], "process_s": [], "idle_cycles_per_s": [], "access_us": [],
                    **{f"cpp_{v}_cycles_per_s": [] for v in ceilings}}
            cycles = set()
            for _ in range(args.runs):
                # one of each in turn, so that a drift of the machine's speed reaches all alike
                report, process_s = _scenario(cold, config, label, out)
                cycles.add(report["cycles"])
                if len(cycles) > 1:
                    raise RuntimeError(f"{SCENARIO} on {n} CPUs took {sorted(cycles)} cycles in "
                                       f"different runs of the same build")
                runs["scenario_wall_s"].append(report["wall_s"])
                runs["setup_s"].append(report["setup_s"])
                runs["process_s"].append(process_s)
                idle_cps, access_s = _idle(cold, config, label, out, cycles=max(50_000, 2_000_000 // n),
                                           accesses=max(200, ACCESS_WORK // n))
                runs["idle_cycles_per_s"].append(idle_cps)
                runs["access_us"].append(access_s * 1e6)
                for variant, ceiling in ceilings.items():
                    runs[f"cpp_{variant}_cycles_per_s"].append(ceiling.run(max(20_000, 4_000_000 // n)))
            wall = statistics.median(runs["scenario_wall_s"])
            row = {"cpus": n, "cluster_size": FabricDesign(config).cluster_size, "threads": args.threads,
                   "build_cold_s": round(cold_s, 1), "convert_s": round(cold.convert_s, 1),
                   "compile_s": round(cold.compile_s, 1), "build_cached_s": round(cached_s, 2),
                   "scenario": SCENARIO, "runs": args.runs, "scenario_wall_s": round(wall, 3),
                   "scenario_setup_s": round(statistics.median(runs["setup_s"]), 3),
                   "scenario_process_s": round(statistics.median(runs["process_s"]), 2),
                   "cycles": report["cycles"], "cycles_per_s": round(report["cycles"] / wall),
                   "cycles_per_s_runs": sorted(round(report["cycles"] / w) for w in runs["scenario_wall_s"]),
                   "idle_cycles_per_s": round(statistics.median(runs["idle_cycles_per_s"])),
                   "online": len(report["online"])}
            row["fraction_of_idle"] = round(row["cycles_per_s"] / row["idle_cycles_per_s"], 3)
            # one register access, and what of it is not its two cycles of idle clocking
            row["access_us"] = round(statistics.median(runs["access_us"]), 1)
            row["access_beyond_idle_us"] = round(row["access_us"] - 2e6 / row["idle_cycles_per_s"], 1)
            if ceilings:
                for variant, ceiling in ceilings.items():
                    row[f"cpp_{variant}_compile_s"] = round(ceiling.compile_s, 1)
                    row[f"cpp_{variant}_cycles_per_s"] = round(statistics.median(runs[f"cpp_{variant}_cycles_per_s"]))
                fastest = max(row[f"cpp_{v}_cycles_per_s"] for v in VARIANTS)
                row["fraction_of_cpp"] = round(row["cycles_per_s"] / fastest, 3)
            if have_icarus:
                icarus, problem = _icarus(cold, config, label, out, timeout_s=args.icarus_timeout)
                row.update(_icarus_row(dict(report, wall_s=wall), icarus, problem))
            if n == 64 and not args.skip_public_flat_rw:
                public, public_build_s = _public_flat_rw(config, cache)
                row["public_flat_rw_build_s"] = round(public_build_s, 1)
                row["public_flat_rw_idle_cycles_per_s"] = round(
                    _idle(public, config, f"{label}-public", out, cycles=max(50_000, 2_000_000 // n))[0])
                os.environ["APWAKE_CACHE_DIR"] = cache
        rows.append(row)
        print(json.dumps(row), flush=True)
    if saved_cache is None:
        os.environ.pop("APWAKE_CACHE_DIR", None)
    else:
        os.environ["APWAKE_CACHE_DIR"] = saved_cache
    (out_dir("bench") / "bench.json").write_text(json.dumps(rows, indent=1))
    _print_table(rows)
    return 0


def _print_table(rows):
    print()
    print(f"{'CPUs':>5} {'build cold':>10} {'cached':>7} {'scenario':>9} {'cycles':>9} "
          f"{'cycles/s':>10} {'idle c/s':>10} {'of idle':>7} {'C++ hier':>9} {'C++ flat':>9} "
          f"{'of C++':>7} {'Icarus x':>9}")
    for r in rows:
        icarus = r.get("icarus_slowdown", r.get("icarus", "-"))
        cpp = [f"{r[k]:>9,}" if k in r else f"{'-':>9}"
               for k in ("cpp_hierarchical_cycles_per_s", "cpp_flat_cycles_per_s")]
        of_cpp = f"{r['fraction_of_cpp']:>6.0%}" if "fraction_of_cpp" in r else f"{'-':>6}"
        print(f"{r['cpus']:>5} {r['build_cold_s']:>9.1f}s {r['build_cached_s']:>6.2f}s "
              f"{r['scenario_wall_s']:>8.2f}s {r['cycles']:>9} {r['cycles_per_s']:>10,} "
              f"{r['idle_cycles_per_s']:>10,} {r['fraction_of_idle']:>6.0%} {cpp[0]} {cpp[1]} "
              f"{of_cpp} {str(icarus):>9}")
    print("of idle: the scenario's cycles/s over cocotb's idle clocking of the same binary; "
          "of C++: over the fastest pure-C++ ceiling (C++ hier, C++ flat)")
    for r in rows:
        if r.get("runs", 1) > 1:
            low, *_, high = r["cycles_per_s_runs"]
            print(f"{r['cpus']} CPUs: medians of {r['runs']} runs of each, taken in turn; the "
                  f"scenario's cycles/s ranged {low:,} to {high:,}")
    for r in rows:
        if "scenario_setup_s" in r:
            print(f"{r['cpus']} CPUs: the scenario's wall time is from the clock's start; before it, "
                  f"{r['scenario_setup_s']:.3f} s of set-up (the ports' handle lookups); the whole "
                  f"simulator process {r['scenario_process_s']:.2f} s")
    for r in rows:
        if "access_us" in r:
            print(f"{r['cpus']} CPUs: a register access (back-to-back ESR reads of port 0 after the idle "
                  f"run) {r['access_us']:,.1f} us, {r['access_beyond_idle_us']:,.1f} us of it beyond its two "
                  f"cycles of idle clocking (the drivers' Python, and the evaluations their writes add)")
    threaded = sorted({r["threads"] for r in rows if r.get("threads", 1) != 1})
    if threaded:
        print(f"scenario and idle runs on a model with {', '.join(map(str, threaded))} threads "
              f"(--threads); the C++ ceilings and Icarus on one")
    for r in rows:
        if "public_flat_rw_build_s" in r:
            print(f"--public-flat-rw at {r['cpus']} CPUs: build {r['public_flat_rw_build_s']} s "
                  f"(apwake: {r['build_cold_s']} s), idle {r['public_flat_rw_idle_cycles_per_s']:,} "
                  f"cycles/s (apwake: {r['idle_cycles_per_s']:,})")
