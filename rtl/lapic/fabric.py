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

**Pipelined** (``pipelined``, for large FPGA builds): the same three steps spread over stages 0
to 4 (five cycles from grant to ``tx_done``), so that no path crosses more than one tree (the
tree over a cluster's APICs is split into its groups' trees and a tree over the groups).  The
arbiter's grant is registered (stage 0) before the granted message is put on the bus (stage 1);
each APIC matches it in stage 1 against its registers of that cycle, each cluster registers the
answers and picks the lowest-priority candidate of each group of its APICs in stage 2 and
between the groups in stage 3 (:class:`~apwake.rtl.lapic.cluster.ApicCluster`), and in stage 4
the fabric picks between the clusters, the receivers accept and the sender gets ``tx_done``
(``tx_accepted`` from that pick: some cluster had a candidate).  Up to five messages are in
flight, from five different senders (the arbiter grants no sender whose message is in a stage),
so the throughput stays one message per cycle; each takes five cycles from grant to ``tx_done``
instead of one.  The ``trace`` shows stage 4: each message with the APICs that accept it.  What
the APICs do with a message is unchanged; only when is later
(:class:`~apwake.rtl.lapic.receiver.Receiver`, "Delay": an APIC reset between the match and the
acceptance drops what the reset clears, and the trace still shows it accepting).

The APICs sit in clusters (:class:`~apwake.rtl.lapic.cluster.ApicCluster`) that hold their
share of the per-port logic; the fabric's top keeps the arbiter over every port, the bus
register and the choice between the clusters' lowest-priority candidates.  The cluster size
changes the Verilog's structure, not the behaviour.

The fabric also keeps the time-stamp counter all its APICs share (one count per clock cycle,
from 0 at reset: an invariant TSC, SDM vol. 3 §18.17.1) for their TSC-deadline timers, and
passes each CPU's LINT0/LINT1 pins to its APIC.
"""

import functools

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import FabricMessage, X2APIC_BROADCAST, XAPIC_MAX_ID
from .cluster import ApicCluster, MAX_CLUSTER_SIZE, check_cluster_size, cluster_count
from .local_apic import LocalApic, check_n_vectors, check_same_timing
from .receiver import ACCEPT_DELAYS
from .register_file import check_storage, check_x2apic_support
from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.priority import RoundRobinArbiter, min_tree, or_tree
from apwake.rtl.lib.stage import register_stage
from .signatures import CpuPortSignature, TraceSignature

__all__ = ["ApicFabric", "MAX_APICS", "check_apic_ids_fit"]

#: The most ports a fabric takes.  Nothing in the RTL depends on it (every width follows from the
#: number of ports); it guards against a typo costing an hour of build.  1024 CPUs is the size
#: the project measures (docs/PERFORMANCE.md); 4096 costs only time.
MAX_APICS = 4096


def check_apic_ids_fit(apic_ids, *, x2apic_support):
    """Without x2APIC mode every ID must be an xAPIC ID (0 to 0xFE); ValueError naming the
    first that is not."""
    if not x2apic_support:
        for i, apic_id in enumerate(apic_ids):
            if apic_id > XAPIC_MAX_ID:
                raise ValueError(f"apic_ids[{i}] = {apic_id:#x} needs x2APIC mode (above {XAPIC_MAX_ID:#x}), "
                                 f"which x2apic_support=False leaves out")


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
    storage : str
        Passed to every :class:`~apwake.rtl.lapic.local_apic.LocalApic`: ``"flops"`` or
        ``"ram"`` (where its storage-only registers are kept).
    x2apic_support : bool
        Passed to every :class:`~apwake.rtl.lapic.local_apic.LocalApic`; False (no x2APIC mode)
        needs every ID to be an xAPIC ID (0 to 0xFE).
    apic_factory : callable or None
        ``apic_factory(n_vectors=..., local_interrupts=..., storage=..., x2apic_support=...,
        pipelined=...)`` returns the component for one APIC; it must have ``LocalApic``'s
        signature and timing (an APIC with a ``pipelined`` attribute other than the fabric's
        is refused: it would accept in the wrong stage).  None
        elaborates :class:`LocalApic`; the simulation harness passes a
        :class:`apwake.rtl.lib.instance.SeparateModule` factory so that the APIC is converted
        and compiled once for all ports.
    cluster_size : int or None
        APICs per :class:`~apwake.rtl.lapic.cluster.ApicCluster`, 1 to the number of CPUs;
        None is one cluster of all of them (of 256 past 256 CPUs).  The last cluster may have
        unused slots.  The
        fabric behaves the same for every size (cycle for cycle); the size changes only the
        structure of the Verilog (docs/PERFORMANCE.md, "Clusters").
    cluster_factory : callable or None
        ``cluster_factory(size=..., n_vectors=..., local_interrupts=..., storage=..., x2apic_support=...,
        pipelined=...)`` returns one cluster
        with :func:`~apwake.rtl.lapic.cluster.cluster_signature`; None elaborates
        :class:`~apwake.rtl.lapic.cluster.ApicCluster` with ``apic_factory``.  Give one
        factory or the other.  A cluster with a ``pipelined`` attribute other than the fabric's
        is refused.
    pipelined : bool
        The pipelined fabric (module docstring): five cycles from grant to ``tx_done``, for FPGA
        builds whose clock the one-cycle fabric cannot meet (synth/REPORT.md).  False (default)
        is the timing the models and the documents assume.

    Attributes
    ----------
    cpu : In(CpuPortSignature).array(N)
        One CPU port per APIC.
    trace : Out(TraceSignature(n_ports=N))
        The bus as seen by a monitor (pipelined: stage 4, each message with the APICs that
        accept it; one whose registers are reset between the match and that cycle drops what
        the reset clears, :class:`~apwake.rtl.lapic.receiver.Receiver` "Delay", but is still
        shown as accepting).
    lint : In(2).array(N)
        LINT0 (bit 0) and LINT1 (bit 1) pins of each CPU; 0 when left unconnected.
    tsc : Out(64)
        The shared time-stamp counter (0 without ``local_interrupts``).
    advance : In(32)
        Time skipping (docs/ARCHITECTURE.md "Time skipping"): the extra cycles this clock edge
        stands for, 0 in normal clocking.  The TSC and every APIC timer count them; set it above
        0 only for an edge where ``quiescent`` is high with it applied.
    quiescent : Out(1)
        No message on the bus (pipelined: in any stage, the grant register included) and every
        APIC quiescent
        (:class:`apwake.rtl.lapic.local_apic.LocalApic`): with the inputs held, nothing but the
        counters changes for ``advance`` + 1 cycles.

    Raises
    ------
    TypeError, ValueError
        On a malformed parameter, naming it and its value.
    """

    def __init__(self, apic_ids, *, n_vectors=256, bsp_index=0, allow_duplicate_ids=False,
                 local_interrupts=True, storage="flops", x2apic_support=True, apic_factory=None,
                 cluster_size=None, cluster_factory=None, pipelined=False):
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
        check_bool("local_interrupts", local_interrupts)
        self.local_interrupts = local_interrupts
        self.storage = check_storage(storage)
        self.x2apic_support = check_x2apic_support(x2apic_support)
        self.pipelined = check_bool("pipelined", pipelined)
        check_apic_ids_fit(apic_ids, x2apic_support=x2apic_support)
        self.apic_ids = tuple(apic_ids)
        self.n_vectors = n_vectors
        self.bsp_index = bsp_index
        n = len(apic_ids)
        if cluster_size is None:
            cluster_size = min(n, MAX_CLUSTER_SIZE)
        check_cluster_size(cluster_size, n)
        if apic_factory is not None and cluster_factory is not None:
            raise ValueError("give apic_factory or cluster_factory, not both: a cluster factory "
                             "chooses its own APICs")
        self.cluster_size = cluster_size
        self._cluster_factory = cluster_factory or functools.partial(
            ApicCluster, apic_factory=apic_factory or LocalApic)
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
        n, size = self.n_cpus, self.cluster_size
        n_clusters = cluster_count(n, size)
        if self.local_interrupts:       # only the TSC-deadline timers read it
            m.d.sync += self.tsc.eq(self.tsc + 1 + self.advance)

        bus_valid = Signal()
        bus_msg = Signal(FabricMessage)
        bus_source = Signal(n)            # one-hot sender
        bus_source_index = Signal(range(max(n, 2)))
        lp_grant = Signal(n_clusters)
        accept = Signal(n)
        padded = n_clusters * size

        clusters = []
        for c in range(n_clusters):
            cluster = self._cluster_factory(size=size, n_vectors=self.n_vectors,
                                            local_interrupts=self.local_interrupts, storage=self.storage,
                                            x2apic_support=self.x2apic_support, pipelined=self.pipelined)
            check_same_timing(cluster, self.pipelined, f"cluster {c}")
            m.submodules[f"cluster{c}"] = cluster
            ports = range(c * size, min(n, (c + 1) * size))
            for j, i in enumerate(ports):
                wiring.connect(m, wiring.flipped(self.cpu[i]), cluster.cpu[j])
                m.d.comb += [cluster.lint[j].eq(self.lint[i]),
                             cluster.apic_id[j].eq(self.apic_ids[i])]
            m.d.comb += [
                cluster.bsp.eq(1 << (self.bsp_index - c * size) if self.bsp_index in ports else 0),
                cluster.present.eq((1 << len(ports)) - 1),
                cluster.tsc.eq(self.tsc),
                cluster.advance.eq(self.advance),
                cluster.rx_valid.eq(bus_valid),
                cluster.rx_msg.eq(bus_msg),
                cluster.rx_source.eq(bus_source[c * size:(c + 1) * size]),
                cluster.lp_grant.eq(lp_grant[c]),
            ]
            clusters.append(cluster)
        requests = Signal(padded)
        accepts = Signal(padded)
        m.d.comb += [requests.eq(Cat(cl.tx_request for cl in clusters)),
                     accepts.eq(Cat(cl.accept for cl in clusters)),
                     accept.eq(accepts[:n])]

        m.submodules.arbiter = arbiter = RoundRobinArbiter(n)
        grant_valid, grant, grant_index = arbiter.valid, arbiter.grant, arbiter.grant_index
        in_flight = [bus_source]        # one-hot senders whose message is in a stage
        stage_valid = [bus_valid]
        if self.pipelined:
            # stage 0: the grant, registered
            grant_valid, grant, grant_index = register_stage(m, "stage0", grant_valid=grant_valid, grant=grant,
                                                             grant_index=grant_index)
            in_flight.append(grant)
            stage_valid.append(grant_valid)
        for c, cluster in enumerate(clusters):
            m.d.comb += cluster.tx_grant.eq(grant[c * size:(c + 1) * size])
        m.d.sync += [
            bus_valid.eq(grant_valid),
            bus_msg.eq(or_tree([cl.tx_msg.as_value() for cl in clusters])),
            bus_source.eq(grant),
            bus_source_index.eq(grant_index),
        ]
        # stage 4 (the bus cycle itself without the pipeline): what the trace shows
        valid, msg, source, source_index = bus_valid, bus_msg, bus_source, bus_source_index
        if self.pipelined:
            # as many as the clusters' stages after the bus cycle (ApicCluster), which the
            # receivers' acceptance delay counts
            for stage in (f"stage{k}" for k in range(2, 2 + ACCEPT_DELAYS[-1])):
                valid, msg, source, source_index = register_stage(m, stage, valid=valid, msg=msg, source=source,
                                                                  source_index=source_index)
                in_flight.append(source)
                stage_valid.append(valid)
        # A sender whose message is in a stage is not granted again: it holds its request until
        # its tx_done.  (Each one-hot is 0 when its stage is empty: the arbiter grants nobody
        # without a request.)
        m.d.comb += arbiter.requests.eq(requests[:n] & ~or_tree(in_flight))

        # the clusters' best lowest-priority candidates, ties to the lowest cluster: the same
        # pick as one tree over every port (min_tree)
        lp_any, lp_cluster, _ = min_tree(m, [(cl.lp_any, cl.lp_priority) for cl in clusters],
                                         name="lowest_priority")
        m.d.comb += lp_grant.eq(Mux(lp_any, 1 << lp_cluster, 0))
        # whether the message reaches an APIC: with the pipeline, "some cluster has a candidate"
        # (every registered match counts, for lowest priority as for the other modes), which
        # spares the path through the clusters' trees and accept bits
        accepted = lp_any if self.pipelined else accept != 0
        for cluster in clusters:
            m.d.comb += cluster.tx_accepted.eq(accepted)
        m.d.comb += self.quiescent.eq(~Cat(stage_valid).any() & Cat(cl.quiescent for cl in clusters).all())
        m.d.comb += [
            self.trace.valid.eq(valid),
            self.trace.msg.eq(msg),
            self.trace.source.eq(source_index),
            self.trace.accept.eq(accept),
        ]
        return m
