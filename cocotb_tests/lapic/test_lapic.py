"""The local APIC block tests, each cocotb testbench on each fabric configuration."""

import pytest

from apwake.sim.vip.lapic.design import FabricConfig, FabricDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

#: N = 1, 2, 8 and 64; the 8-CPU fabric has sparse APIC IDs and its BSP on port 2.
CONFIGS = [
    FabricConfig.contiguous(1),
    FabricConfig.contiguous(2),
    # in clusters of 3 (the last with an unused slot), so that every test also covers the
    # clustered fabric's two-level arbitration and lowest-priority pick (rtl/lapic/cluster.py)
    FabricConfig((0x03, 0x10, 0x21, 0x07, 0x40, 0x11, 0x2A, 0xFE), bsp_index=2, cluster_size=3),
    FabricConfig.contiguous(64),
]

#: a small-FPGA configuration: 64 implemented vectors, the storage-only registers (the LVTs
#: without a source) in memory (issue 16's smaller APIC, rtl/lapic/register_file.py)
SMALL = FabricConfig.contiguous(4, n_vectors=64, storage="ram")
#: the smallest boards' APIC: no local sources (so all seven LVTs and the timer's registers are
#: memory words) and no x2APIC mode (the registers and IPIs; tb_local needs the sources, and
#: tb_ipi vectors from 0x20 up, so 64 vectors).  SMALL reads its memory words in x2APIC mode.
RAM_NOLVT = FabricConfig.contiguous(2, n_vectors=64, local_interrupts=False, storage="ram", x2apic_support=False)
#: the pipelined fabric (rtl/lapic/fabric.py ``pipelined``: five cycles from grant to done, the
#: large FPGA builds'), in clusters of 3 so that every pipelined tree is covered (a cluster's
#: groups of 2 and 1, the pick between them, the pick between the clusters)
PIPELINED = FabricConfig((0x03, 0x10, 0x21, 0x07, 0x40, 0x11, 0x2A, 0xFE), bsp_index=2, cluster_size=3,
                         pipelined=True)
#: the configuration `make test` runs again with seeded phases and stalls
SEEDED = [CONFIGS[1]]

test_registers = cocotb_tests("cocotb_tests.lapic.tb_registers", CONFIGS + [SMALL, RAM_NOLVT, PIPELINED],
                             design=FabricDesign,
                             jitter=SEEDED)
test_ipi = cocotb_tests("cocotb_tests.lapic.tb_ipi", CONFIGS[:3] + [SMALL, PIPELINED], design=FabricDesign,
                        jitter=SEEDED)
#: the IPIs without x2APIC mode under -m slow, for the CI budget (tb_registers' test_no_x2apic_mode
#: sends one on that fabric in CI)
test_ipi_nox2apic = cocotb_tests("cocotb_tests.lapic.tb_ipi", [RAM_NOLVT], design=FabricDesign,
                                 marks=[pytest.mark.slow])
test_storm = cocotb_tests("cocotb_tests.lapic.tb_storm", CONFIGS[:3] + [PIPELINED], design=FabricDesign,
                          jitter=SEEDED)
#: the IPIs and the storm on 64 APICs (about a minute each) under -m slow, for the CI budget: the
#: 64-APIC fabric's registers stay in CI (and 64 CPUs boot in tests/test_cli.py
#: test_x2apic_scenarios_from_the_command_line), the IPIs
#: and the storm run on 1, 2, 4 and 8 (sparse, clustered) APICs there
test_ipi_n64 = cocotb_tests("cocotb_tests.lapic.tb_ipi", CONFIGS[3:], design=FabricDesign,
                            marks=[pytest.mark.slow])
test_storm_n64 = cocotb_tests("cocotb_tests.lapic.tb_storm", CONFIGS[3:], design=FabricDesign,
                              marks=[pytest.mark.slow])
#: local interrupt sources (timer, LINT, error LVT) and the ICR/SIPI choices
test_local = cocotb_tests("cocotb_tests.lapic.tb_local", CONFIGS[1:3] + [SMALL, PIPELINED], design=FabricDesign,
                          jitter=SEEDED)

#: issue 6 §5, §6: the fabric block tests on the Yosys gate-level netlist of a 2-APIC fabric with
#: 32 vectors, the size the SoC's boards use (every test also runs on any design with `pytest
#: --gate-level`): the registers (about two minutes with synthesis and build) and the IPIs under
#: -m slow, for the CI budget.  CI runs an APIC fabric at gate level only inside the iCEBreaker
#: SoC's netlist (cocotb_tests/soc/test_soc.py test_soc_gate_level: 2 APICs of 32 vectors without
#: the local sources, driven by the firmware through xAPIC MMIO): the register rules, the x2APIC
#: MSRs, IA32_APIC_BASE and the timer/LINT logic are checked at gate level only under -m slow.
#: The IPI tests send vectors from 0x20 up, which 32 implemented vectors refuse (vectors 16-31
#: only), so they run on 64 at gate level (on 32 they failed, unnoticed under -m slow, from
#: 6c88f02 to this change); the APIC with its storage in memory runs both.
GATE_LEVEL = [FabricConfig.contiguous(2, n_vectors=32)]
GATE_LEVEL_IPI = [FabricConfig.contiguous(2, n_vectors=64)]
test_registers_gate_level = cocotb_tests("cocotb_tests.lapic.tb_registers", GATE_LEVEL + [RAM_NOLVT], gate_level=True,
                                         design=FabricDesign, marks=[pytest.mark.slow])
test_ipi_gate_level = cocotb_tests("cocotb_tests.lapic.tb_ipi", GATE_LEVEL_IPI + [RAM_NOLVT], gate_level=True,
                                   design=FabricDesign, marks=[pytest.mark.slow])

#: issue 10: one driver call is one transfer from every simulation phase (2 CPUs; 4 CPUs of 64
#: vectors under -m slow, for the CI budget)
PHASE = [c for c in CONFIGS if c.label == "n2"] + [SMALL]
test_phase = cocotb_tests("cocotb_tests.lapic.tb_phase", PHASE[:1], design=FabricDesign, jitter=SEEDED)
test_phase_small = cocotb_tests("cocotb_tests.lapic.tb_phase", PHASE[1:], design=FabricDesign,
                                marks=[pytest.mark.slow])
