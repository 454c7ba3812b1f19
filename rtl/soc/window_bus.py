"""A group of cores' own windows on a bus of their own, beside them (issue 16: the 32-core ECP5
build's critical path ran from the shared bus's grant across the device into the one windows
engine; synth/REPORT.md "ulx3s-timing").

:class:`WindowBus` sits between a group of cores and the shared bus
(:class:`~.interconnect.Interconnect`): each core's accesses to its own windows (APIC, control,
MSR) are arbitrated onto the group's :class:`~.core_windows.CoreWindows` engine, the rest pass
through to the shared bus unchanged.  A window access then never waits for the RAM, and no part
of its path is shared with another group (where the placer puts a group's logic is its choice:
synth/REPORT.md "ulx3s-timing").  The per-access protocol
(:class:`~.signatures.WindowAccessSignature`) and its cycles are the shared bus's:
:func:`window_access_step` is that protocol's step, used by both.
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.priority import RoundRobinArbiter
from apwake.rtl.lib.stage import register_stage
from .memory_map import SOC_MAP
from .picorv32 import NativeBusSignature
from .signatures import CoreWindow, WindowAccessSignature

__all__ = ["WindowBus", "core_window_decode", "window_access_step", "answers_to_held_requests"]

#: address[31:28] of each of a core's own windows
_CORE_WINDOWS = {SOC_MAP.slot("apic"): CoreWindow.APIC, SOC_MAP.slot("control"): CoreWindow.CONTROL,
                 SOC_MAP.slot("msr"): CoreWindow.MSR}


def core_window_decode(m, addr, *, msr_window, name="core_window"):
    """Which of a core's own windows ``addr`` (32 bits) reaches, as ``(to_core, kind)``:
    ``Signal(1)``, high for the APIC and control windows and (with ``msr_window``) the MSR
    window, and ``Signal(CoreWindow)``, which one (:data:`~.memory_map.SOC_MAP`).  The logic goes
    into ``m.d.comb``."""
    kind, to_core = Signal(CoreWindow, name=name), Signal(name=f"to_{name}")
    with m.Switch(SOC_MAP.window_of(addr)):
        for slot, window in _CORE_WINDOWS.items():
            if window is not CoreWindow.MSR or msr_window:
                with m.Case(slot):
                    m.d.comb += [kind.eq(window), to_core.eq(1)]
    return to_core, kind


def window_access_step(m, port, *, capture):
    """One cycle of a window access on ``port`` (the initiator's end of a
    :class:`~.signatures.WindowAccessSignature`), inside ``with m.FSM()``: ``valid``, then state
    ``"DONE"`` with the answer stored into ``capture`` (a 32-bit signal) when the windows are
    done, ``"IDLE"`` when they park the access, else ``"WINDOW"`` (the state that calls this
    again in the next cycle)."""
    m.d.comb += port.valid.eq(1)
    with m.If(port.done):
        m.d.sync += capture.eq(port.rdata)
        m.next = "DONE"
    with m.Elif(port.park):
        m.next = "IDLE"              # the core's answer waits for its resume
    with m.Else():
        m.next = "WINDOW"


def answers_to_held_requests(m, *, sel, done, valids, granting):
    """The ``ready`` a one-at-a-time bus gives each core: ``Signal(len(valids))``, bit ``i``
    high in the answer cycle (``done``) of core ``i``'s access (``sel == i``) unless that core's
    ``valid`` (``valids[i]``, as the bus sees it: the core's own or its registered copy) was
    low in some cycle after the grant's (``granting``: a grant is made in this cycle; it is
    ``arbiter.valid``, high only in the cycles that load ``sel``), the answer cycle included.

    A core holds ``valid`` until ``ready`` (:class:`~.picorv32.NativeBusSignature`), so a
    ``valid`` that falls before it is the core's reset (INIT holding an AP, or the firmware
    sending it back to wait).  The access it withdrew still ends, but its answer is not given:
    the request the core makes after its reset would otherwise take it, the answer to an
    address it did not ask for, and the new request then waits for a grant of its own.  Only
    a reset that shows on ``valid`` for a cycle is seen (a :class:`~.serv.Serv` core gates its
    ``valid`` with its reset for this).  With a registered copy, the cycle in which the core's
    own ``valid`` falls can still be the answer cycle: that ``ready`` comes while the core
    does not request, and the cores ignore it.  A ``sel`` beyond the cores (the shared bus's
    DMA initiator) has no bit here: its answer is the bus's own (``resp_valid``).

    A bus without request copies (``registered_requests=False``) has no copy of the granted
    request's fields either: the cycles of a withdrawn access that remain see the core's new
    request, which after a reset is an instruction fetch, a read; its answer is dropped all
    the same, and the fetch is made again as an access of its own."""
    held, withdrawn = Signal(name="granted_valid"), Signal(name="withdrawn")
    with m.Switch(sel):
        for i, valid in enumerate(valids):
            with m.Case(i):
                m.d.comb += held.eq(valid)
        with m.Default():
            m.d.comb += held.eq(1)
    # from the cycle after the grant (the grant's own cycle saw the request valid)
    m.d.sync += withdrawn.eq(Mux(granting, 0, withdrawn | ~held))
    answers = Signal(len(valids), name="answers")
    m.d.comb += answers.eq(Cat(done & (sel == i) & ~withdrawn & valid for i, valid in enumerate(valids)))
    return answers


class WindowBus(wiring.Component):
    """The own windows of ``n_cores`` cores, served beside them (docs/ARCHITECTURE.md,
    "Soft-SoC").

    Each core's request goes to ``windows`` when its address is one of the core's own windows
    (:func:`core_window_decode`), else to its ``shared`` port, field for field, with the shared
    bus's ``ready`` and ``rdata`` back (a core has one access at a time, so the two never answer
    it in one cycle).  The window accesses are granted round robin, one at a time, and each
    keeps the grant until it ends, with the shared bus's cycles: IDLE (the grant), WINDOW (the
    access is ``valid`` until the windows are done), DONE (the core's ``ready``); with
    ``registered_requests`` LATCH after each grant, and the next grant is made in DONE already.
    A parked access (a VMGEXIT store) frees the bus; its core takes no part in arbitration while
    its bit of ``parked`` or ``resume`` is high, and ``resume`` answers it.

    Parameters
    ----------
    n_cores : int
        1 to 256.
    msr_window : bool
        Window 0x5 is the cores' MSR window (else it passes to the shared bus, which flags it).
    registered_requests : bool
        Take each core's window request from flip-flops loaded every cycle (one cycle later, not
        again in the cycle after its ``ready``), as
        :class:`~.interconnect.Interconnect`'s option of the same name does for the shared bus,
        and drive ``windows``' ``addr``, ``window``, ``write`` and ``wdata`` from flip-flops
        loaded in a cycle of their own after the grant (LATCH; the next grant is made in DONE,
        so queued accesses keep their spacing and a lone access takes a cycle more).  As on the
        shared bus, a request a core withdraws unanswered (its reset) can still be granted in
        the first cycle after it is withdrawn, and LATCH then copies the fields the core drove
        in the cycle after it withdrew it.

    As on the shared bus, a core that lets its ``valid`` fall during its window access (its
    reset) is not answered; the access still ends in the windows (without request copies, with
    the fields the core drives by then), and the core's next window request waits for a grant
    of its own (:func:`answers_to_held_requests`).  A parked access is answered by ``resume``
    all the same (only ``ap_start="ghcb"`` parks, and there a started core is never reset).

    Attributes
    ----------
    cores : In(NativeBusSignature()) per core
        The cores' native memory buses.
    shared : Out(NativeBusSignature()) per core
        The same buses, for the accesses that are not to a core's own window, to the shared bus.
    windows : Out(WindowAccessSignature(n_cores))
        The group's windows engine (:class:`~.core_windows.CoreWindows` with the group's
        ``cores``); ``core`` is the index in the group.

    Raises
    ------
    ValueError
        ``n_cores`` out of range.
    TypeError
        ``msr_window`` or ``registered_requests`` not a bool.
    """

    def __init__(self, *, n_cores, msr_window=True, registered_requests=False):
        if not isinstance(n_cores, int) or isinstance(n_cores, bool) or not 1 <= n_cores <= 256:
            raise ValueError(f"n_cores must be an integer from 1 to 256, not {n_cores!r}")
        self.n_cores = n_cores
        self.msr_window = check_bool("msr_window", msr_window)
        self.registered_requests = check_bool("registered_requests", registered_requests)
        super().__init__({"cores": In(NativeBusSignature()).array(n_cores),
                          "shared": Out(NativeBusSignature()).array(n_cores),
                          "windows": Out(WindowAccessSignature(n_cores))})

    def elaborate(self, platform):
        m = Module()
        n, port = self.n_cores, self.windows
        m.submodules.arbiter = arbiter = RoundRobinArbiter(n)
        sel, done, rdata = Signal(range(max(n, 2))), Signal(), Signal(32)
        answered = Signal(n)            # (answers_to_held_requests below)
        readys = [answered[i] | port.resume[i] for i in range(n)]

        requests = []
        for i, (core, shared) in enumerate(zip(self.cores, self.shared)):
            to_window, _ = core_window_decode(m, core.addr, msr_window=self.msr_window, name=f"core{i}_window")
            m.d.comb += [shared.valid.eq(core.valid & ~to_window), shared.instr.eq(core.instr),
                         shared.addr.eq(core.addr), shared.wdata.eq(core.wdata), shared.wstrb.eq(core.wstrb),
                         core.ready.eq(readys[i] | shared.ready),
                         core.rdata.eq(Mux(readys[i], rdata, shared.rdata))]
            request = dict(valid=core.valid & to_window, addr=core.addr, wdata=core.wdata, wstrb=core.wstrb)
            if self.registered_requests:
                # as the shared bus's copy: not again in the cycle after the answer
                request = register_stage(m, f"core{i}_window_request", **{**request,
                                                                          "valid": request["valid"] & ~readys[i]})
            else:
                request = list(request.values())
            requests.append(request)

        valids, addrs, wdatas, wstrbs = (list(field) for field in zip(*requests))
        # no answer to a core that withdrew its request (its reset) since the grant
        m.d.comb += answered.eq(answers_to_held_requests(m, sel=sel, done=done, valids=valids,
                                                         granting=arbiter.valid))
        addr, wdata, write = Array(addrs)[sel], Array(wdatas)[sel], Array(wstrbs)[sel] != 0
        if self.registered_requests:
            # the granted request copied in a state of its own (LATCH), so that the windows
            # engine decodes from flip-flops, not through the n:1 multiplexer the grant register
            # steers (the 32-core build's critical path at 43.02 MHz: that multiplexer and the
            # engine's decode into its state memory)
            granted = Signal(32, name="granted_addr"), Signal(32, name="granted_wdata"), Signal(name="granted_write")
            latch = [field.eq(value) for field, value in zip(granted, (addr, wdata, write))]
            addr, wdata, write = granted
        _, window = core_window_decode(m, addr, msr_window=self.msr_window)
        m.d.comb += [port.core.eq(sel), port.window.eq(window), port.addr.eq(addr),
                     port.write.eq(write), port.wdata.eq(wdata)]
        requesting = Cat(valids) & ~(port.parked | port.resume)     # (parked and resumed: not arbitrated)

        def grant(excluding=0):
            m.d.comb += arbiter.requests.eq(requesting & ~excluding)
            with m.If(arbiter.valid):
                m.d.sync += sel.eq(arbiter.grant_index)
                m.next = "LATCH" if self.registered_requests else "WINDOW"
            return arbiter.valid

        with m.FSM():
            with m.State("IDLE"):
                grant()
            if self.registered_requests:
                with m.State("LATCH"):
                    m.d.sync += latch
                    m.next = "WINDOW"
            with m.State("WINDOW"):
                window_access_step(m, port, capture=rdata)
            with m.State("DONE"):
                m.d.comb += done.eq(1)
                if self.registered_requests:
                    # the next grant already (not to the core answered now: its copy of
                    # ``valid`` clears only in the next cycle), so LATCH costs no cycle when
                    # accesses queue, as on the shared bus
                    granted_next = grant(excluding=arbiter.last)      # (sel's one-hot twin)
                    with m.If(~granted_next):
                        m.next = "IDLE"
                else:
                    m.next = "IDLE"
        return m
