"""Scenarios run from the command line (``apwake demo``); each is a cocotb module that writes a
JSON report to the path in ``APWAKE_REPORT``."""
