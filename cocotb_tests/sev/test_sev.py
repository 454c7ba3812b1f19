"""SEV-ES scenarios on 2 CPUs with the hypervisor's protocol ranges 1-2 and 1-1, SEV-SNP (AP
Creation) on 3 (two APs: an AP Creation refused while the next is accepted, per-AP VMSAs); all
three on 8 CPUs under ``-m slow`` (the CI budget)."""

import pytest

from apwake.sim.vip.ghcb_msr.design import SevSystemConfig, SevSystemDesign
from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = ([SevSystemConfig(FabricConfig.contiguous(2), max_version=2)]
           + [SevSystemConfig(FabricConfig.contiguous(2), max_version=1)]
           + [SevSystemConfig(FabricConfig.contiguous(3), snp=True)])

test_sev = cocotb_tests("cocotb_tests.sev.tb_sev", CONFIGS, design=SevSystemDesign, jitter=CONFIGS[:3])  # 2 CPUs

#: versions 1-1 and 1-2 and SNP at 8 CPUs: `python -m pytest -m slow` (not in CI, whose budget
#: is 20 minutes)
test_sev_8 = cocotb_tests("cocotb_tests.sev.tb_sev",
                          [SevSystemConfig(FabricConfig.contiguous(8), max_version=v) for v in (1, 2)]
                          + [SevSystemConfig(FabricConfig.contiguous(8), snp=True)],
                          design=SevSystemDesign, marks=[pytest.mark.slow])
