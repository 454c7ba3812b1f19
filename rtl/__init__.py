"""Register-transfer hardware of apwake, written in Amaranth.

Each block lives in its own folder: :mod:`rtl.lapic` (local APICs and the IPI fabric),
:mod:`rtl.mpwk_mailbox` and :mod:`rtl.ghcb_msr` (later issues).  The RTL knows nothing of
cocotb; simulation models reach it only through its signatures and register layouts.
"""
