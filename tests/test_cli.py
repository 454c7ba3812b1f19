"""The apwake command line, run as a user runs it.

The refusals and the help are checked in-process with ``main([...])`` and a ``_simulate`` that
fails the test if called: nothing may be built before every option is checked.  The runs that
do simulate use the 2-CPU designs (built once, then cached).
"""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from apwake.sim import cli
from apwake.sim.harness.paths import CHECKOUT as REPO_ROOT
from apwake.sim.cli import main
from apwake.sim.scenarios.registry import SCENARIOS
from apwake.sim.scenarios.options import Option, ScenarioOptions, ScenarioRequest
from apwake.sim.scenarios.report import SCHEMA_PATH, format_report

#: a test that runs a scenario: it builds (or reuses) a Verilator model
scenario_run = pytest.mark.verilator


def run_apwake(*args):
    return subprocess.run([sys.executable, "-m", "apwake.sim.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def apwake_json(*args, status):
    """``apwake run ... --json``: exit ``status``, one JSON report that follows the schema."""
    out = run_apwake("run", *args, "--json")
    assert out.returncode == status, out.stderr[-2000:]
    report = json.loads(out.stdout)
    check_schema(report)
    return report


def check_schema(report):
    """``report`` against the schema shipped with the package (``--json``'s contract)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)


def test_list_names_every_scenario():
    out = run_apwake("list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["init-sipi", "init-sipi-smm", "init-sipi-broadcast", "init-sipi-parallel", "mpwk-wakeup",
                     "mpwk-offline-online", "kexec-mpwk-v0", "kexec-mpwk-v1",
                     "kexec-mpwk-parking-loop", "ipi-storm", "sev-es-boot",
                     "sev-es-offline-online", "kexec-sev-es-v2", "kexec-sev-es-v1", "snp-boot",
                     "kexec-snp", "pv-startup-vmi", "pv-startup-vmi-drift", "pv-startup-vmi-mixed",
                     "pv-startup-direct", "tdx-host-init", "tdx-host-no-vmxon", "tdx-host-irqs-on",
                     "tdx-host-hotplug", "tdx-host-offline-last", "soc-demo"]


@scenario_run
def test_run_json_and_timeline(tmp_path):
    picture = tmp_path / "pictures" / "boot.png"          # its folder is made, as for --waves
    report = apwake_json("init-sipi", "--cpus", "2", "--timeline", str(picture), status=0)
    for key in ("scenario", "cpus", "passed", "online", "failures", "sim_time_ns", "cycles",
                "wall_s", "setup_s", "waves"):
        assert key in report, key
    assert report["passed"] and report["online"] == [0, 1] and report["failures"] == []
    assert report["cycles"] == report["sim_time_ns"] // 10 > 0
    assert report["guest_time_ns"] == pytest.approx(report["sim_time_ns"] / report["time_scale"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@scenario_run
def test_stuck_ap_fails_with_a_report():
    """--unresponsive: an AP stuck in SMM; the failure names it, SMM and the SMI handler, in
    the JSON (which follows the schema when a run fails too) and in the text report."""
    report = apwake_json("init-sipi", "--cpus", "2", "--unresponsive", "1",
                         "--callin-timeout-ms", "1", status=1)
    assert not report["passed"] and report["failures"][0]["state"] == "SMM"
    assert report["options"]["unresponsive"] == [1]
    text = format_report(report)
    assert "FAILURE CPU 1 (APIC ID 0x1, SMM)" in text
    assert "did not answer within 0.001 s (guest time); it is SMM at SMM: firmware SMI handler" in text
    assert text.rstrip().endswith("FAILED")


@scenario_run
@pytest.mark.parametrize(("args", "passed", "outcome"), [
    (["--callin-timeout-ms", "1"], False,
     "INIT latched in SMM and taken at RSM, its 2 SIPIs arrived in SMM and were lost: left "
     "INIT_RECEIVED at wait-for-SIPI"),
    (["--method", "legacy", "--smm-us", "5000"], True,
     "came up: the SMI ended before the SIPIs, the INIT latched in SMM was taken at RSM"),
])
def test_init_sipi_smm(args, passed, outcome):
    """init-sipi-smm from the command line: the JSON names the AP in SMM and what became of
    it; the exit status follows."""
    report = apwake_json("init-sipi-smm", "--cpus", "2", "--smm-cpu", "1", *args,
                         status=0 if passed else 1)
    smm = report["smm"]
    assert (smm["cpu"], smm["port"], smm["outcome"]) == (1, 1, outcome), smm
    assert report["passed"] is passed and report["online"] == ([0, 1] if passed else [0])
    assert "SMM" in [event[1] for event in report["timeline"][1]["events"]]


@scenario_run
def test_parking_loop_json_reports_stranded_aps():
    """Plan B with nr_cpus=1: the JSON names kernel 2's stranded AP and why (issue 4 §3)."""
    report = apwake_json("kexec-mpwk-parking-loop", "--cpus", "2", "--nr-cpus", "1",
                         "--callin-timeout-ms", "100", status=1)
    kernel1, kernel2 = report["kernels"]
    assert kernel1["online"] == [0] and kernel2["online"] == [0]
    (stranded,) = kernel2["stranded"]
    assert stranded["cpu"] == 1 and "patched MADT" in stranded["reason"]
    assert report["parking"]["page"] == "kernel" and report["corruptions"] == []


@scenario_run
def test_sev_kexec_refusal_from_the_command_line():
    """kexec-sev-es-v1 builds the protocol-1 machine itself and reports the refusal."""
    report = apwake_json("kexec-sev-es-v1", "--cpus", "2", status=0)
    assert report["ghcb_version"] == 1 and report["hold_form"] == "ghcb"
    assert report["kexec"].startswith("kexec refused") and report["online"] == [0, 1]


@scenario_run
def test_snp_kexec_from_the_command_line():
    """kexec-snp builds the SNP machine itself (SevSystemConfig snp=True); the JSON gives each
    AP's start from its VMSA and shows no INIT or SIPI on the bus."""
    report = apwake_json("kexec-snp", "--cpus", "2", status=0)
    assert report["kexec"] == "ok" and report["online"] == [0, 1] and report["corruptions"] == []
    assert [o["op"] for o in report["destroyed"]] == ["DESTROY"]
    started = report["timeline"][1]["started"]
    assert started["by"] == f"SNP AP Creation (VMSA at {report['vmsa']['1']:#x})"
    assert started["state"]["mode"] == "real" and started["state"]["cs"]["base"] == 0x9A000
    assert set(report["bus_messages_by_mode"]) <= {"FIXED"}




def test_the_schema_rejects_a_broken_report():
    """The schema has teeth: a report without ``passed``, or with a state no CPU has, fails."""
    report = {"scenario": "init-sipi", "cpus": 2, "passed": True, "cycles": 1, "build_s": 0.1,
              "build_reused": True, "gate_level": None, "waves": None, "online": [0],
              "failures": [], "sim_time_ns": 10, "guest_time_ns": 10_000, "clock_ns": 10,
              "wall_s": 0.1, "time_scale": 0.001, "options": ScenarioOptions().to_dict(),
              "bus_messages": 0, "bus_messages_by_mode": {}, "corruptions": [],
              "timeline": [{"cpu": 0, "port": 0, "bsp": True, "state": "HALTED", "where": "idle",
                            "ignored_sipis": 0, "nmis": 0, "nmis_collapsed": 0, "smm_entries": 0,
                            "entry": None, "started": None, "events": [[0, "RUNNABLE", "reset"]]}]}
    check_schema(report)
    for broken in ({k: v for k, v in report.items() if k != "passed"},
                   {**report, "timeline": [{**report["timeline"][0], "state": "ASLEEP"}]},
                   {**report, "options": {**report["options"], "time_scale": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            check_schema(broken)


@pytest.fixture
def no_build(monkeypatch):
    """Any build or simulation fails the test: refusals must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("built or simulated before the options were checked")
    monkeypatch.setattr(cli, "_simulate", refuse)


def run_main(capsys, *args):
    status = main(["run", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize(("args", "message"), [
    # the values a new user tried (issue 11 §5)
    (["init-sipi", "--time-scale", "0"], "--time-scale must be a number > 0 and <= 1, not 0"),
    (["init-sipi", "--time-scale", "-1"], "--time-scale must be a number > 0 and <= 1, not -1"),
    (["init-sipi", "--time-scale", "nan"], "--time-scale must be a number > 0 and <= 1, not nan"),
    (["init-sipi", "--callin-timeout-ms", "inf"], "--callin-timeout-ms must be a number > 0, not inf"),
    (["init-sipi", "--cpus", "2", "--unresponsive", "9"],
     "--unresponsive must be an AP port, 1 to 1 (0 is the BSP), not 9"),
    (["init-sipi", "--cpus", "4", "--unresponsive", "0"],
     "--unresponsive must be an AP port, 1 to 3 (0 is the BSP), not 0"),
    (["init-sipi", "--cpus", "1", "--unresponsive", "1"],
     "--unresponsive names an AP, but --cpus 1 has none (port 0 is the BSP)"),
    (["ipi-storm", "--ipis", "-5"], "--ipis must be an integer >= 1, not -5"),
    (["init-sipi", "--callin-timeout-ms", "-1"], "--callin-timeout-ms must be a number > 0, not -1"),
    (["init-sipi", "--nr-cpus", "0"], "--nr-cpus must be an integer >= 1, not 0"),
    # ranges, choices and file names
    (["init-sipi", "--cpus", "4097"], "--cpus must be an integer from 1 to 4096, not 4097"),
    (["init-sipi", "--cpus", "two"], "--cpus must be an integer from 1 to 4096, not two"),
    (["init-sipi", "--timeline", "x.jpg"],
     "--timeline must be a file name ending in .png or .svg, not 'x.jpg'"),
    (["init-sipi", "--waves", "x.vcd"], "--waves must be a file name ending in .fst, not 'x.vcd'"),
    (["init-sipi", "--timeline-axis", "wall"], "--timeline-axis must be one of guest, sim, not 'wall'"),
    (["kexec-mpwk-parking-loop", "--parking-page", "bios"],
     "--parking-page must be one of kernel, firmware, not 'bios'"),
    (["sev-es-boot", "--ghcb-version", "3"], "--ghcb-version must be one of 1, 2, not 3"),
    (["init-sipi", "--gate-level", "xilinx"],
     "--gate-level must be one of generic, ice40, ecp5, not 'xilinx'"),
    (["init-sipi", "--lapic-timer", "hpet"],
     "--lapic-timer must be one of deadline, oneshot, periodic, not 'hpet'"),
    (["init-sipi-smm", "--smm-us", "-1"], "--smm-us must be a number >= 0, not -1"),
    (["init-sipi-smm", "--cpus", "2", "--smm-cpu", "0"],
     "--smm-cpu must be an AP port, 1 to 1 (0 is the BSP), not 0"),
    (["soc-demo", "--cpus", "33"], "--cpus must be an integer from 1 to 32, not 33"),
    (["soc-demo", "--cpus", "1", "--ap-start", "mailbox"],
     "--cpus must be 2 to 32 with --ap-start mailbox (an AP to start), not 1"),
    (["init-sipi", "--cpus"], "--cpus needs a value"),
    (["tdx-host-init", "--cpus", "2", "--smt", "off"],
     "--smt off needs SMT siblings, but the topology 2x1x1 has one thread per core"),
    (["tdx-host-init", "--rounds", "3"], "--rounds must be one of 1, 2, not 3"),
    (["tdx-host-hotplug", "--hotplug-order", "random"],
     "--hotplug-order must be one of tdx-first, kvm-first, not 'random'"),
    # options the scenario does not take: refused, naming who takes them
    (["kexec-mpwk-v0", "--mailbox-version", "1"],
     "--mailbox-version does not apply to kexec-mpwk-v0; mpwk-wakeup, mpwk-offline-online take it"),
    (["init-sipi", "--smm-cpu", "1"], "--smm-cpu does not apply to init-sipi; init-sipi-smm takes it"),
    (["init-sipi", "--ipis", "5"], "--ipis does not apply to init-sipi; ipi-storm takes it"),
    (["sev-es-boot", "--unresponsive", "1"], "--unresponsive does not apply to sev-es-boot"),
    (["soc-demo", "--ap-start", "ghcb", "--no-msr-window"],
     "--ap-start ghcb needs the MSR window (the GHCB MSR is reached through it): leave out --no-msr-window"),
    (["soc-demo", "--apic-storage", "sram"], "--apic-storage must be one of flops, ram, not 'sram'"),
    (["soc-demo", "--time-scale", "0.01"], "--time-scale does not apply to soc-demo; every "
                                           "scenario takes it except soc-demo"),
    (["init-sipi", "--ap-start", "ghcb"], "--ap-start does not apply to init-sipi; soc-demo takes it"),
    (["init-sipi", "--bogus"], "unknown option --bogus; 'apwake run init-sipi --help' lists the options"),
    (["init-sipi", "extra"], "unexpected argument 'extra'"),
    (["no-such-scenario"], "unknown scenario 'no-such-scenario'"),
])
def test_bad_arguments_are_refused_before_any_build(no_build, capsys, args, message):
    """One line on stderr naming the option, the value and what is allowed; exit status 2."""
    status, out, err = run_main(capsys, *args)
    assert status == 2 and out == ""
    assert message in err and err.count("\n") == 1, err


def test_the_bad_arguments_a_user_meets_from_the_shell():
    """The same refusal through the installed entry point's path: status 2, one line."""
    out = run_apwake("run", "init-sipi", "--time-scale", "0")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "apwake run init-sipi: --time-scale must be a number > 0 and <= 1, not 0\n"


@pytest.mark.parametrize(("value", "message"), [
    ("300", "--cluster-size must be 0 (the harness's choice) or 1 to 256, not 300"),
    ("-1", "--cluster-size must be 0 (the harness's choice) or 1 to 256, not -1"),
    ("abc", "--cluster-size must be 0 (the harness's choice) or 1 to 256, not abc"),
])
def test_bench_refuses_a_cluster_size_no_fabric_has(capsys, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--cpus", "8", "--cluster-size", value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("name", "shown", "absent"), [
    ("init-sipi", ["--method", "--unresponsive", "--kvm", "--nr-cpus", "--timeline-axis", "--cpus"],
     ["--ipis", "--smm-cpu", "--ap-start", "--mailbox-version", "--ghcb-version"]),
    ("ipi-storm", ["--ipis", "--seed"], ["--method", "--smm-us"]),
    ("kexec-mpwk-v1", ["--nr-cpus", "--unresponsive"], ["--mailbox-version", "--kvm"]),
    ("sev-es-offline-online", ["--ghcb-version"], ["--unresponsive", "--lapic-timer", "--kvm"]),
    ("soc-demo", ["--ap-start", "--gate-level [FLAVOUR]", "from 1 to 32"],
     ["--time-scale", "--timeline", "--seed", "--nr-cpus"]),
])
def test_help_shows_the_scenarios_options_only(no_build, capsys, name, shown, absent):
    status, out, _ = run_main(capsys, name, "--help")
    assert status == 0 and out.startswith(f"usage: apwake run {name} [options]")
    flags = {line.split()[0] for line in out.splitlines() if line.startswith("  --")}
    for text in shown:
        assert text in out, text
    for flag in absent:
        assert flag not in flags, flag


def test_run_without_a_scenario_lists_them(no_build, capsys):
    status, out, _ = run_main(capsys, "--help")
    assert status == 0 and "soc-demo" in out and "ipi-storm" in out


def test_every_declared_option_sets_a_scenario_options_field():
    """A declaration whose field is misspelt would be dropped silently by from_values."""
    names = set(ScenarioOptions.__dataclass_fields__)
    for scenario in SCENARIOS.values():
        flags = [o.flag for o in scenario.all_options]
        assert len(flags) == len(set(flags)), f"{scenario.name} declares an option twice"
        for option in scenario.all_options:
            assert option.field is None or option.field in names, (scenario.name, option.name)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"type": list}, TypeError, "option x: type must be int, float, str or bool, not <class 'list'>"),
    ({"type": str, "minimum": 0}, ValueError, "option x: a range needs an int or float type, not str"),
    ({"type": bool, "choices": (1, 2)}, ValueError, "option x: a bool option is a flag without a value"),
])
def test_option_declarations_are_checked(kwargs, error, message):
    with pytest.raises(error) as caught:
        Option("x", **kwargs)
    assert str(caught.value) == message


@pytest.fixture
def fake_simulator(monkeypatch):
    """Stands in for the build and the simulator; records what the simulator would get."""
    seen = {}

    class Build:
        binary_reused = True

    class Result:
        gtkw = None
        log_file = Path("sim.log")

    def run_cocotb(the_build, module, *, label, waves_file, extra_env):
        seen.update(module=module, env=extra_env)
        request = ScenarioRequest.from_json(extra_env[ScenarioRequest.ENV])
        Path(request.report).write_text(json.dumps({"passed": True, "stub": True}))
        return Result()

    def build(design, waves, threads=1):
        seen.update(threads=threads)
        return Build()

    monkeypatch.setattr("apwake.sim.harness.build.build", build)
    monkeypatch.setattr("apwake.sim.harness.run.run_cocotb", run_cocotb)
    monkeypatch.setattr(cli, "_print_model", lambda report, axis: None)
    return seen


@pytest.mark.parametrize(("args", "expected"), [
    (["ipi-storm", "--cpus", "4", "--ipis", "7", "--kvm", "--callin-timeout-ms", "2",
      "--unresponsive", "3", "--unresponsive", "2"],
     {"ipis": 7, "sipi_before_init": False, "callin_timeout_us": 2000, "unresponsive": [3, 2]}),
    # the scenario's fixed version is the one the request (and so the report) states
    (["kexec-mpwk-v0", "--cpus", "2"], {"mailbox_version": 0}),
    (["kexec-sev-es-v1", "--cpus", "2", "--force-kexec"], {"ghcb_version": 1, "force_kexec": True}),
])
def test_the_request_travels_in_one_variable(fake_simulator, capsys, args, expected):
    """The simulator gets the design's configuration and one ScenarioRequest, nothing else."""
    assert main(["run", *args]) == 0
    env = fake_simulator["env"]
    request_env = ScenarioRequest.ENV
    (design_env,) = set(env) - {request_env}
    assert design_env.startswith("APWAKE_") and design_env.endswith("_CONFIG")
    request = ScenarioRequest.from_json(env[request_env])
    assert request.scenario == args[0] and request.waves is None
    options = request.options.to_dict()
    assert {key: options[key] for key in expected} == expected
    assert fake_simulator["module"] == "apwake.sim.scenarios.entry"
    assert fake_simulator["threads"] == 1


def test_threads_reach_the_build_not_the_simulator(fake_simulator, capsys):
    """--threads chooses the model's build; the scenario's request does not carry it."""
    assert main(["run", "init-sipi", "--cpus", "2", "--threads", "2"]) == 0
    assert fake_simulator["threads"] == 2
    request = ScenarioRequest.from_json(fake_simulator["env"][ScenarioRequest.ENV])
    assert "threads" not in request.options.to_dict()


@pytest.mark.parametrize(("args", "fabric", "msr_window"), [
    ([], {"storage": "flops", "x2apic_support": True, "local_interrupts": True}, True),
    (["--apic-storage", "ram", "--no-x2apic", "--no-msr-window", "--no-local-interrupts"],
     {"storage": "ram", "x2apic_support": False, "local_interrupts": False}, False),
])
def test_soc_demo_takes_the_board_builds_options(monkeypatch, capsys, args, fabric, msr_window):
    """``soc-demo``'s --apic-storage, --no-x2apic, --no-msr-window and --no-local-interrupts
    make the SoC the simulator gets (so a board's configuration runs as `apwake build` puts it
    in the bitstream)."""
    seen = {}

    def simulate(design, module, **kwargs):
        seen["config"] = design.config
        return {"passed": True}

    monkeypatch.setattr(cli, "_simulate", simulate)
    assert main(["run", "soc-demo", "--cpus", "2", *args, "--json"]) == 0
    config = seen["config"]
    assert {key: getattr(config.fabric, key) for key in fabric} == fabric
    assert config.msr_window is msr_window and config.fabric.n_cpus == 2
    report = json.loads(capsys.readouterr().out)     # and the report says what ran
    assert (report["apic_storage"], report["x2apic"], report["local_interrupts"], report["msr_window"]) == (
        fabric["storage"], fabric["x2apic_support"], fabric["local_interrupts"], msr_window)


def _report(**changes):
    report = {"scenario": "init-sipi", "cpus": 2, "method": "modern", "time_scale": 0.001,
              "timeline": [{"port": 1, "cpu": 1, "bsp": False, "ignored_sipis": 1,
                            "events": [[0, "INIT_RECEIVED", ""],
                                       [10.0, "RUNNABLE", "SIPI 0x9a"],
                                       [1220.0, "HALTED", "hlt"]]}],
              "online": [0, 1], "expected_online": [0, 1], "bus_messages": 4,
              "sim_time_ns": 1220.0, "cycles": 122, "wall_s": 0.5, "failures": [], "passed": True}
    report.update(changes)
    return report


def test_text_report_speaks_guest_time():
    """The SIPI 10 simulated ns in is 10 us of guest time at x0.001; the summary gives
    simulated time, cycles and guest time."""
    text = format_report(_report())
    assert "10us RUNNABLE (SIPI 0x9a)" in text and "1.22ms HALTED (hlt)" in text
    assert "simulated 1.2 us = 122 cycles = 1.22ms guest time" in text
    sim_text = format_report(_report(), axis="sim")
    assert "0.01us RUNNABLE (SIPI 0x9a)" in sim_text and "1.22us HALTED" in sim_text
    at_real_time = format_report(_report(time_scale=1))
    assert "10ns RUNNABLE" in at_real_time


@pytest.mark.parametrize(("tty", "ci", "shown"), [
    (True, None, True), (True, "true", False), (False, None, False)])
def test_progress_only_on_a_terminal_outside_ci(monkeypatch, tty, ci, shown):
    class Stream:
        def isatty(self):
            return tty
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert cli._show_progress(Stream()) is shown


def test_options_scenario_options_and_schema_agree():
    """Each option's default is :class:`ScenarioOptions`' default for its field, and its choices
    and range are what the schema's ``options`` allow: three declarations, kept equal here."""
    defaults = ScenarioOptions().to_dict()
    schema = json.loads(SCHEMA_PATH.read_text())["$defs"]["options"]["properties"]
    assert set(schema) == set(defaults)
    fields = {option.field or option.name: option for scenario in SCENARIOS.values()
              for option in scenario.all_options if option.field is not None}
    assert set(fields) == set(defaults)
    for field, option in fields.items():
        default = option.default
        if option.convert is not None and default is not None:
            default = option.convert(default)
        assert (list(default) if option.repeat else default) == defaults[field], field
        rule = schema[field].get("items", schema[field]) if option.repeat else schema[field]
        if option.choices is not None:
            assert list(option.choices) == rule["enum"], field
        if option.minimum is not None and option.convert is None:
            bound = "exclusiveMinimum" if option.above else "minimum"
            assert rule[bound] == option.minimum, field


def _bsp_notes(report):
    bsp = next(cpu for cpu in report["timeline"] if cpu["bsp"])
    return [event[2] for event in bsp["events"]]


@scenario_run
@pytest.mark.parametrize("args, cpus, note", [
    # the firmware hands every CPU over in x2APIC mode; Linux follows (check_x2apic)
    (("init-sipi-parallel", "--cpus", "8", "--firmware-x2apic", "all"), 8, "switching to x2apic ops"),
    (("init-sipi-parallel", "--topology", "2x16x2", "--firmware-x2apic", "all"), 64, "switching to x2apic ops"),
    # TDX-style: every vCPU in x2APIC mode by default (2 CPUs: the mailbox system the cocotb
    # tests build, for the CI budget; the 8- and 64-CPU x2APIC runs are the bring-ups above)
    (("mpwk-wakeup", "--cpus", "2"), 2, "switching to x2apic ops"),
    # sparse 32-bit IDs: the firmware must (and by default does) hand over in x2APIC mode
    (("init-sipi", "--apic-ids", "0,0x100,0x1234567,7"), 4, "switching to x2apic ops"),
    # an SEV-ES guest whose kernel enables x2APIC itself
    # (2 CPUs: the SEV system the cocotb tests build, for the CI budget)
    (("sev-es-boot", "--cpus", "2", "--x2apic", "phys"), 2, "x2apic: enabled (phys)"),
])
def test_x2apic_scenarios_from_the_command_line(args, cpus, note):
    """The x2APIC world from the command line at 2, 4, 8 and 64 CPUs: every CPU online, the
    kernel in x2APIC mode (its note on the BSP's timeline)."""
    report = apwake_json(*args, status=0)
    assert report["passed"] and report["cpus"] == cpus and len(report["online"]) == cpus, report["failures"]
    assert any(note in text for text in _bsp_notes(report)), _bsp_notes(report)
    if "--apic-ids" in args:
        assert sorted(report["online"]) == [0, 7, 0x100, 0x123_4567]


@scenario_run
@pytest.mark.parametrize("cpus", [2, pytest.param(8, marks=pytest.mark.slow)])   # 8: the CI budget
def test_tdx_host_from_the_command_line(cpus):
    """issue 14: the TDX host's enabling from the shell at 2 and 8 CPUs, both variants: the same
    end state, the IPI counts in the JSON (one round half the enabling IPIs of two), every IPI
    the kernel counted one FIXED message on the fabric."""
    reports = {rounds: apwake_json("tdx-host-init", "--cpus", str(cpus), "--rounds", str(rounds), status=0)
               for rounds in (1, 2)}
    for rounds, report in reports.items():
        tdx = report["tdx_host"]
        assert report["passed"] and tdx["module"]["ready"], report["failures"]
        assert tdx["module"]["lp_initialized"] == tdx["vmx_root"] == list(range(cpus))
        assert tdx["enable_ipis"] == rounds          # one all-but-self IPI per round
        assert tdx["ipi_deliveries"] == (rounds + 1) * (cpus - 1) + 1   # and WBINVD, KEY.CONFIG
        assert tdx["ipis_total"] == report["bus_messages_by_mode"]["FIXED"]
    strict = apwake_json("tdx-host-init", "--cpus", str(cpus), "--tdx-rule", "strict", "--nr-cpus",
                         str(cpus - 1), status=1)
    assert strict["tdx_host"]["module"]["uninitialized_lps"] == [cpus - 1]


@scenario_run
def test_the_unfixed_kernel_strands_every_ap_from_the_command_line():
    """--x2apic-unfixed on a BSP-only x2APIC hand-over, parallel bring-up: the run fails, each
    AP named (the first died reading its APIC ID, the others spin on the trampoline lock)."""
    report = apwake_json("init-sipi-parallel", "--cpus", "4", "--firmware-x2apic", "bsp", "--x2apic-unfixed",
                         status=1)
    assert report["online"] == [0]
    assert sorted({f["cpu"] for f in report["failures"]}) == [1, 2, 3]
    wheres = [f["where"] for f in report["failures"]]
    assert sum("unmapped xAPIC MMIO page" in w for w in wheres) >= 1, wheres


def test_soc_demo_names_the_cores_that_faulted(capsys):
    """A trapped core and a core whose access no window answered are named by index, so a
    FAILED soc-demo says which core went astray (the interconnect's bus_error, SERV's only check)."""
    report = {"transcript": "BSP up\n", "leds": 0b01, "cycles": 900, "passed": False, "waves": None,
              "trap": 0b10, "bus_error": 0b101}
    cli._print_soc(report)
    out = capsys.readouterr().out
    assert "trapped: core 1\n" in out
    assert "an access no window answers (a runaway fetch, a store to nowhere): core 0, 2\n" in out
    cli._print_soc(dict(report, trap=0, bus_error=0, passed=True))
    out = capsys.readouterr().out
    assert "trapped" not in out and "no window" not in out and "PASSED" in out
