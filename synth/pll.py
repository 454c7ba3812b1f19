"""The ECP5 PLL that runs a board's SoC above its oscillator (issue 16: the ULX3S at 50 MHz from
its 25 MHz crystal).

The EHXPLLL primitive with its output fed back (``FEEDBK_PATH="CLKOP"``), as nextpnr's
``ecppll`` tool writes it: ``f_out = f_in * CLKFB_DIV / CLKI_DIV`` and the VCO at
``f_out * CLKOP_DIV``, which must lie in 400 to 800 MHz, the phase-detector input
``f_in / CLKI_DIV`` at 3.125 MHz or more (Lattice FPGA-TN-02200, "ECP5 and ECP5-5G sysCLOCK PLL/DLL
Design and Usage Guide", the PLL's frequency limits; nextpnr ``ecp5/ecppll.cc``).
"""

from dataclasses import dataclass
from fractions import Fraction

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["Ecp5PllConfig", "ecp5_pll_config", "Ecp5Pll"]

_VCO_HZ = (400e6, 800e6)
_PFD_MIN_HZ = 3.125e6
_DIV = range(1, 129)


@dataclass(frozen=True)
class Ecp5PllConfig:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in_hz: float

    @property
    def f_out_hz(self):
        return self.f_in_hz * self.clkfb_div / self.clki_div

    @property
    def vco_hz(self):
        return self.f_out_hz * self.clkop_div


def ecp5_pll_config(f_in_hz, f_out_hz):
    """The dividers that make exactly ``f_out_hz`` from ``f_in_hz`` (both in Hz).

    Raises
    ------
    ValueError
        No divider setting gives ``f_out_hz`` exactly within the VCO and phase-detector limits.
    """
    ratio = Fraction(f_out_hz).limit_denominator(1 << 20) / Fraction(f_in_hz).limit_denominator(1 << 20)
    for clki_div in _DIV:
        clkfb_div = ratio * clki_div
        if clkfb_div.denominator != 1 or clkfb_div.numerator not in _DIV:
            continue
        if f_in_hz / clki_div < _PFD_MIN_HZ:
            break
        for clkop_div in _DIV:
            if _VCO_HZ[0] <= f_out_hz * clkop_div <= _VCO_HZ[1]:
                return Ecp5PllConfig(clki_div, int(clkfb_div), clkop_div, f_in_hz)
    raise ValueError(f"clock: the ECP5 PLL cannot make {f_out_hz / 1e6:g} MHz exactly from "
                     f"{f_in_hz / 1e6:g} MHz (dividers 1 to 128, VCO 400 to 800 MHz, phase detector 3.125 MHz or more)")


class Ecp5Pll(Elaboratable):
    """Drives the ``sync`` domain from ``clk_in`` (the board oscillator, ``f_in_hz``) at
    ``f_out_hz``, held in reset until the PLL locks."""

    def __init__(self, clk_in, f_in_hz, f_out_hz):
        self.clk_in = clk_in
        self.config = ecp5_pll_config(f_in_hz, f_out_hz)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.domains.sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            # nextpnr reads these to constrain the output clock from the input's
            a_FREQUENCY_PIN_CLKI=f"{c.f_in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{c.f_out_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=c.clki_div, p_CLKFB_DIV=c.clkfb_div, p_CLKOP_DIV=c.clkop_div,
            p_CLKOP_CPHASE=c.clkop_div - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=self.clk_in, i_CLKFB=ClockSignal("sync"), i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=ClockSignal("sync"), o_LOCK=locked)
        m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
        return m
