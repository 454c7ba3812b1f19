"""A component that stands for a module converted to Verilog on its own.

Amaranth writes one Verilog module per instance, so N identical APICs would be converted and
compiled N times.  :class:`SeparateModule` has the same signature as the component it stands
for and elaborates to an ``Instance`` of a module converted once; the simulation harness
(:mod:`apwake.sim.harness.build`) supplies that module's Verilog.  Any design can use it through a factory
argument (see :class:`apwake.rtl.lapic.fabric.ApicFabric`).
"""

from amaranth import Cat, ClockSignal, Instance, Module, ResetSignal, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

__all__ = ["SeparateModule", "PackedPorts", "packed_widths", "port_name"]

#: the two ports of a packed module (:class:`PackedPorts`)
PACKED_IN, PACKED_OUT = "packed_in", "packed_out"


def port_name(path):
    """The Verilog port name Amaranth gives a signature member at ``path``."""
    return "__".join(str(part) for part in path)


def _members(component, flow):
    """``component``'s signature members of direction ``flow``, as values, in signature order."""
    return [value for _, member, value in component.signature.flatten(component)
            if member.flow is flow]


def packed_widths(signature):
    """``(input bits, output bits)`` of ``signature``'s members, as :class:`PackedPorts` packs them."""
    widths = {Flow.In: 0, Flow.Out: 0}
    for _, member, _ in signature.flatten(signature.create()):
        widths[member.flow] += Shape.cast(member.shape).width
    return widths[Flow.In], widths[Flow.Out]


class PackedPorts(wiring.Component):
    """``component`` with all its inputs as one port and all its outputs as another.

    A Verilator hierarchical block is called through a wrapper that copies every port in each
    evaluation phase; the generated code grows with the number of ports per instance (about
    40 for a local APIC), not with their width.  Converted around this wrapper, a module has two
    ports, ``packed_in`` and ``packed_out``: the members of ``component``'s signature
    concatenated in signature order, first member in the low bits.  :class:`SeparateModule`
    with ``packed=True`` instantiates it with the same order.

    Parameters
    ----------
    component : wiring.Component
        Converted inside the wrapper, unchanged.
    """

    def __init__(self, component):
        self.inner = component
        n_in, n_out = packed_widths(component.signature)
        super().__init__({PACKED_IN: In(max(n_in, 1)), PACKED_OUT: Out(max(n_out, 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        inputs = Cat(*_members(self.inner, Flow.In))
        outputs = Cat(*_members(self.inner, Flow.Out))
        if len(inputs):
            m.d.comb += inputs.eq(getattr(self, PACKED_IN))
        if len(outputs):
            m.d.comb += getattr(self, PACKED_OUT).eq(outputs)
        return m


class SeparateModule(wiring.Component):
    """An ``Instance`` of ``module_name`` with the ports of ``signature``.

    Parameters
    ----------
    signature : wiring.Signature
        Signature of the component that was converted as ``module_name`` (with its ``sync``
        domain giving ``clk`` and ``rst``).
    module_name : str
    packed : bool
        The module was converted inside :class:`PackedPorts` (two ports for all members).

    Raises
    ------
    ValueError
        ``module_name`` is not a Verilog identifier.
    """

    def __init__(self, signature, module_name, *, packed=False):
        if not isinstance(module_name, str) or not module_name.isidentifier():
            raise ValueError(f"module_name must be a Verilog identifier, not {module_name!r}")
        self.module_name = module_name
        self.packed = bool(packed)
        super().__init__(signature)

    def elaborate(self, platform):
        # Returning the Instance itself (not a Module around it) keeps Amaranth from writing a
        # wrapper module per instance.
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        if self.packed:
            inputs, outputs = _members(self, Flow.In), _members(self, Flow.Out)
            if inputs:
                ports[f"i_{PACKED_IN}"] = Cat(*inputs)
            if outputs:
                ports[f"o_{PACKED_OUT}"] = Cat(*outputs)
            return Instance(self.module_name, **ports)
        for path, member, value in self.signature.flatten(self):
            prefix = "i_" if member.flow is Flow.In else "o_"
            ports[prefix + port_name(path)] = value
        return Instance(self.module_name, **ports)
