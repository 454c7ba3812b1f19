"""SERV (Olof Kindgren's bit-serial RISC-V core, from the ``pythondata-cpu-serv`` package) as a
soft-SoC core: ``serv_rf_top`` (the core with its register file in a RAM) behind
:class:`~.serv_bus.ServBusAdapter`, with the same ports as :class:`~.picorv32.PicoRV32`
(issue 16).

The core is not written here: its Verilog is added to the build as it ships
(:func:`verilog_sources`)."""

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.checks import check_bool
from .picorv32 import NativeBusSignature
from .serv_bus import ServBusAdapter

__all__ = ["core_reset", "Serv", "verilog_sources", "SERV_FILES"]

#: the Verilog of ``serv_rf_top`` and what it instantiates (the "core" fileset of ``serv.core``)
SERV_FILES = ("serv_rf_top.v", "serv_rf_ram_if.v", "serv_rf_ram.v", "serv_top.v", "serv_state.v",
              "serv_decode.v", "serv_immdec.v", "serv_bufreg.v", "serv_bufreg2.v", "serv_ctrl.v",
              "serv_alu.v", "serv_rf_if.v", "serv_mem_if.v", "serv_csr.v", "serv_aligner.v",
              "serv_compdec.v")


def verilog_sources():
    """``{file name: text}`` of SERV's Verilog (:data:`SERV_FILES`) from the installed package.

    Several of SERV's files set ```default_nettype none`` without setting it back; each text
    here ends with ```default_nettype wire`` so that files read after it are unaffected.

    Raises
    ------
    ImportError
        ``pythondata_cpu_serv`` is not installed (apwake's ``[soc]`` extra).
    """
    try:
        import pythondata_cpu_serv
    except ImportError:
        # the RTL layer cannot use the harness's import_extra; the same message
        raise ImportError("the soft-SoC's SERV cores need pythondata_cpu_serv, from apwake's [soc] "
                          "extra: pip install 'apwake[soc]'") from None
    rtl = Path(pythondata_cpu_serv.data_location) / "rtl"
    return {name: (rtl / name).read_text() + "\n`default_nettype wire\n" for name in SERV_FILES}


def core_reset(m, run, *, registered):
    """A core's reset in ``m``: high while the sync domain resets or ``run`` is low,
    combinationally; with ``registered`` the same one cycle late, from a flip-flop (which powers
    up at 1 and which the domain's reset sets to 1: high from the cycle after the domain's reset
    starts until the cycle after it ends, then ``~run`` of the cycle before)."""
    if not registered:
        return ResetSignal(allow_reset_less=True) | ~run
    reset = Signal(init=1, name="core_reset")
    m.d.sync += reset.eq(~run)
    return reset


class Serv(wiring.Component):
    """One SERV core on the SoC's per-core bus.

    ``serv_rf_top`` with ``WITH_CSR=0`` (RV32I without Zicsr, interrupts or exceptions: the
    firmware uses none), ``COMPRESSED=0``, ``MDU=0``, ``RF_WIDTH=2`` (the register file is a
    512 x 2-bit RAM, one iCE40 block RAM), ``PRE_REGISTER=1`` and ``RESET_STRATEGY="MINI"``
    (SERV documentation, ``doc/interface.rst``, "Parameters").  ``MINI`` resets what restarts
    execution at ``RESET_PC``, not the register file: sp is not set at reset (nor is it on
    PicoRV32, whose STACKADDR the SoC leaves unset), so the firmware's entry code sets it (``firmware/crt0.S``).

    Parameters
    ----------
    reset_address : int
        ``RESET_PC``: where the core starts after reset, a multiple of 4 below 2**32.
    registered_reset : bool
        SERV's reset (the domain's reset or ``run`` low) from a flip-flop beside the core, one
        cycle later, instead of through logic: SERV gates its bus requests with its reset
        (``o_ibus_cyc = ibus_cyc & !i_rst``, ``rtl/serv_state.v``), so without it the reset
        net and ``run``, both from across the device, lead through the core's ``valid`` into
        the shared bus's arbiter (the 32-core ECP5 build's critical path, 34.0 ns:
        synth/REPORT.md "ulx3s-timing").  The SoC sets it for large builds (its fabric's
        ``pipelined``); a core then starts, and stops, one cycle after ``run`` changes.

    Attributes
    ----------
    bus : Out(NativeBusSignature())
        The per-core bus (through :class:`~.serv_bus.ServBusAdapter`).
    run : In(1)
        Low holds the core in reset (an AP waiting for SIPI); SERV's reset is synchronous.
    trap : Out(1)
        Always 0: SERV detects neither illegal instructions nor, with ``WITH_CSR=0``,
        misaligned accesses (its README: "Don't feed serv any illegal instructions").

    Raises
    ------
    ValueError
        ``reset_address`` is not a multiple of 4 in 0 to 2**32 - 4.
    TypeError
        ``registered_reset`` is not a bool.
    """

    def __init__(self, *, reset_address, registered_reset=False):
        if not isinstance(reset_address, int) or reset_address % 4 or not 0 <= reset_address < 1 << 32:
            raise ValueError(f"reset_address must be a multiple of 4 from 0 to 0xFFFFFFFC, "
                             f"not {reset_address!r}")
        self.reset_address = reset_address
        self.registered_reset = check_bool("registered_reset", registered_reset)
        super().__init__({"bus": Out(NativeBusSignature()), "run": In(1), "trap": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.adapter = adapter = ServBusAdapter()
        wiring.connect(m, adapter.bus, wiring.flipped(self.bus))
        ibus, dbus = adapter.ibus, adapter.dbus
        reset = core_reset(m, self.run, registered=self.registered_reset)
        m.d.comb += adapter.reset.eq(reset)
        m.submodules.core = Instance(
            "serv_rf_top",
            p_RESET_PC=self.reset_address, p_COMPRESSED=0, p_MDU=0, p_PRE_REGISTER=1,
            p_RESET_STRATEGY="MINI", p_WITH_CSR=0, p_RF_WIDTH=2,
            i_clk=ClockSignal(), i_i_rst=reset,
            i_i_timer_irq=0,
            o_o_ibus_adr=ibus.adr, o_o_ibus_cyc=ibus.cyc, i_i_ibus_rdt=ibus.rdt, i_i_ibus_ack=ibus.ack,
            o_o_dbus_adr=dbus.adr, o_o_dbus_dat=dbus.dat, o_o_dbus_sel=dbus.sel, o_o_dbus_we=dbus.we,
            o_o_dbus_cyc=dbus.cyc, i_i_dbus_rdt=dbus.rdt, i_i_dbus_ack=dbus.ack,
            i_i_ext_rd=0, i_i_ext_ready=0,
        )
        m.d.comb += self.trap.eq(0)
        return m
