"""apwake's simulation side, in one-way layers (lowest first; tests/test_layers.py checks them
with import-linter): :mod:`.harness` (tools), :mod:`.vip` (verification IP per RTL block),
:mod:`.models` (CPUs, firmware and kernels), :mod:`.scenarios` (named runs), and on top the
command line (:mod:`.cli`) and the benchmark (:mod:`.bench`).

Models and tests know the RTL only through its signatures and register layouts.
"""
