"""The soft-SoC simulation: each start mode on the cores that run it in CI, the rest under
``-m slow`` (the CI budget, docs/PERFORMANCE.md "Test runs").

In CI: the iCEBreaker's configuration (synth/boards.py ``sim_config``: 2 PicoRV32 cores, no MSR
window, INIT-SIPI-SIPI; and again with a firmware whose BSP ends with a load no window answers,
which must set its ``bus_error`` bit alone), 4 PicoRV32 cores parked on the MP wakeup mailbox (wakeup,
offline/online, kexec) and started SEV-ES style through the GHCB MSR unit (negotiation, AP reset
hold), and SERV cores (issue 16): the carried state on 3 (one AP started by START, one by
INIT-SIPI).  Also in CI, the boards' other builds as their bitstreams hold them
(``test_soc_boards``, 10 to 20 s each on the development machine, measured 2026-12-02): the
ULX3S's 8 PicoRV32 cores, its 32 SERV cores on the pipelined fabric (about 1.15 million cycles:
40 s, a minute with the build), and the iCEBreaker's 4 SERV cores without and with the MSR
window, and on the latter the GHCB start too, which the UP5K does not hold (synth/REPORT.md: 110%
of its cells) but which exercises the window on that configuration.  Under ``-m
slow``: INIT-SIPI and the carried state on 4 PicoRV32 cores, INIT-SIPI on 2 SERV cores, the
mailbox and GHCB starts on SERV.  The iCEBreaker configuration also runs on the Yosys gate-level
netlist with the RAMs as behavioural arrays (sim/harness/gate_level.py: about 90 s with
synthesis and build); SERV's under ``-m slow``."""

from dataclasses import replace

import pytest

from apwake.sim.vip.lapic.design import FabricConfig
from apwake.sim.harness.pytest_plugin import cocotb_tests
from apwake.sim.vip.soc.design import SocConfig, SocDesign
from apwake.synth.boards import BOARDS, board_variant, sim_config

ICEBREAKER = sim_config(BOARDS["icebreaker"])    # what `apwake build icebreaker` puts in the bitstream
#: 4 SERV cores with the MSR window, APICs without x2APIC mode and with their storage in block
#: RAM: with INIT-SIPI in xAPIC mode, the iCEBreaker build that fills the UP5K (synth/REPORT.md
#: "icebreaker-serv-c4-msr-apicram-nox2apic"); with the GHCB start (the GHCB MSR protocol needs
#: no x2APIC) simulated only, since it does not fit the UP5K
ICEBREAKER_SERV4 = {start: sim_config(board_variant("icebreaker", core="serv", n_cores=4, msr_window=True,
                                                    x2apic=False, apic_storage="ram", ap_start=start))
                    for start in ("sipi", "ghcb")}
PICORV32 = {start: SocConfig(FabricConfig.contiguous(4, n_vectors=32), ap_start=start)
            for start in ("sipi", "mailbox", "ghcb", "context")}
SERV = {start: SocConfig(FabricConfig.contiguous(3 if start == "context" else 2, n_vectors=32),
                         ap_start=start, core="serv")
        for start in ("sipi", "mailbox", "ghcb", "context")}

#: the iCEBreaker's SoC with a firmware whose BSP ends with a load no window answers: its
#: bus_error bit must be set (and only its)
ICEBREAKER_PROBE = replace(ICEBREAKER, probe_bus_error=True)
#: a large build's SoC (the pipelined fabric) with 10 cores: two groups of cores with their own
#: window bus and engine (rtl/soc/window_bus.py), one of 8 and one of 2; the GHCB start parks
#: VMGEXITs there (CI), the mailbox and the carried state under -m slow
PIPELINED10 = {start: SocConfig(FabricConfig.contiguous(10, n_vectors=32, local_interrupts=False, pipelined=True),
                                ram_bytes=16384, ap_start=start)
               for start in ("ghcb", "mailbox", "context")}

test_soc = cocotb_tests("cocotb_tests.soc.tb_soc", [ICEBREAKER, ICEBREAKER_PROBE, PICORV32["mailbox"],
                                                   PICORV32["ghcb"], SERV["context"], PIPELINED10["ghcb"]],
                        design=SocDesign)
test_soc_slow = cocotb_tests("cocotb_tests.soc.tb_soc", [PICORV32["sipi"], PICORV32["context"], SERV["sipi"],
                                                        SERV["mailbox"], SERV["ghcb"], PIPELINED10["mailbox"],
                                                        PIPELINED10["context"]], design=SocDesign,
                             marks=[pytest.mark.slow])
test_soc_gate_level = cocotb_tests("cocotb_tests.soc.tb_soc", [ICEBREAKER], design=SocDesign, gate_level=True)
test_soc_serv_gate_level = cocotb_tests("cocotb_tests.soc.tb_soc", [SERV["sipi"]], design=SocDesign,
                                        gate_level=True, marks=[pytest.mark.slow])
#: the iCEBreaker's 4 SERV cores without the MSR window, as built (synth/REPORT.md "icebreaker-serv-c4")
ICEBREAKER_SERV4_BUILT = sim_config(board_variant("icebreaker", core="serv", n_cores=4))
#: the ULX3S's 32 SERV cores at 50 MHz (synth/REPORT.md "ulx3s-serv-c32-nolocal-apicram-pipe-50mhz"):
#: the pipelined fabric, the APICs' storage in block RAM, no local sources (about 1.15 million
#: cycles, a minute with the build on the development machine)
ULX3S_SERV32 = sim_config(board_variant("ulx3s", core="serv", n_cores=32, clock_mhz=50, local_interrupts=False,
                                        apic_storage="ram", pipelined_fabric=True))
#: the other boards' SoCs as their bitstreams hold them (`apwake build ulx3s`: synth/boards.py
#: BOARDS, sim_config) and the iCEBreaker's 4-SERV variants above
test_soc_boards = cocotb_tests("cocotb_tests.soc.tb_soc",
                               [sim_config(board) for board in BOARDS.values() if sim_config(board) != ICEBREAKER]
                               + [ICEBREAKER_SERV4_BUILT, *ICEBREAKER_SERV4.values(), ULX3S_SERV32],
                               design=SocDesign)
