import cocotb
from sim.lapic.env import FabricEnv

@cocotb.test(timeout_time=100, timeout_unit="us")
async def test_version(dut):
    env = await FabricEnv.start(dut)
    for port in env.ports:
        v = await port.read("VERSION")
        assert v & 0xFF == 0x14, f"{port.name}: VERSION = {v:#x}"
        i = await port.read("ID")
        assert i >> 24 == port.apic_id, f"{port.name}: ID = {i:#x}"
