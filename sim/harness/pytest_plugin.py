"""pytest as the entry point of the regression: every cocotb test is a pytest test.

A pytest file declares which testbench runs on which configurations::

    test_registers = cocotb_tests("cocotb_tests.lapic.tb_registers", CONFIGS)

That yields one pytest item per (configuration, cocotb test), ``@cocotb.parametrize``
expansions included.  All selected tests of one testbench and configuration run in one
simulator process on one cached build (the first item runs them, the others read the result),
so a configuration is compiled once however many tests use it.

Options: ``--waves`` (or ``APWAKE_WAVES=1``) builds with FST tracing, writes one ``.fst`` and
``.gtkw`` per testbench run under ``build/waves/`` and lists them at the end of the session.
``--gate-level`` runs every selected test on the Yosys netlist of its design instead of the RTL
(:mod:`apwake.sim.harness.gate_level`).  ``--jitter SEED`` starts every driver call from a seeded random phase
after random idle cycles, ``--stall SEED`` gives every driver and responder a seeded random
pause generator (:mod:`apwake.sim.harness.handshake`; the same as ``APWAKE_JITTER``/``APWAKE_STALL``); a
failure then names the seeds.

Tiers: every cocotb item is marked ``verilator`` (and ``gate_level`` on a netlist), so
``-m "not verilator"`` leaves out everything that needs a Verilator build; a test of another kind
that builds (through :func:`apwake.sim.harness.build.build`, in this process or in an ``apwake`` subprocess)
without the mark fails with a message saying so.

Parallel runs (pytest-xdist, ``-n N``): each cocotb item carries an ``xdist_group`` mark naming
its (testbench, configuration) group, and ``--dist loadgroup`` is in pyproject.toml's addopts,
so one worker runs a whole group in one simulator run.  Builds are shared between workers
through the cache's file locks (:mod:`apwake.sim.harness.build`), and each worker has its own run folders
(:func:`apwake.sim.harness.run.runs_dir`).
"""

import importlib
import logging
import os

import pytest

__all__ = ["cocotb_tests", "applies_to"]

_RESULTS = {}
_WAVES = {}           # (fst, gtkw) -> None: the waveforms of this session, in order, once each
#: the user property under which an item names its group's waveform (user properties reach the
#: controller's terminal summary from pytest-xdist workers too)
_WAVES_PROPERTY = "apwake_waves"


def applies_to(predicate):
    """Mark a cocotb test function as meaningful only for configurations where
    ``predicate(config)`` holds (use it under ``@cocotb.test``; stacked marks must all hold)."""
    def mark(func):
        earlier = getattr(func, "__apwake_applies__", None)
        func.__apwake_applies__ = (predicate if earlier is None
                                   else lambda config: earlier(config) and predicate(config))
        return func
    return mark


def _cocotb_test_names(module_name):
    import cocotb._decorators as decorators
    module = importlib.import_module(module_name)
    names = []
    for obj in vars(module).values():
        if isinstance(obj, decorators.TestGenerator):
            applies = getattr(obj.func, "__apwake_applies__", lambda config: True)
            names += [(test.name, applies) for test in obj.generate_tests()]
    return names


def _waves_enabled(config):
    return config.getoption("--waves") or os.environ.get("APWAKE_WAVES", "") not in ("", "0")


def cocotb_tests(tb_module, configs, *, design, marks=(), gate_level=False, jitter=()):
    """A pytest test function running the cocotb tests of ``tb_module`` on each of ``configs``,
    each built as ``design(config)`` (a :class:`.build.Design` class); ``marks``
    (for example ``pytest.mark.slow``) apply to every item; ``gate_level`` runs them on the
    Yosys netlist (as ``--gate-level`` does for every test).  ``jitter`` (the configurations, or
    True for all) marks the items ``jitter``: `make test`'s seeded ``--jitter 1 --stall 1`` pass
    runs those (one configuration where several run the same code, for the CI budget)."""
    names = _cocotb_test_names(tb_module)
    from .gate_level import label_suffix
    suffix = label_suffix(gate_level)
    # What the tiers select on (every item needs a Verilator build) and what pytest-xdist's
    # loadgroup keeps on one worker: the items of one (testbench, configuration) share one
    # simulator run, which only the worker that runs them all can share.
    tier = [pytest.mark.verilator] + ([pytest.mark.gate_level] if gate_level else [])
    seeded = set(configs if jitter is True else jitter)
    if not seeded <= set(configs):
        raise ValueError(f"{tb_module}: jitter names configurations it does not run: "
                         f"{sorted(c.label for c in seeded - set(configs))}")
    params = [pytest.param(config, name, id=f"{config.label}{suffix}-{name}",
                           marks=[*marks, *tier, *([pytest.mark.jitter] if config in seeded and not gate_level else []),
                                  pytest.mark.xdist_group(f"{tb_module}-{config.label}{suffix}")])
              for config in configs for name, applies in names if applies(config)]

    @pytest.mark.parametrize(("config", "cocotb_test"), params)
    def test(config, cocotb_test, request):
        outcome, result = _group_outcome(request, tb_module, config, design, cocotb_test, gate_level)
        if result.waves is not None:     # every item of the group names it (JUnit XML too)
            request.node.user_properties.append((_WAVES_PROPERTY, (str(result.waves), str(result.gtkw or ""))))
        from .handshake import seed_note
        seeds = seed_note()
        if outcome is None:
            pytest.fail(f"{cocotb_test} did not report a result (simulator crashed?){seeds}; "
                        f"log {result.log_file}:\n{result.log_tail()}", pytrace=False)
        if outcome.skipped:
            pytest.skip(outcome.message or "skipped by the testbench")
        if not outcome.passed:
            pytest.fail(f"{cocotb_test} on {config.label}{seeds}: {outcome.message}\n"
                        f"--- simulator log {result.log_file} (tail) ---\n{result.log_tail()}",
                        pytrace=False)

    test.__doc__ = f"cocotb tests of {tb_module}"
    test.__apwake_testbench__ = tb_module      # how the hooks below tell a cocotb item
    return test


def _group_outcome(request, tb_module, config, design, cocotb_test, gate_level=False):
    from .build import build
    from .paths import out_dir
    from .run import run_cocotb

    waves = _waves_enabled(request.config)
    gate_level = gate_level or request.config.getoption("--gate-level")   # False or a flavour
    key = (tb_module, config, waves, gate_level)
    if isinstance(_RESULTS.get(key), Exception):
        pytest.fail(f"the build for {config.label} failed earlier in this session: "
                    f"{_RESULTS[key]}", pytrace=False)
    if key not in _RESULTS:
        fn = request.node.function
        selected = [item.callspec.params["cocotb_test"] for item in request.session.items
                    if getattr(item, "function", None) is fn
                    and item.callspec.params["config"] == config]
        logging.getLogger("apwake.build").setLevel(logging.INFO)
        try:
            the_design = design(config)
            if gate_level:
                from .gate_level import GateLevelDesign
                the_design = GateLevelDesign(the_design, gate_level)
            the_build = build(the_design, waves=waves)
        except Exception as error:
            _RESULTS[key] = error      # one failing build fails its items once, fast
            raise
        from .gate_level import label_suffix
        label = f"{config.label}{label_suffix(gate_level)}"
        waves_file = None
        if waves:
            waves_file = out_dir("waves") / f"{tb_module.rsplit('.', 1)[-1]}-{label}.fst"
        result = run_cocotb(the_build, tb_module, names=selected, label=label,
                            extra_env={config.ENV: config.to_json()},   # seeds: os.environ
                            waves_file=waves_file)
        _RESULTS[key] = result
    result = _RESULTS[key]
    return result.outcomes.get(cocotb_test), result


def pytest_addoption(parser):
    parser.addoption("--waves", action="store_true", default=False,
                     help="build with FST tracing and write a waveform (+ .gtkw) per testbench run")
    parser.addoption("--gate-level", nargs="?", const="generic", default=False,
                     choices=["generic", "ice40", "ecp5"], metavar="FLAVOUR",
                     help="simulate the Yosys gate-level netlist of each design instead of its "
                          "RTL: generic gates (default) or the iCE40/ECP5-mapped netlist")
    parser.addoption("--jitter", type=int, default=None, metavar="SEED",
                     help="start every driver call from a random phase after random idle "
                          "cycles, seeded (as APWAKE_JITTER=SEED)")
    parser.addoption("--stall", type=int, default=None, metavar="SEED",
                     help="random seeded stalls at every driver and responder: ready held low, "
                          "late responses, late requests and acknowledges (as APWAKE_STALL=SEED)")


def pytest_configure(config):
    # the cocotb runner lets the calling environment override what it is given: keep them equal
    from .handshake import JITTER_ENV, STALL_ENV
    for option, variable in (("--jitter", JITTER_ENV), ("--stall", STALL_ENV)):
        if config.getoption(option) is not None:
            os.environ[variable] = str(config.getoption(option))
    dist = getattr(config.option, "dist", "no")      # "no" on xdist's workers and without -n
    if dist not in ("no", "loadgroup"):
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"--dist {dist} spreads the items of one cocotb testbench and configuration over "
            f"several workers, and each of them simulates the whole group: correct but slower; "
            f"leave --dist out (apwake uses loadgroup with -n) or give --dist loadgroup"), stacklevel=2)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # --gate-level turns every cocotb item into a gate-level one: mark it so, before -m selects
    # (this conftest plugin's hook runs ahead of pytest's own, and tryfirst makes sure).
    if config.getoption("--gate-level"):
        for item in items:
            if hasattr(getattr(item, "function", None), "__apwake_testbench__"):
                item.add_marker(pytest.mark.gate_level)
    if hasattr(config, "workerinput"):
        # Under pytest-xdist the long single items (the bitstream: about 15 minutes on a busy
        # machine) go first, so the other workers run the rest meanwhile instead of idling at
        # the end.  Every worker sorts alike (stable), as the scheduler needs.
        items.sort(key=lambda item: item.get_closest_marker("synth") is None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # A test without the verilator mark may not build (apwake.sim.harness.build.build refuses while this is
    # set; subprocesses inherit it), so `-m "not verilator"` really runs no Verilator build.
    # A value inherited from an outer session (pytest run by an unmarked test) stays in force.
    from .build import UNMARKED_TEST_ENV
    inherited = os.environ.get(UNMARKED_TEST_ENV)
    if item.get_closest_marker("verilator") is None:
        os.environ[UNMARKED_TEST_ENV] = inherited or item.nodeid
    try:
        return (yield)
    finally:
        if inherited is None:
            os.environ.pop(UNMARKED_TEST_ENV, None)
        else:
            os.environ[UNMARKED_TEST_ENV] = inherited


def pytest_runtest_logreport(report):
    # on the controller, from this process's items or from pytest-xdist workers alike
    for name, (fst, gtkw) in report.user_properties:
        if name == _WAVES_PROPERTY and report.when == "call":
            _WAVES[(fst, gtkw)] = None


def pytest_report_header(config):
    lines = []
    from .handshake import seeds as driver_seeds
    seeds = driver_seeds()
    if seeds:
        lines.append("apwake seeded drivers: " + ", ".join(f"{k}={v}" for k, v in seeds.items()))
    if getattr(config.option, "numprocesses", None) and config.option.dist == "loadgroup":
        lines.append("apwake: --dist loadgroup, one worker per cocotb testbench and configuration")
    return lines


def pytest_terminal_summary(terminalreporter):
    if _WAVES:
        terminalreporter.section("waveforms")
        for fst, gtkw in _WAVES:
            terminalreporter.write_line(f"{fst}" + (f"  (view: gtkwave {gtkw})" if gtkw else ""))
