"""Start-context unit block tests: 3 vCPUs with the BSP on vCPU 0, and 4 vCPUs with the BSP on
vCPU 2 and sparse APIC IDs (up to 32 bits)."""

from apwake.sim.harness.pytest_plugin import cocotb_tests
from apwake.sim.vip.start_context.design import StartContextConfig, StartContextDesign

CONFIGS = [
    StartContextConfig(apic_ids=(0, 1, 2), bsp_index=0),
    StartContextConfig(apic_ids=(0x10, 0x3, 0x200, 0xFFFF_FFFE), bsp_index=2),
]

test_start_context = cocotb_tests("cocotb_tests.start_context.tb_start_context", CONFIGS,
                                  design=StartContextDesign, jitter=CONFIGS[1:])     # seeded: the sparse IDs
