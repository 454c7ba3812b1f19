"""Runs cocotb testbenches on a cached build (:mod:`apwake.sim.harness.build`) and reads their results."""

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from . import pins
from .paths import CHECKOUT, runs_root
from .waves import write_gtkw

__all__ = ["Outcome", "RunResult", "run_cocotb", "runs_dir", "simulator_env"]


@dataclass
class Outcome:
    name: str
    passed: bool
    skipped: bool = False
    message: str = ""


@dataclass
class RunResult:
    outcomes: dict          # cocotb test name -> Outcome
    log_file: Path
    waves: Path | None
    gtkw: Path | None

    def log_tail(self, lines=150):
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return "\n".join(text[-lines:])


def runs_dir():
    """Where runs write their logs and results: :func:`.paths.runs_root`, and
    under it one folder per pytest-xdist worker (``gw0``, ``gw1``...), as :func:`run_cocotb`
    empties a run's folder first: two workers running the same testbench and label (two
    command-line tests of one scenario) must not share it.  The variable is inherited by
    subprocesses (``apwake run`` from a test)."""
    root = runs_root()
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return root / worker if worker else root


def _read_results(path):
    outcomes = {}
    if not path.exists():
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped") is not None
        message = "" if failure is None else (failure.get("message") or failure.text or "failed")
        outcomes[name] = Outcome(name=name, passed=failure is None and not skipped,
                                 skipped=skipped, message=message)
    return outcomes


def simulator_env(test_module):
    """The environment a simulator running cocotb module ``test_module`` (a dotted name) gets
    from every apwake run, the benchmark's Icarus runs included, so that their start-ups cost
    the same.

    cocotb sets up pytest's assertion rewriting in the simulator, which loads every installed
    pytest plugin (xdist, hypothesis...: a quarter of a second per run for nothing the
    testbenches use), and rewrites the assertions of every module imported after it (its
    default pattern is ``*.py``): with ``PYTHONDONTWRITEBYTECODE`` set, as on this machine
    kind, each run parsed and rewrote all of apwake and Amaranth again, about half a second.
    Only the testbenches' own modules are rewritten, as pytest does with test files."""
    return {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "COCOTB_REWRITE_ASSERTION_FILES": f"tb_*.py {test_module.rpartition('.')[2]}.py"}


def run_cocotb(build, test_module, *, names=None, label=None, extra_env=None, waves_file=None,
               seed=None):
    """Run the cocotb tests ``names`` (all when None) of ``test_module`` on ``build``.

    With a waveform build, the FST goes to ``waves_file`` (default: beside the run's log) and a
    ``.gtkw`` is written next to it.
    """
    label = label or build.toplevel
    run_dir = runs_dir() / f"{test_module}-{label}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    log_file = run_dir / "sim.log"
    test_args = []
    waves = None
    if build.waves:
        waves = Path(waves_file) if waves_file else run_dir / f"{label}.fst"
        waves.parent.mkdir(parents=True, exist_ok=True)
        test_args = ["--trace-file", str(waves.resolve())]
    test_filter = None
    if names:
        test_filter = r"(^|\.)(" + "|".join(re.escape(n) for n in names) + r")$"
    from .verilator_runner import ApwakeVerilator     # not at import: see its module
    runner = ApwakeVerilator()
    # a checkout's testbenches (cocotb_tests.*) are imported by module name in the simulator
    path = [str(CHECKOUT)] if CHECKOUT is not None else []
    env = {"PYTHONPATH": os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]),
           pins.TOP_ENV: str(build.verilog_dir),
           **simulator_env(test_module)}
    env.update(extra_env or {})
    try:
        runner.test(test_module=test_module, hdl_toplevel=build.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=build.build_dir, test_dir=run_dir,
                    test_filter=test_filter, extra_env=env, waves=build.waves,
                    test_args=test_args, results_xml=str(results), log_file=log_file,
                    seed=seed, timescale=("1ns", "1ps"))
    except SystemExit:
        # The runner exits when a test failed or the simulator died; the per-test outcomes
        # (or their absence) in results.xml say which.
        pass
    gtkw = None
    if waves is not None and waves.exists():
        groups = json.loads((build.verilog_dir / "wave_groups.json").read_text())
        gtkw = write_gtkw(waves, build.toplevel, groups)
    return RunResult(outcomes=_read_results(results), log_file=log_file, waves=waves, gtkw=gtkw)
