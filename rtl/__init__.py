"""Register-transfer hardware of apwake, written in Amaranth.

Each block lives in its own folder: :mod:`rtl.lapic` (local APICs and the IPI fabric),
:mod:`rtl.mpwk_mailbox` (the ACPI MP wakeup mailbox), :mod:`rtl.ghcb_msr` (the hypervisor's
GHCB MSR unit) and :mod:`rtl.soc` (the soft-SoC of PicoRV32 cores).  :mod:`rtl.platform` and
:mod:`rtl.sev_platform` join the fabric to the mailbox and to the GHCB unit; :mod:`rtl.bus` and
:mod:`rtl.instance` are shared pieces.  The RTL knows nothing of cocotb; simulation models reach
it only through its signatures and register layouts.
"""
