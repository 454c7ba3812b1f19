"""sim/harness/signal_io.py: a Pin reads and writes a port as cocotb's ``handle.value`` does
(cocotb_tests/harness/tb_signal_io.py on a one-CPU fabric)."""

import pytest

from apwake.sim.harness.build import build
from apwake.sim.harness.run import run_cocotb
from apwake.sim.vip.lapic.design import CONFIG_ENV, FabricConfig, FabricDesign

pytestmark = pytest.mark.verilator


@pytest.mark.parametrize("trusted", ["1", "0"])
def test_pin_agrees_with_cocotb(trusted):
    """``trusted``: COCOTB_TRUST_INERTIAL_WRITES, which picks how a Pin writes."""
    config = FabricConfig.contiguous(1)
    result = run_cocotb(build(FabricDesign(config)), "cocotb_tests.harness.tb_signal_io",
                        label=f"signal-io-{trusted}",
                        extra_env={CONFIG_ENV: config.to_json(), "COCOTB_TRUST_INERTIAL_WRITES": trusted})
    assert len(result.outcomes) == 4, result.log_tail()
    assert all(o.passed for o in result.outcomes.values()), result.log_tail()
