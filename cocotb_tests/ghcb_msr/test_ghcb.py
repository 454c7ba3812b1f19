"""GHCB MSR unit block tests: protocol ranges 1-2, 1-1 and 3-4 (no overlap with Linux), an SNP VM
(AP Creation, sparse APIC IDs), a BSP not on vCPU 0."""

from apwake.sim.vip.ghcb_msr.design import GhcbConfig, GhcbDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [
    GhcbConfig(n_vcpus=3, max_version=2),
    GhcbConfig(n_vcpus=2, max_version=1),
    # sparse APIC IDs (AP Creation names its target by APIC ID) and SEV features beyond SNPActive
    GhcbConfig(n_vcpus=4, bsp_index=2, max_version=2, snp=True, cbit=47,
               apic_ids=(0x3, 0x10, 0x7, 0x101), vmsa_features=0x21),
    GhcbConfig(n_vcpus=2, min_version=3, max_version=4),     # no overlap with Linux's 1-2
]

#: the seeded pass: version 1 alone, 1-2 with SNP (3 vCPUs of version 1-2 add nothing to it), 3-4
test_ghcb = cocotb_tests("cocotb_tests.ghcb_msr.tb_ghcb", CONFIGS, design=GhcbDesign, jitter=CONFIGS[1:])
