"""N local APICs joined by the IPI fabric (docs/spec/lapic.md §3 destination matching, §8).

The fabric is one shared message bus, like the P4/Xeon system bus that replaced the P6 APIC bus:

1. **Arbitration.**  Every APIC with a message to send raises ``tx_valid``; a round-robin
   arbiter grants one per cycle (no sender starves: each is served within N grants).
2. **Bus cycle.**  The granted message is registered onto the bus with the sender's index.
   Every APIC sees it in the same cycle and decides with its own registers whether it accepts
   (``rx_match``).  A lowest-priority message goes to the one candidate the fabric picks
   (lowest PPR class, ties to the lowest index).
3. **Completion.**  In that same cycle the sender gets ``tx_done`` and ``tx_accepted``.

Each message is on the bus exactly once, and every receiver can always accept in that cycle
(IRR is a bitmap, INIT/SIPI/NMI/SMI are pending flags), so nothing is lost or duplicated; the
throughput is one message per cycle for the whole fabric.  The ``trace`` port shows every bus
cycle to monitors.

The fabric also keeps the time-stamp counter all its APICs share (one count per clock cycle,
from 0 at reset: an invariant TSC, SDM vol. 3 §18.17.1) for their TSC-deadline timers, and
passes each CPU's LINT0/LINT1 pins to its APIC.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import DeliveryMode, FabricMessage, X2APIC_BROADCAST
from .local_apic import LocalApic, check_n_vectors
from apwake.rtl.lib.priority import RoundRobinArbiter, min_tree, or_tree
from .signatures import CpuPortSignature, TraceSignature

__all__ = ["ApicFabric", "MAX_APICS"]

#: The most ports a fabric takes.  Nothing in the RTL depends on it (every width follows from the
#: number of ports); it guards against a typo costing an hour of build.  1024 CPUs is the size
#: the project measures (docs/PERFORMANCE.md); 4096 costs only time.
MAX_APICS = 4096


class ApicFabric(wiring.Component):
    """Local APICs for ``len(apic_ids)`` CPUs and the fabric between them.

    Parameters
    ----------
    apic_ids : sequence of int
        The APIC ID of each CPU port, in port order; 1 to :data:`MAX_APICS` entries, each a 32-bit x2APIC ID
        0 to 0xFFFF_FFFE (0xFFFF_FFFF is the x2APIC broadcast).  Need not be contiguous.  An
        APIC whose ID is above 0xFE runs only in x2APIC mode (it starts in it and refuses to
        leave it, :class:`~apwake.rtl.lapic.register_file.RegisterFile`); the others start in
        xAPIC mode.
    n_vectors : int
        Implemented vectors per APIC (see :class:`~apwake.rtl.lapic.local_apic.LocalApic`).
    bsp_index : int
        The port whose APIC has IA32_APIC_BASE.BSP set.
    allow_duplicate_ids : bool
        Duplicate IDs are legal on real hardware (every matching APIC accepts, docs/spec/lapic.md §8 #23)
        but usually a configuration mistake, so they are refused unless this is set.
    local_interrupts : bool
        Passed to every :class:`~apwake.rtl.lapic.local_apic.LocalApic` (timer, LINT, error LVT).
    apic_factory : callable or None
        ``apic_factory(n_vectors=..., local_interrupts=...)`` returns the component for one
        APIC; it must have ``LocalApic``'s signature.  None elaborates :class:`LocalApic`; the simulation
        harness passes a :class:`apwake.rtl.lib.instance.SeparateModule` factory so that the APIC is
        converted and compiled once for all ports.

    Attributes
    ----------
    cpu : In(CpuPortSignature).array(N)
        One CPU port per APIC.
    trace : Out(TraceSignature(n_ports=N))
        The bus as seen by a monitor.
    lint : In(2).array(N)
        LINT0 (bit 0) and LINT1 (bit 1) pins of each CPU; 0 when left unconnected.
    tsc : Out(64)
        The shared time-stamp counter (0 without ``local_interrupts``).
    advance : In(32)
        Time skipping (docs/ARCHITECTURE.md "Time skipping"): the extra cycles this clock edge
        stands for, 0 in normal clocking.  The TSC and every APIC timer count them; set it above
        0 only for an edge where ``quiescent`` is high with it applied.
    quiescent : Out(1)
        No message on the bus and every APIC quiescent
        (:class:`apwake.rtl.lapic.local_apic.LocalApic`): with the inputs held, nothing but the
        counters changes for ``advance`` + 1 cycles.

    Raises
    ------
    TypeError, ValueError
        On a malformed parameter, naming it and its value.
    """

    def __init__(self, apic_ids, *, n_vectors=256, bsp_index=0, allow_duplicate_ids=False,
                 local_interrupts=True, apic_factory=None):
        apic_ids = list(apic_ids) if not isinstance(apic_ids, (str, bytes)) else apic_ids
        if not isinstance(apic_ids, list) or not 1 <= len(apic_ids) <= MAX_APICS:
            raise ValueError(f"apic_ids must list 1 to {MAX_APICS} APIC IDs, not {apic_ids!r}")
        for i, apic_id in enumerate(apic_ids):
            if not isinstance(apic_id, int) or isinstance(apic_id, bool):
                raise TypeError(f"apic_ids[{i}] must be an integer, not {apic_id!r}")
            if not 0 <= apic_id < X2APIC_BROADCAST:
                raise ValueError(f"apic_ids[{i}] = {apic_id:#x} is not an x2APIC ID "
                                 f"(0 to {X2APIC_BROADCAST - 1:#x}; {X2APIC_BROADCAST:#x} is broadcast)")
        if not allow_duplicate_ids:
            seen = {}
            for i, apic_id in enumerate(apic_ids):
                if apic_id in seen:
                    raise ValueError(f"apic_ids[{i}] = {apic_id:#x} repeats apic_ids[{seen[apic_id]}]"
                                     f"; pass allow_duplicate_ids=True to model duplicate IDs")
                seen[apic_id] = i
        if not isinstance(bsp_index, int) or not 0 <= bsp_index < len(apic_ids):
            raise ValueError(f"bsp_index must be a port index from 0 to {len(apic_ids) - 1}, "
                             f"not {bsp_index!r}")
        check_n_vectors(n_vectors)
        if not isinstance(local_interrupts, bool):
            raise TypeError(f"local_interrupts must be a bool, not {local_interrupts!r}")
        self.local_interrupts = local_interrupts
        self.apic_ids = tuple(apic_ids)
        self.n_vectors = n_vectors
        self.bsp_index = bsp_index
        self._apic_factory = apic_factory or LocalApic
        n = len(apic_ids)
        super().__init__({
            "cpu": In(CpuPortSignature()).array(n),
            "trace": Out(TraceSignature(n_ports=n)),
            "lint": In(2).array(n),
            "tsc": Out(64),
            "advance": In(32),
            "quiescent": Out(1),
        })

    @property
    def n_cpus(self):
        return len(self.apic_ids)

    def elaborate(self, platform):
        m = Module()
        n = self.n_cpus
        apics = []
        if self.local_interrupts:       # only the TSC-deadline timers read it
            m.d.sync += self.tsc.eq(self.tsc + 1 + self.advance)
        for i, apic_id in enumerate(self.apic_ids):
            apic = self._apic_factory(n_vectors=self.n_vectors,
                                      local_interrupts=self.local_interrupts)
            m.submodules[f"apic{i}"] = apic
            wiring.connect(m, wiring.flipped(self.cpu[i]), apic.cpu)
            m.d.comb += [apic.apic_id.eq(apic_id), apic.bsp.eq(i == self.bsp_index),
                         apic.lint.eq(self.lint[i]), apic.tsc.eq(self.tsc),
                         apic.advance.eq(self.advance)]
            apics.append(apic)

        bus_valid = Signal()
        bus_msg = Signal(FabricMessage)
        bus_source = Signal(n)            # one-hot sender
        bus_source_index = Signal(range(max(n, 2)))

        m.submodules.arbiter = arbiter = RoundRobinArbiter(n)
        # A sender whose message is on the bus this cycle is not granted again.
        m.d.comb += arbiter.requests.eq(
            Cat(*(a.link.tx_valid for a in apics)) & ~Mux(bus_valid, bus_source, 0))
        granted_msg = Signal(FabricMessage)
        m.d.comb += granted_msg.eq(
            or_tree([Mux(arbiter.grant[i], a.link.tx_msg.as_value(), 0)
                        for i, a in enumerate(apics)]))
        m.d.sync += [
            bus_valid.eq(arbiter.valid),
            bus_msg.eq(granted_msg),
            bus_source.eq(arbiter.grant),
            bus_source_index.eq(arbiter.grant_index),
        ]

        lowest = bus_msg.delivery_mode == DeliveryMode.LOWEST_PRIORITY
        lp_any, lp_index = min_tree(m, [(a.link.rx_match, a.link.rx_priority) for a in apics],
                                    name="lowest_priority")
        accept = Signal(n)
        for i, a in enumerate(apics):
            lp_grant = bus_valid & lowest & lp_any & (lp_index == i)
            m.d.comb += [
                a.link.rx_valid.eq(bus_valid),
                a.link.rx_msg.eq(bus_msg),
                a.link.rx_self.eq(bus_source[i]),
                a.link.lp_grant.eq(lp_grant),
                accept[i].eq(bus_valid & Mux(lowest, lp_grant, a.link.rx_match)),
                a.link.tx_done.eq(bus_valid & bus_source[i]),
                a.link.tx_accepted.eq(accept != 0),
            ]
        m.d.comb += self.quiescent.eq(~bus_valid & Cat(*(a.quiescent for a in apics)).all())
        m.d.comb += [
            self.trace.valid.eq(bus_valid),
            self.trace.msg.eq(bus_msg),
            self.trace.source.eq(bus_source_index),
            self.trace.accept.eq(accept),
        ]
        return m
