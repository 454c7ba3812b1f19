"""Simulation systems joining blocks, one module each: the APIC fabric with the MP wakeup mailbox
(:mod:`.mpwk`, ``MpwkSystem``), with the GHCB MSR unit (:mod:`.sev`, ``SevSystem``) and with the
start-context unit (:mod:`.pvstart`, ``PvStartSystem``).

The package imports none of them: a design's build cache key covers the RTL modules it imports
(``apwake.sim.harness.build.design_sources``), so a change to one system does not rebuild the
others.
"""
