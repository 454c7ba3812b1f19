"""A component that stands for a module converted to Verilog on its own.

Amaranth writes one Verilog module per instance, so N identical APICs would be converted and
compiled N times.  :class:`SeparateModule` has the same signature as the component it stands
for and elaborates to an ``Instance`` of a module converted once; the simulation harness
(:mod:`apwake.sim.harness.build`) supplies that module's Verilog.  Any design can use it through a factory
argument (see :class:`apwake.rtl.lapic.fabric.ApicFabric`).
"""

from amaranth import ClockSignal, Instance, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow

__all__ = ["SeparateModule", "port_name"]


def port_name(path):
    """The Verilog port name Amaranth gives a signature member at ``path``."""
    return "__".join(str(part) for part in path)


class SeparateModule(wiring.Component):
    """An ``Instance`` of ``module_name`` with the ports of ``signature``.

    Parameters
    ----------
    signature : wiring.Signature
        Signature of the component that was converted as ``module_name`` (with its ``sync``
        domain giving ``clk`` and ``rst``).
    module_name : str
    """

    def __init__(self, signature, module_name):
        if not isinstance(module_name, str) or not module_name.isidentifier():
            raise ValueError(f"module_name must be a Verilog identifier, not {module_name!r}")
        self.module_name = module_name
        super().__init__(signature)

    def elaborate(self, platform):
        # Returning the Instance itself (not a Module around it) keeps Amaranth from writing a
        # wrapper module per instance.
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in self.signature.flatten(self):
            prefix = "i_" if member.flow is Flow.In else "o_"
            ports[prefix + port_name(path)] = value
        return Instance(self.module_name, **ports)
