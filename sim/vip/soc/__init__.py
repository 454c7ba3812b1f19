"""Simulation side of the soft-SoC: design, firmware image, UART transcript monitor."""
