"""The SoC's UART transcript: every byte software sends (``uart_valid``/``uart_data``), as text,
collected without waking Python on idle clocks."""

from cocotb.triggers import ReadOnly, RisingEdge

from apwake.sim.harness.deadline import Deadline

__all__ = ["UartMonitor"]


class UartMonitor:
    def __init__(self, dut):
        self.clk, self._valid, self._data = dut.clk, dut.uart_valid, dut.uart_data
        self.text = ""

    async def run(self):
        while True:
            await RisingEdge(self._valid)
            await ReadOnly()
            self.text += chr(int(self._data.value))
            await RisingEdge(self.clk)

    async def wait_for(self, needle, *, timeout_ns):
        """Until ``needle`` is in the transcript; False after ``timeout_ns``."""
        deadline = Deadline(timeout_ns)
        while needle not in self.text:
            if not await deadline.wait(RisingEdge(self._valid)):
                return needle in self.text
            await RisingEdge(self.clk)
        return True
