from sim.lapic.design import FabricConfig
from sim.pytest_plugin import cocotb_tests
test_smoke = cocotb_tests("cocotb_tests.lapic.tb_smoke", [FabricConfig.contiguous(n) for n in (8, 64)])
