"""Pipeline registers: one stage of values, registered under names a waveform reader can find."""

from amaranth import Signal, Value

__all__ = ["register_stage"]


def register_stage(m, stage, /, **values):
    """Register ``values`` for one pipeline stage in ``m.d.sync``.

    Each keyword's value is a value (a signal, an expression, a ``lib.data`` view) or a list or
    tuple of them; the registers are named ``<stage>_<keyword>`` (``<stage>_<keyword>_<i>``
    inside a list), reset to 0, and returned in the keywords' order, each in its own shape
    (views as plain signals of their width).
    """
    def one(value, name):
        value = Value.cast(value)
        reg = Signal(value.shape(), name=f"{stage}_{name}")
        m.d.sync += reg.eq(value)
        return reg
    return [[one(v, f"{name}_{i}") for i, v in enumerate(value)] if isinstance(value, (list, tuple))
            else one(value, name) for name, value in values.items()]
