"""What every proof harness shares: free inputs, values of the cycle before, and named
properties.

A harness is an Amaranth ``Elaboratable`` around one unchanged block.  The solver chooses the
block's inputs (:meth:`HarnessBase.free`), ``Assume`` statements keep them to what the
block's environment may do, and each ``Assert`` and ``Cover`` names its property in its message
(:func:`apwake.sim.harness.formal.run_proof` turns that message into the property's name).  The
harness runs in a reset-less ``sync`` domain: every register starts from its reset value.
"""

from amaranth import Elaboratable, Signal, Value
from amaranth.hdl import Assert, Assume, Cover

__all__ = ["HarnessBase", "DEFECTS_DOC"]

#: how the harnesses take a deliberate defect (docs/FORMAL.md "Injecting a defect")
DEFECTS_DOC = ("each defect is applied to the block's elaborated module (a statement added after "
               "the block's own, which wins) or through a block parameter, never to the source; "
               "docs/FORMAL.md lists them")


class HarnessBase(Elaboratable):
    """Bookkeeping for a harness: its free inputs, its ``past`` registers and its properties.

    Parameters
    ----------
    defect : str or None
        A key of the subclass's ``DEFECTS`` (a deliberate defect to prove the proof can fail).

    Attributes
    ----------
    ports : list of Signal
        The free inputs, for :func:`apwake.sim.harness.formal.run_proof`.
    trace_signals : list of str
        Signal names the text trace and the waveform view show (each found wherever it is in
        the design's hierarchy).

    Raises
    ------
    ValueError
        ``defect`` is not one of ``DEFECTS``.
    """

    #: {name: what it breaks}; a subclass lists its own
    DEFECTS = {}

    def __init__(self, *, defect=None):
        if defect is not None and defect not in self.DEFECTS:
            raise ValueError(f"defect must be one of {sorted(self.DEFECTS)} or None, not {defect!r}")
        self.defect = defect
        self.ports = []
        self.trace_signals = []
        self._m = None
        self._started = None

    def free(self, value):
        """Declare ``value`` (a block input, a ``Signal`` or a port) free: the solver picks it.
        Called from the constructor: the ports must be known before the design is built."""
        for signal in Value.cast(value)._rhs_signals():
            if not any(signal is port for port in self.ports):
                self.ports.append(signal)
        return value

    def begin(self, m):
        """Start the properties of module ``m``; ``started`` is low only in the first step."""
        self._m = m
        self._started = Signal(name="started")
        m.d.sync += self._started.eq(1)
        return self._started

    def past(self, value, name, init=0):
        """A register holding ``value`` of the cycle before (``init`` in the first step)."""
        value = Value.cast(value)
        reg = Signal(value.shape(), name=f"was_{name}", init=init)
        self._m.d.sync += reg.eq(value)
        self.watch(reg)
        return reg

    def watch(self, *signals):
        """Show ``signals`` in the text trace and first in the waveform view."""
        for signal in signals:
            name = Value.cast(signal).name
            if name not in self.trace_signals:
                self.trace_signals.append(name)

    def prove(self, name, test, *, first_step=False):
        """``Assert(test)`` from the second step on, named ``name``; ``first_step``: in the first
        step too, for a test whose :meth:`past` values start exact (no request was taken before
        the first step), so that the registers' reset values are checked as well."""
        self._m.d.comb += Assert(test if first_step else ~self._started | test, name)

    def assume(self, name, test):
        """``Assume(test)`` in every step."""
        self._m.d.comb += Assume(test, name)

    def cover(self, name, test):
        """``Cover(test)`` from the second step on: the state is reachable."""
        self._m.d.comb += Cover(self._started & test, name)
