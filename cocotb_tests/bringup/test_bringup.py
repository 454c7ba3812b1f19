"""INIT-SIPI bring-up with the CPU models on 2 and 8 CPUs (64 under ``-m slow``, for the CI
budget: 64 CPUs still boot in CI from the command line, tests/test_cli.py
``test_x2apic_scenarios_from_the_command_line``, on the same fabric); NMI, SMM, the CPU model's
waits and the x2APIC hand-over on 2 and 4."""

import pytest

from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [FabricConfig.contiguous(n) for n in (2, 8, 64)]

test_bringup = cocotb_tests("cocotb_tests.bringup.tb_bringup", CONFIGS[:2], design=FabricDesign, jitter=CONFIGS[:1])
test_bringup_n64 = cocotb_tests("cocotb_tests.bringup.tb_bringup", CONFIGS[2:], design=FabricDesign,
                                marks=[pytest.mark.slow])

test_smm = cocotb_tests("cocotb_tests.bringup.tb_smm",
                        [FabricConfig.contiguous(n) for n in (2, 4)], design=FabricDesign, jitter=CONFIGS[:1])

#: sparse 32-bit IDs: two above 0xFE (one with cluster bits beyond ID[19:4], which the logical ID
#: drops), and an xAPIC-sized one
WIDE = FabricConfig((0, 0x100, 0x123_4567, 7))
test_x2apic = cocotb_tests("cocotb_tests.bringup.tb_x2apic", [FabricConfig.contiguous(n) for n in (2, 4)] + [WIDE],
                           design=FabricDesign, jitter=[CONFIGS[0], WIDE])
