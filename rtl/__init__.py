"""Register-transfer hardware of apwake, written in Amaranth.

Each block lives in its own folder: :mod:`.lapic` (local APICs and the IPI fabric),
:mod:`.mpwk_mailbox` (the ACPI MP wakeup mailbox), :mod:`.ghcb_msr` (the hypervisor's GHCB MSR
unit), :mod:`.start_context` (the hypervisor's state-carrying AP start: VMI SetInitialAPState,
direct start) and :mod:`.soc` (the soft-SoC of PicoRV32 cores).  :mod:`.system` joins the fabric to
the mailbox and to the GHCB unit; :mod:`.lib` holds the pieces they share.  The RTL knows
nothing of cocotb; simulation models reach it only through its signatures and register layouts.
"""
