"""The soft-SoC simulation on 2 and 4 cores (INIT-SIPI-SIPI start), 4 cores parked on the MP
wakeup mailbox (wakeup, offline/online, kexec), 4 cores started SEV-ES style through the GHCB
MSR unit (negotiation, AP reset hold), and 4 cores started in a carried state through the
start-context unit (START, SET_INITIAL_AP_STATE + INIT-SIPI)."""

from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.harness.pytest_plugin import cocotb_tests
from apwake.sim.vip.soc.design import SocConfig, SocDesign

CONFIGS = [
    SocConfig(FabricConfig.contiguous(2, n_vectors=32, local_interrupts=False),
              msr_window=False),   # as on the iCEBreaker
    SocConfig(FabricConfig.contiguous(4, n_vectors=32))] + [
    SocConfig(FabricConfig.contiguous(4, n_vectors=32), ap_start=start) for start in ("mailbox", "ghcb", "context")]

test_soc = cocotb_tests("cocotb_tests.soc.tb_soc", CONFIGS, design=SocDesign)
