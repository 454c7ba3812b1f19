"""The local APIC block tests, each cocotb testbench on each fabric configuration."""

from sim.lapic.design import FabricConfig
from sim.pytest_plugin import cocotb_tests

#: N = 1, 2, 8 and 64; the 8-CPU fabric has sparse APIC IDs and its BSP on port 2.
CONFIGS = [
    FabricConfig.contiguous(1),
    FabricConfig.contiguous(2),
    FabricConfig((0x03, 0x10, 0x21, 0x07, 0x40, 0x11, 0x2A, 0xFE), bsp_index=2),
    FabricConfig.contiguous(64),
]

#: a small-FPGA configuration: 64 implemented vectors
SMALL = FabricConfig.contiguous(4, n_vectors=64)

test_registers = cocotb_tests("cocotb_tests.lapic.tb_registers", CONFIGS + [SMALL])
test_ipi = cocotb_tests("cocotb_tests.lapic.tb_ipi", CONFIGS + [SMALL])
test_storm = cocotb_tests("cocotb_tests.lapic.tb_storm", CONFIGS)
