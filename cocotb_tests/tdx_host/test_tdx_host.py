"""TDX host initialisation (seed 003) on 2 CPUs in CI and 8 under ``-m slow`` (for the CI budget;
`apwake run tdx-host-init` runs 2 CPUs in tests/test_cli.py, 8 under ``-m slow``), two packages each, and the
hotplug lock on 8 (the fabric's builds the other fabric tests use)."""

import pytest

from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [FabricConfig.contiguous(n) for n in (2, 8)]

test_tdx_host = cocotb_tests("cocotb_tests.tdx_host.tb_tdx_host", CONFIGS[:1], design=FabricDesign, jitter=True)
test_tdx_host_8 = cocotb_tests("cocotb_tests.tdx_host.tb_tdx_host", CONFIGS[1:], design=FabricDesign,
                               marks=[pytest.mark.slow])
#: the offline is started from a third CPU: 8 CPUs only
test_hotplug_lock = cocotb_tests("cocotb_tests.tdx_host.tb_hotplug_lock", CONFIGS[1:], design=FabricDesign,
                                 jitter=True)
