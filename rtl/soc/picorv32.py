"""PicoRV32 (YosysHQ, from the ``pythondata-cpu-picorv32`` package) as an Amaranth component.

The core is not written here: its Verilog is added to the build as it ships, and this wrapper
instantiates it with a typed signature (the native memory interface)."""

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PicoRV32", "NativeBusSignature", "verilog_source"]


def verilog_source():
    """``(file name, text)`` of picorv32.v from the installed package."""
    try:
        import pythondata_cpu_picorv32
    except ImportError:
        # the RTL layer cannot use the harness's import_extra; the same message
        raise ImportError("the soft-SoC needs pythondata_cpu_picorv32, from apwake's [soc] extra: "
                          "pip install 'apwake[soc]'") from None
    path = Path(pythondata_cpu_picorv32.data_location) / "picorv32.v"
    return path.name, path.read_text()


class NativeBusSignature(wiring.Signature):
    """PicoRV32's native memory interface, core view: ``valid`` until ``ready``; ``wstrb`` zero
    for reads; ``rdata`` sampled with ``ready``."""

    def __init__(self):
        super().__init__({
            "valid": Out(1), "instr": Out(1), "addr": Out(32), "wdata": Out(32),
            "wstrb": Out(4), "ready": In(1), "rdata": In(32),
        })


class PicoRV32(wiring.Component):
    """Parameters: ``reset_address`` (PROGADDR_RESET).  ``run`` low holds the core in reset
    (an AP waiting for SIPI).  RV32I with the dual-port register file and counters; no MUL/DIV,
    no compressed ISA, no IRQ.  STACKADDR keeps its default (sp is not set at reset): the
    firmware's entry code sets sp (``firmware/crt0.S``), as it must for SERV, and so the cores
    of one reset address are one module with one set of parameters."""

    def __init__(self, *, reset_address):
        self.reset_address = reset_address
        super().__init__({"bus": Out(NativeBusSignature()), "run": In(1), "trap": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = Instance(
            "picorv32",
            p_ENABLE_COUNTERS=1, p_ENABLE_COUNTERS64=0, p_ENABLE_REGS_DUALPORT=1,
            p_ENABLE_MUL=0, p_ENABLE_DIV=0, p_COMPRESSED_ISA=0, p_ENABLE_IRQ=0,
            p_CATCH_MISALIGN=1, p_CATCH_ILLINSN=1, p_TWO_STAGE_SHIFT=1,
            p_PROGADDR_RESET=self.reset_address,
            i_clk=ClockSignal(), i_resetn=~ResetSignal(allow_reset_less=True) & self.run,
            o_trap=self.trap,
            o_mem_valid=self.bus.valid, o_mem_instr=self.bus.instr, i_mem_ready=self.bus.ready,
            o_mem_addr=self.bus.addr, o_mem_wdata=self.bus.wdata, o_mem_wstrb=self.bus.wstrb,
            i_mem_rdata=self.bus.rdata,
            i_pcpi_wr=0, i_pcpi_rd=0, i_pcpi_wait=0, i_pcpi_ready=0, i_irq=0,
        )
        return m

