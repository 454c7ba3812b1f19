"""Typed links inside the soft-SoC (docs/ARCHITECTURE.md, "Soft-SoC").

* :class:`CoreWindow`: which of a core's own windows an access reaches.
* :class:`WindowAccessSignature`: the decoded-access port from the shared bus
  (:class:`apwake.rtl.soc.interconnect.Interconnect`), or a group's window bus
  (:class:`apwake.rtl.soc.window_bus.WindowBus`), to the cores' windows
  (:class:`apwake.rtl.soc.core_windows.CoreWindows`).
* :class:`StartTraceSignature`: what the start-context unit did (ap_start="context"), for a
  testbench.

Written from the initiator's (source's) point of view; the receiver takes ``In(...)``.
"""

from amaranth import unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.start_context.layouts import LaunchKind
from .memory_map import WINDOW_SIZE

__all__ = ["CoreWindow", "WindowAccessSignature", "StartTraceSignature"]


class CoreWindow(enum.Enum, shape=unsigned(2)):
    """A core's own windows: the same addresses on every core, per-core registers behind them."""

    APIC = 0       #: address[31:28] = 0x2: the core's local APIC, xAPIC MMIO
    CONTROL = 1    #: 0x3: CORE_ID, APIC_ID, START_ADDR, ..., RESET_VECTOR
    MSR = 2        #: 0x5: SELECT, DATA_LO, DATA_HI, VMGEXIT


class WindowAccessSignature(wiring.Signature):
    """One access of a core to one of its windows, already decoded by the bus in front of the
    windows (the shared bus, or a group's window bus), for the windows of ``n_cores`` cores (one
    engine serves them all: the bus serves one access at a time).

    The bus raises ``valid`` for the granted core (``core``) and holds it, with
    ``core``, ``window``, ``addr``, ``write`` and ``wdata`` unchanged, until the windows end the
    access:

    * ``done`` (with ``rdata``, read in that cycle): answered; the core gets its ``ready``.
    * ``park`` (first cycle only): the bus is released without an answer (a VMGEXIT store); the
      core stays stalled while its bit of ``parked`` is high, and its bit of ``resume`` (one
      cycle) answers it then.  Neither a parked nor a resumed core takes part in arbitration.

    Members (the bus's view): ``valid`` Out(1), ``core`` Out(range(n_cores)), ``window``
    Out(:class:`CoreWindow`), ``addr`` Out(28) (the offset inside the window), ``write``
    Out(1) (a store, any byte lanes), ``wdata`` Out(32), ``done`` In(1), ``rdata`` In(32),
    ``park`` In(1), ``parked`` In(n_cores), ``resume`` In(n_cores).
    """

    def __init__(self, n_cores):
        super().__init__({
            "valid": Out(1),
            "core": Out(range(n_cores)),
            "window": Out(CoreWindow),
            "addr": Out(range(WINDOW_SIZE)),
            "write": Out(1),
            "wdata": Out(32),
            "done": In(1),
            "rdata": In(32),
            "park": In(1),
            "parked": In(n_cores),
            "resume": In(n_cores),
        })


class StartTraceSignature(wiring.Signature):
    """The start-context unit's launch records and the cores' INITs, as the SoC takes them
    (ap_start="context"): top-level ports a testbench watches without touching every clock.

    Members (source view): ``valid`` Out(1) (a launch record is taken this cycle; the SoC's sink
    is always ready), ``vcpu`` Out(12) (the core), ``kind`` Out(:class:`LaunchKind`),
    ``via_sipi`` Out(1), ``eip`` Out(32), ``esp`` Out(32) (the carried state's, 0 unless
    CONTEXT), ``init_taken`` Out(n_cores) (the cores whose INIT is taken this cycle).

    Parameters
    ----------
    n_cores : int
        At least 1.

    Raises
    ------
    ValueError
        ``n_cores`` is not a positive integer.
    """

    def __init__(self, n_cores):
        if not isinstance(n_cores, int) or isinstance(n_cores, bool) or n_cores < 1:
            raise ValueError(f"n_cores must be a positive integer, not {n_cores!r}")
        super().__init__({
            "valid": Out(1),
            "vcpu": Out(12),
            "kind": Out(LaunchKind),
            "via_sipi": Out(1),
            "eip": Out(32),
            "esp": Out(32),
            "init_taken": Out(n_cores),
        })
