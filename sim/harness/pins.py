"""Tops with more inputs than Amaranth 0.5 converts: the inputs as pins the simulator writes.

Amaranth 0.5 numbers a net ``cell << 16 | bit`` and puts a top module's inputs in one cell, so a
top takes at most 65536 input bits (``Net.from_cell`` in amaranth/hdl/_nir.py); the APIC fabric
needs 106 per CPU (and 32 shared: time skipping's advance), which stops it at 617 CPUs.  A
*pinned* top has no inputs but the clock and reset: each input member of the design's signature
is driven by an instance of
:data:`PIN_MODULE`, a register the simulator writes through VPI (Verilator ``public_flat_rw``),
named like the port it stands for with ``pin__`` in front.  Outputs stay ports.  :func:`port`
finds a signal either way, so drivers need not know which kind of top they drive.

The cost is the same as a port's: Verilator re-evaluates what a ``public_flat_rw`` variable
feeds after a VPI write, as it does for an input.  ``tests/test_pins.py`` runs the same scenario
on a pinned and an ordinary top and compares the reports.
"""

import functools
import json
import os
from pathlib import Path

from amaranth import Elaboratable, Module, Shape, Value
from amaranth.hdl import Instance
from amaranth.lib.wiring import Flow

from apwake.rtl.lib.instance import port_name

__all__ = ["PIN_MODULE", "PIN_VERILOG", "PIN_VAR", "PIN_PREFIX", "TOP_ENV", "pinned_top", "port"]

#: the folder of the running design's Verilog (its ports.json and pins.json), set by
#: :func:`apwake.sim.harness.run.run_cocotb`
TOP_ENV = "APWAKE_TOP_VERILOG"

#: this module's text: part of the Verilog cache key of every design (it shapes pinned tops)
SOURCE = Path(__file__).read_text()

PIN_MODULE = "apwake_pin"
#: the register inside each pin, as the simulator sees it (``dut.pin__<port name>.pin``); the
#: instance cannot take the port's own name, which the net it drives has
PIN_VAR = "pin"
PIN_PREFIX = "pin__"

PIN_VERILOG = f"""\
// An input of a pinned top (apwake.sim.harness.pins): a register only the simulator writes.
module {PIN_MODULE} #(parameter WIDTH = 1) (output [WIDTH-1:0] q);
  reg [WIDTH-1:0] {PIN_VAR} /*verilator public_flat_rw*/ = {{WIDTH{{1'b0}}}};
  assign q = {PIN_VAR};
endmodule
"""


def pinned_top(top):
    """``(elaboratable, ports)`` for :func:`amaranth.back.verilog.convert`: ``top`` inside a
    module that drives each of its inputs from a pin named like the input port, and the output
    ports by name (``{name: (value, None)}``: Amaranth infers the direction)."""
    class _Pinned(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.top = top
            for path, member, value in top.signature.flatten(top):
                if member.flow is Flow.In:
                    width = Shape.cast(member.shape).width
                    m.submodules[PIN_PREFIX + port_name(path)] = Instance(PIN_MODULE, p_WIDTH=width,
                                                                      o_q=value)
            return m

    ports = {port_name(path): (Value.cast(value), None) for path, member, value in top.signature.flatten(top)
             if member.flow is Flow.Out}
    return _Pinned(), ports


@functools.cache
def _top(folder):
    """``(ports, pinned)``: the top's port names and those of them that are pins."""
    folder = Path(folder)
    pins = folder / "pins.json"
    return (frozenset(json.loads((folder / "ports.json").read_text())),
            frozenset(json.loads(pins.read_text())) if pins.exists() else frozenset())


def port(dut, name, default=...):
    """The signal handle for port ``name`` of ``dut``: the port itself, or the register of the
    pin that stands for it on a pinned top.  ``default`` (when given) for a name ``dut`` lacks;
    otherwise AttributeError.

    The port list of the running design (:data:`TOP_ENV`) says which it is, so the simulator is
    never asked for a name it lacks: cocotb answers a miss by scanning the scope through VPI,
    and Verilator allocates a handle per child it visits.  At 1024 CPUs (11k pins) one miss per
    signal grew the simulator by 200 MB a second.  Without :data:`TOP_ENV` (a run not started by
    the harness) the simulator is asked directly.
    """
    folder = os.environ.get(TOP_ENV)
    if folder:
        ports, pinned = _top(folder)
        if name in pinned:
            return getattr(getattr(dut, PIN_PREFIX + name), PIN_VAR)
        handle = getattr(dut, name) if name in ports else None
    else:
        handle = getattr(dut, name, None)
    if handle is None:
        if default is ...:
            raise AttributeError(f"{dut._name} has no port {name}")
        return default
    return handle
