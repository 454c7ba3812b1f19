"""SEV-ES scenarios on 2 and 8 CPUs, hypervisor protocol range 1-2 and 1-1; SEV-SNP (AP Creation)
on 2 and 8 CPUs."""

from apwake.sim.vip.ghcb_msr.design import SevSystemConfig, SevSystemDesign
from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = ([SevSystemConfig(FabricConfig.contiguous(n), max_version=v) for v in (2, 1) for n in (2, 8)]
           + [SevSystemConfig(FabricConfig.contiguous(n), snp=True) for n in (2, 8)])

test_sev = cocotb_tests("cocotb_tests.sev.tb_sev", CONFIGS, design=SevSystemDesign)
