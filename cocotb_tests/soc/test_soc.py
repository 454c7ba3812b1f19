"""The soft-SoC simulation on 2 and 4 PicoRV32 cores (INIT-SIPI-SIPI start), 4 cores parked on
the MP wakeup mailbox (wakeup, offline/online, kexec), 4 cores started SEV-ES style through the
GHCB MSR unit (negotiation, AP reset hold), and 4 cores started in a carried state through the
start-context unit (START, SET_INITIAL_AP_STATE + INIT-SIPI); and the start modes again on SERV
cores (issue 16): INIT-SIPI on 2 cores and the carried state on 3 (one AP started by START, one
by INIT-SIPI) in CI, the mailbox and GHCB starts under ``-m slow`` (SERV takes about 6 times
PicoRV32's cycles: about 45 s each).  The iCEBreaker configuration (2 PicoRV32 cores, no MSR
window) also runs on the Yosys gate-level netlist with the RAMs as behavioural arrays
(sim/harness/gate_level.py: about 3 minutes with synthesis and build); SERV's under ``-m slow``."""

import pytest

from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.harness.pytest_plugin import cocotb_tests
from apwake.sim.vip.soc.design import SocConfig, SocDesign

ICEBREAKER = SocConfig(FabricConfig.contiguous(2, n_vectors=32, local_interrupts=False),
                       msr_window=False)    # as on the iCEBreaker
CONFIGS = [ICEBREAKER, SocConfig(FabricConfig.contiguous(4, n_vectors=32))] + [
    SocConfig(FabricConfig.contiguous(4, n_vectors=32), ap_start=start) for start in ("mailbox", "ghcb", "context")]
SERV = {start: SocConfig(FabricConfig.contiguous(3 if start == "context" else 2, n_vectors=32),
                         ap_start=start, core="serv")
        for start in ("sipi", "mailbox", "ghcb", "context")}

test_soc = cocotb_tests("cocotb_tests.soc.tb_soc", CONFIGS + [SERV["sipi"], SERV["context"]], design=SocDesign)
test_soc_serv_slow = cocotb_tests("cocotb_tests.soc.tb_soc", [SERV["mailbox"], SERV["ghcb"]], design=SocDesign,
                                  marks=[pytest.mark.slow])
test_soc_gate_level = cocotb_tests("cocotb_tests.soc.tb_soc", [ICEBREAKER], design=SocDesign, gate_level=True)
test_soc_serv_gate_level = cocotb_tests("cocotb_tests.soc.tb_soc", [SERV["sipi"]], design=SocDesign,
                                        gate_level=True, marks=[pytest.mark.slow])
