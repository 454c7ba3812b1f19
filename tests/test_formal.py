"""The formal proofs (docs/FORMAL.md): every run of :data:`apwake.formal.PROOFS` passes (the
quick ones in the default suite, the rest under ``-m slow``), every cover is reached, and a
deliberate defect in each block is caught with a counterexample.

The runs are marked ``formal``: they run SymbiYosys (one solver process at a time), no Verilator build.
"""

from pathlib import Path

import pytest

from apwake.formal import PROOFS, harness, proofs_of, run
from apwake.formal.props import HarnessBase
from apwake.sim.harness.formal import _name_checks


def _param(proof):
    marks = [pytest.mark.slow] if proof.slow else []
    return pytest.param(proof, id=proof.name, marks=marks)


@pytest.mark.formal
@pytest.mark.parametrize("proof", [_param(p) for p in PROOFS])
def test_proof_passes(proof, tmp_path):
    result = run(proof, workroot=tmp_path)
    assert result.status == "PASS", result.log_tail
    kinds = {"cover"} if proof.mode == "cover" else {"assert"}
    props = [p for p in result.properties if p.kind in kinds]
    assert props, f"{proof.name}: no {kinds} properties found in the run"
    bad = [(p.name, p.status) for p in result.properties if not p.ok]
    assert not bad, f"{proof.name}: {bad}"
    if proof.mode == "cover":
        assert all(p.depth <= proof.depth for p in props)
    else:
        expected = "proved" if proof.mode == "prove" else "pass"
        assert {p.status for p in props} == {expected}


# one deliberate defect per block, and the property its counterexample must name
DEFECTS = [
    ("fabric-xapic3-bmc", "regrant", ("fab_one_message_",)),
    # the pipelined fabric must keep a sender out of the arbiter while its message is in any stage
    ("fabric-x2apic3-c2-pipe-bmc", "regrant", ("fab_one_message_",)),
    ("fabric-x2apic3-c2-pipe-bmc", "mask_last_stage", ("fab_one_message_",)),
    # the answered request leaves Command set: the latch invariant or the acknowledge rule
    ("mailbox-v1-bmc", "edk2_ack", ("mb_inv_pending_iff_command", "mb_wake_acked")),
    ("mailbox-v1-bmc", "unlatched_vector", ("mb_wake_matches_request_ap",)),
    # the testbench driver sees a take from resp_valid one cycle later: a late answer fails
    ("mailbox-v1-bmc", "late_response", ("mb_bus_response",)),
    ("ghcb-es-bmc", "init_while_queued", ("ghcb_no_lost_wake_vcpu1",)),
]


@pytest.mark.formal
@pytest.mark.parametrize(("name", "defect", "prop"), DEFECTS, ids=[f"{n}-{d}" for n, d, _ in DEFECTS])
def test_injected_defect_is_caught(name, defect, prop, tmp_path):
    proof, = (p for p in PROOFS if p.name == name)
    result = run(proof, defect=defect, workroot=tmp_path)
    assert result.status == "FAIL"
    failing = [p for p in result.properties if p.status == "fail"]
    assert failing and all(p.name.startswith(prop) for p in failing), [(p.name, p.status) for p in failing]
    assert failing[0].depth is not None and failing[0].depth <= proof.depth
    for path in (result.waves, result.gtkw, result.text_trace):
        assert path is not None and Path(path).is_file()
    assert Path(result.waves).suffix == ".fst"
    text = Path(result.text_trace).read_text()
    assert f"counterexample for {failing[0].name}" in text and "step   1:" in text


def test_every_block_has_quick_runs_and_a_defect():
    blocks = {p.block for p in PROOFS}
    assert blocks == {"lapic", "mpwk_mailbox", "ghcb_msr"}
    for block in blocks:
        assert {p.mode for p in proofs_of(block)} >= {"bmc", "cover"}
        assert harness(proofs_of(block)[0]).DEFECTS
    assert {d for _, d, _ in DEFECTS} >= {d for p in PROOFS for d in harness(p).DEFECTS}


@pytest.mark.parametrize("block", ["fabric", "mailbox", "ghcb"])
def test_aliases_name_blocks(block):
    assert proofs_of(block)


def test_unknown_block_and_defect_are_refused():
    with pytest.raises(ValueError, match="unknown block 'apic'"):
        proofs_of("apic")
    with pytest.raises(ValueError, match=r"defect must be one of \['edk2_ack', 'late_response', 'unlatched_vector'\]"):
        harness(proofs_of("mailbox")[0], defect="nope")
    assert issubclass(type(harness(proofs_of("ghcb")[0])), HarnessBase)


def test_properties_need_unique_identifier_names():
    cell = ('  cell $check $1\n    parameter \\FORMAT "{}"\n    parameter \\FLAVOR "assert"\n'
            '    connect \\A 1\n  end\n')
    text, flavors = _name_checks(cell.format("ok_name"))
    assert "cell $check \\ok_name" in text and flavors == {"ok_name": "assert"}
    with pytest.raises(ValueError, match="identifier"):
        _name_checks(cell.format("not a name"))
    with pytest.raises(ValueError, match="two formal statements are named 'a'"):
        _name_checks(cell.format("a") + cell.format("a"))


def test_a_failure_in_the_first_step_is_at_step_0():
    """SymbiYosys's summary gives no step for a failure in step 0 (``prove(first_step=True)``):
    the step comes from the engine's last "Checking assertions" line."""
    from apwake.sim.harness.formal import _properties
    run = "SBY 12:00:00 [run] "
    log = "\n".join([
        run + "engine_0: ##   0:00:00  Checking assumptions in step 0..",
        run + "engine_0: ##   0:00:00  Checking assertions in step 0..",
        run + "engine_0: ##   0:00:00  BMC failed!",
        run + "engine_0: ##   0:00:00  Assert failed in top: dut.early",
        run + "summary:   failed assertion top.dut.early at /x/props.py:90",
        run + "DONE (FAIL, rc=2)"])
    props = _properties(log, {"early": "assert", "other": "assert"}, mode="bmc", depth=5, solver="yices",
                        seconds=0, status="FAIL")
    assert [(p.name, p.status, p.depth) for p in props] == [("early", "fail", 0), ("other", "unknown", 5)]
