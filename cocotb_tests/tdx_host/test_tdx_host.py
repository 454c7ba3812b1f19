"""TDX host initialisation (seed 003) on 2 and 8 CPUs, two packages each (the fabric's builds the
other fabric tests use)."""

from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [FabricConfig.contiguous(n) for n in (2, 8)]

test_tdx_host = cocotb_tests("cocotb_tests.tdx_host.tb_tdx_host", CONFIGS, design=FabricDesign)
#: the offline is started from a third CPU: 8 CPUs only
test_hotplug_lock = cocotb_tests("cocotb_tests.tdx_host.tb_hotplug_lock", CONFIGS[1:], design=FabricDesign)
