"""Parameter checks every block shares: a Python exception that names the parameter and value."""

__all__ = ["check_bool"]


def check_bool(name, value):
    """``value`` if it is a bool; TypeError naming ``name`` and the value otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return value
