"""The tool harness, the lowest simulation layer: Verilator builds with a content-hash cache
(:mod:`.build`, :mod:`.toolchain`), cocotb runs (:mod:`.run`), gate-level netlists
(:mod:`.gate_level`), waveforms (:mod:`.waves`), the pytest plugin (:mod:`.pytest_plugin`), and
what every driver shares: the clock (:mod:`.clocking`), the handshake and watchdogs
(:mod:`.handshake`), packing with the RTL's layouts (:mod:`.codec`) and configurations that
travel into the simulator (:mod:`.config`).  It knows no block and no scenario.
"""
