"""The apwake command line, run as a user runs it."""

import json
import subprocess
import sys

import pytest

from sim.build import REPO_ROOT


def scenario_run(test):
    """Mark ``test`` as one that runs a scenario: it builds (or reuses) a Verilator model.  The
    runs share one pytest-xdist worker, as the command line writes its report to
    ``build/scenarios/<scenario>-n<cpus>.json``, one file for every run of a scenario and CPU
    count."""
    return pytest.mark.xdist_group("apwake-run")(pytest.mark.verilator(test))


def apwake(*args):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def test_list_names_every_scenario():
    out = apwake("list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["init-sipi", "init-sipi-smm", "init-sipi-broadcast", "init-sipi-parallel", "mpwk-wakeup",
                     "mpwk-offline-online", "kexec-mpwk-v0", "kexec-mpwk-v1",
                     "kexec-mpwk-parking-loop", "ipi-storm", "sev-es-boot",
                     "sev-es-offline-online", "kexec-sev-es-v2", "kexec-sev-es-v1", "soc-demo"]


@scenario_run
def test_run_json_and_timeline(tmp_path):
    picture = tmp_path / "boot.png"
    out = apwake("run", "init-sipi", "--cpus", "2", "--json", "--timeline", str(picture))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    for key in ("scenario", "cpus", "passed", "online", "failures", "sim_time_ns", "cycles",
                "wall_s", "waves"):
        assert key in report, key
    assert report["passed"] and report["online"] == [0, 1] and report["failures"] == []
    assert report["cycles"] == report["sim_time_ns"] // 10 > 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@scenario_run
def test_stuck_ap_fails_with_a_report():
    """--unresponsive: an AP stuck in SMM; the failure names it, SMM and the SMI handler."""
    out = apwake("run", "init-sipi", "--cpus", "2", "--unresponsive", "1",
                 "--callin-timeout-ms", "1")
    assert out.returncode == 1
    assert "FAILURE CPU 1 (APIC ID 0x1, SMM)" in out.stdout
    assert "did not answer within 0.001 s (guest time); it is SMM at SMM: firmware SMI handler" in out.stdout
    assert out.stdout.rstrip().endswith("FAILED")


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
    out = apwake("run", "init-sipi-smm", "--cpus", "2", "--smm-cpu", "1", "--json", *args)
    assert out.returncode == (0 if passed else 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    smm = report["smm"]
    assert (smm["cpu"], smm["port"], smm["outcome"]) == (1, 1, outcome), smm
    assert report["passed"] is passed and report["online"] == ([0, 1] if passed else [0])
    assert "SMM" in [event[1] for event in report["timeline"][1]["events"]]


@scenario_run
def test_parking_loop_json_reports_stranded_aps():
    """Plan B with nr_cpus=1: the JSON names kernel 2's stranded AP and why (issue 4 §3)."""
    out = apwake("run", "kexec-mpwk-parking-loop", "--cpus", "2", "--nr-cpus", "1",
                 "--callin-timeout-ms", "100", "--json")
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout)
    kernel1, kernel2 = report["kernels"]
    assert kernel1["online"] == [0] and kernel2["online"] == [0]
    (stranded,) = kernel2["stranded"]
    assert stranded["cpu"] == 1 and "patched MADT" in stranded["reason"]
    assert report["parking"]["page"] == "kernel" and report["corruptions"] == []


@scenario_run
def test_sev_kexec_refusal_from_the_command_line():
    """kexec-sev-es-v1 builds the protocol-1 platform itself and reports the refusal."""
    out = apwake("run", "kexec-sev-es-v1", "--cpus", "2", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["ghcb_version"] == 1 and report["hold_form"] == "ghcb"
    assert report["kexec"].startswith("kexec refused") and report["online"] == [0, 1]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["run", "init-sipi", "--cpus", "256"], "--cpus must be 1 to 255, not 256"),
    (["run", "init-sipi", "--timeline", "x.jpg"], "--timeline must end in .png or .svg"),
    (["run", "kexec-mpwk-parking-loop", "--parking-page", "bios"], "--parking-page: invalid choice: 'bios'"),
    (["run", "sev-es-boot", "--ghcb-version", "3"], "--ghcb-version: invalid choice: 3"),
    (["run", "init-sipi", "--gate-level", "xilinx"], "--gate-level: invalid choice: 'xilinx'"),
    (["run", "init-sipi-smm", "--smm-us", "-1"], "--smm-us must be >= 0, not -1"),
    (["run", "init-sipi-smm", "--cpus", "2", "--smm-cpu", "0"],
     "--smm-cpu must name an AP port (1 to 1), not 0"),
    (["run", "init-sipi", "--cpus", "4", "--unresponsive", "4"],
     "--unresponsive must name an AP port (1 to 3), not 4"),
])
def test_bad_arguments(args, message):
    out = apwake(*args)
    assert out.returncode == 2 and message in out.stderr
