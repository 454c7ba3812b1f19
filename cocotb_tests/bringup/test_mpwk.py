"""TDX-style bring-up through the MP wakeup mailbox on 2 CPUs (both versions at 8 and 64 under
``-m slow``, for the CI budget: the paths are the same at 2 CPUs, and the mailbox scenarios run
on 8 CPUs in CI in tests/test_timeskip.py)."""

import pytest

from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.vip.mpwk_mailbox.design import MpwkSystemConfig, MpwkSystemDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [MpwkSystemConfig(FabricConfig.contiguous(2), version=v) for v in (1, 0)]

test_mpwk = cocotb_tests("cocotb_tests.bringup.tb_mpwk", CONFIGS, design=MpwkSystemDesign, jitter=True)

#: both versions at 8 CPUs: `python -m pytest -m slow` (not in CI, whose budget is 20 minutes)
test_mpwk_8 = cocotb_tests("cocotb_tests.bringup.tb_mpwk",
                           [MpwkSystemConfig(FabricConfig.contiguous(8), version=v) for v in (1, 0)],
                           design=MpwkSystemDesign, marks=[pytest.mark.slow])

#: 64 CPUs, both versions: `python -m pytest -m slow` (not in CI: one more 40 s build each)
test_mpwk_64 = cocotb_tests("cocotb_tests.bringup.tb_mpwk",
                            [MpwkSystemConfig(FabricConfig.contiguous(64), version=v) for v in (1, 0)],
                            design=MpwkSystemDesign, marks=[pytest.mark.slow])

#: a 1-vCPU guest (the mailbox with no AP behind it)
test_mpwk_single = cocotb_tests("cocotb_tests.bringup.tb_mpwk_single",
                                [MpwkSystemConfig(FabricConfig.contiguous(1), version=0)],
                                design=MpwkSystemDesign, jitter=True)

#: firmware acknowledging by clearing WakeupVector (docs/spec/mpwk.md §7 #21)
test_mpwk_ack_bug = cocotb_tests(
    "cocotb_tests.bringup.tb_mpwk_ack_bug",
    [MpwkSystemConfig(FabricConfig.contiguous(3), ack_clears="wakeup_vector")], design=MpwkSystemDesign,
    jitter=True)
