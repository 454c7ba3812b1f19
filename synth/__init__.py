"""FPGA builds of the soft-SoC (``apwake build BOARD``) and their reports."""
