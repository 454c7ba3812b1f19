"""Integer reads and writes of a design's ports for the drivers' hot paths.

``handle.value = 5`` and ``int(handle.value)`` go through cocotb's :class:`~cocotb.types.Logic`
and :class:`~cocotb.types.LogicArray` objects (a string of the value's bits, parsed and checked
in Python); in a profile of the 64-CPU bring-up they were about a third of the models' Python
samples (docs/PERFORMANCE.md, "2026-12-02 (evening)").  A :class:`Pin` reads and writes the
same signal as an unsigned integer through the handle's GPI object, with the GPI calls at the
end of cocotb's own paths (``cocotb/handle.py``): ``get_signal_val_binstr`` to read,
``set_signal_val_int`` to write up to 32 bits (cocotb writes a 1-bit ``LogicObject`` as its
text instead; the simulator stores the same bit) and ``set_signal_val_binstr`` above.

What a Pin keeps of cocotb's checks: a write in the ``ReadOnly`` phase raises RuntimeError, a
value that does not fit raises ValueError.  What it does not: negative values (cocotb accepts
them for a vector and wraps them; a Pin refuses them), and X, Z, H or L bits, which a Pin's
read refuses with ValueError instead of resolving them (``COCOTB_RESOLVE_X``); Verilator has
none.

A write is the same deposit cocotb's ``value`` setter makes when the simulator's inertial writes
are trusted (``COCOTB_TRUST_INERTIAL_WRITES=1``, which cocotb's Verilator runner sets and the
benchmark's Icarus runs set too): applied by the simulator at the end of the time step.  Where
they are not trusted, cocotb queues writes for its ``ReadWrite`` phase, and a :class:`Pin` then
writes through ``handle.value``, so that a queued write cannot land after a later direct one.
:meth:`Pin.set_now` is the exception: a write without delay, whatever the setting, so a
:meth:`Pin.set` of the same signal in the same time step lands after it, even one made before.

``tests/test_signal_io.py`` checks a :class:`Pin` against ``handle.value`` on the same ports,
both ways of writing.
"""

from cocotb.handle import LogicArrayObject, LogicObject, PackedObject, _GPISetAction
from cocotb.triggers import ReadOnly, current_gpi_trigger

__all__ = ["Pin", "pin"]

#: a deposit applied at the end of the time step, and a write without delay (cocotb's own codes)
_DEPOSIT, _NO_DELAY = _GPISetAction.DEPOSIT.value, _GPISetAction.NO_DELAY.value


def _inertial_writes_trusted():
    # cocotb decides this once, at import, from the environment (cocotb/handle.py)
    import cocotb.handle
    return bool(getattr(cocotb.handle, "_trust_inertial", False))


class Pin:
    """One port of the running design, read and written as an unsigned integer.

    Parameters
    ----------
    handle : cocotb handle
        A logic signal or vector (``dut.cpu__0__req_valid``).

    Raises
    ------
    TypeError
        ``handle`` is not a logic signal or vector (a scope, a real, an integer).
    """

    __slots__ = ("handle", "width", "get", "set", "_raw", "_limit", "_format", "_wide")

    def __init__(self, handle):
        if not isinstance(handle, (LogicObject, LogicArrayObject, PackedObject)):
            raise TypeError(f"{handle!r} is not a logic signal or vector")
        self.handle = handle
        self.width = len(handle)
        self._raw = handle._handle
        self._limit = 1 << self.width
        self._format = f"0{self.width}b"
        self._wide = self.width > 32
        self.get = self._get
        self.set = self._deposit if _inertial_writes_trusted() else self._set_through_cocotb

    def _get(self):
        """The value as an unsigned integer.

        Raises
        ------
        ValueError
            A bit is X or Z (names the signal)."""
        bits = self._raw.get_signal_val_binstr()
        try:
            return int(bits, 2)
        except ValueError:
            raise ValueError(f"{self.handle._path} is {bits}, not an integer") from None

    def _check(self, value):
        if isinstance(current_gpi_trigger(), ReadOnly):
            raise RuntimeError(f"{self.handle._path}: written in the ReadOnly phase")
        self._check_fits(value)

    def _check_fits(self, value):
        if not 0 <= value < self._limit:
            raise ValueError(f"{value!r} does not fit {self.handle._path} "
                             f"({self.width} bits, unsigned)")

    def _deposit(self, value):
        self._write(_DEPOSIT, value)

    def set_now(self, value):
        """Write ``value`` without delay (cocotb's :class:`~cocotb.handle.Immediate`): the
        simulator applies it at once, so an evaluation the time step makes anyway takes it,
        where a :meth:`set` (a deposit at the end of the time step) makes the step evaluate
        once more.  Only where a write cannot be sampled by the edge of its own time step: a
        driver writes so at a falling edge of a clock that samples on its rising edges.  A
        :meth:`set` of the same signal in the same time step (a deposit, or with
        ``COCOTB_TRUST_INERTIAL_WRITES`` off a write cocotb queues for ``ReadWrite``) is applied
        after it, even when it was made first: do not mix the two on one signal in one step.

        Raises
        ------
        RuntimeError
            In the ``ReadOnly`` phase.
        ValueError
            ``value`` does not fit."""
        self._write(_NO_DELAY, value)

    def _write(self, action, value):
        self._check(value)
        if self._wide:      # (cocotb writes a vector of more than 32 bits as its text too)
            self._raw.set_signal_val_binstr(action, format(value, self._format))
        else:
            self._raw.set_signal_val_int(action, value)

    def _set_through_cocotb(self, value):
        self._check_fits(value)
        self.handle.value = value           # cocotb's own ReadOnly check


_pins = {}      # id(handle) -> Pin (the Pin holds the handle, so the id stays its own)


def pin(handle):
    """The :class:`Pin` of ``handle``, made once per handle (a Pin is its own)."""
    if handle.__class__ is Pin:
        return handle
    found = _pins.get(id(handle))
    if found is None:
        found = _pins[id(handle)] = Pin(handle)
    return found
