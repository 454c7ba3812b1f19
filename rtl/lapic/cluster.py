"""A cluster of local APICs: the fabric's repeated unit (docs/ARCHITECTURE.md, "Fabric").

:class:`~apwake.rtl.lapic.fabric.ApicFabric` is built of clusters of ``size`` APICs.  A cluster
holds each APIC's share of the fabric's per-port logic, so that the fabric's top keeps only what
spans clusters (the arbiter's request vector, the bus register, a tree over the clusters'
lowest-priority winners):

* **Send.**  The cluster shows its APICs' requests (``tx_request``); the fabric's round-robin
  arbiter grants one port (``tx_grant``, one-hot, zero in every other cluster) and the cluster
  puts the granted APIC's message on ``tx_msg`` (zero when none of its APICs is granted).
* **Receive.**  Every APIC sees the bus (``rx_valid``, ``rx_msg``, ``rx_source``: which of
  its APICs sent it).  For a lowest-priority message the cluster names its best candidate
  (``lp_any``, ``lp_index``, ``lp_priority``: lowest PPR class, ties to the lowest index);
  the fabric picks the best cluster the same way and grants it ``lp_grant``.  ``accept``
  is the APICs that accept the message this cycle, ``tx_accepted`` whether any APIC of the
  fabric does.

The fabric's decisions are the same as those of one flat fabric over all ports: the arbiter
still sees every port, and two levels of "lowest key, ties to the lowest position" pick the same
candidate as one level (:func:`apwake.rtl.lib.priority.min_tree`).  Clusters exist for the
simulator: one converted and compiled cluster serves all of them, and the fabric's top holds
``N / size`` instances instead of N (docs/PERFORMANCE.md, "Clusters").

A slot of the last cluster that no CPU uses (``present`` low) never accepts, never sends (no
CPU reaches its registers) and counts as quiescent.

**Pipelined** (``pipelined``, for the pipelined fabric): the APICs match the message in its bus
cycle (stage 1) and the cluster registers their answers; in stage 2 it picks the lowest-priority
candidate of each group of :func:`lp_group_size` APICs and registers the picks; in stage 3 it
picks between the groups and registers that pick; in stage 4 the fabric chooses between the
clusters' picks and ``lp_grant``, ``accept``, ``tx_done`` and ``tx_accepted`` are those of the
message of three cycles before.  ``rx_valid``, ``rx_msg`` and ``rx_source`` stay the bus
cycle's; the cluster keeps what stage 4 needs.  No path then crosses more than one tree: the
tree over the 32 APICs of a large ECP5 build was its critical path (synth/REPORT.md), and the
groups split it in two (``tx_accepted`` comes from the fabric's tree over the clusters'
picks, not from the accept bits).
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.priority import min_tree, or_tree
from apwake.rtl.lib.stage import register_stage

from .layouts import DeliveryMode, FabricMessage
from .local_apic import LocalApic, check_n_vectors, check_same_timing
from .register_file import check_storage, check_x2apic_support
from .signatures import CpuPortSignature

__all__ = ["ApicCluster", "MAX_CLUSTER_SIZE", "cluster_signature", "check_cluster_size", "cluster_count",
           "lp_group_size"]

#: the largest cluster: the cluster's ports grow with it (about 230 bits per APIC), and past a
#: few dozen APICs one compiled cluster costs more to build than the instances it saves
MAX_CLUSTER_SIZE = 256


def check_cluster_size(cluster_size, n_cpus, *, zero_means=None):
    """Check a fabric's ``cluster_size`` for ``n_cpus`` CPUs: an integer from 1 to
    ``min(n_cpus, MAX_CLUSTER_SIZE)``, or 0 where the caller gives 0 a meaning (``zero_means``,
    said in the message).

    Raises
    ------
    ValueError
        Naming ``cluster_size``, the allowed range and the value.
    """
    largest = min(n_cpus, MAX_CLUSTER_SIZE)
    if isinstance(cluster_size, int) and not isinstance(cluster_size, bool) and (
            1 <= cluster_size <= largest or (zero_means is not None and cluster_size == 0)):
        return
    zero = "" if zero_means is None else f"0 ({zero_means}) or "
    raise ValueError(f"cluster_size must be {zero}an integer from 1 to {largest} (the number of CPUs, "
                     f"at most {MAX_CLUSTER_SIZE}), not {cluster_size!r}")


def cluster_count(n_cpus, size):
    """Clusters of ``size`` APICs that ``n_cpus`` CPUs need (the last may have unused slots)."""
    return -(-n_cpus // size)


def lp_group_size(size):
    """APICs per group of a pipelined cluster of ``size`` APICs: the power of two that splits
    the lowest-priority tree's levels evenly between the group trees and the tree over the
    groups (the groups' one more level when the number of levels is odd): 8 for 32 APICs (4 groups), 2 for
    3 (groups of 2 and 1), 16 for 256.  One group (the tree over the groups is then empty) for
    2 APICs or fewer."""
    levels = (size - 1).bit_length()
    return 1 << ((levels + 1) // 2)


def cluster_signature(size):
    """The ports of an :class:`ApicCluster` of ``size`` APICs (the same for every other
    parameter), as the fabric sees them flipped.

    Raises
    ------
    ValueError
        ``size`` is not an integer from 1 to :data:`MAX_CLUSTER_SIZE`.
    """
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_CLUSTER_SIZE:
        raise ValueError(f"cluster size must be an integer from 1 to {MAX_CLUSTER_SIZE}, not {size!r}")
    return wiring.Signature({
        "cpu": In(CpuPortSignature()).array(size),
        "lint": In(2).array(size),
        "apic_id": In(32).array(size),
        "bsp": In(size),
        "present": In(size),
        "tsc": In(64),
        "advance": In(32),
        "tx_request": Out(size),
        "tx_grant": In(size),
        "tx_msg": Out(FabricMessage),
        "tx_accepted": In(1),
        "rx_valid": In(1),
        "rx_msg": In(FabricMessage),
        "rx_source": In(size),
        "lp_any": Out(1),
        "lp_index": Out(range(max(size, 2))),
        "lp_priority": Out(4),
        "lp_grant": In(1),
        "accept": Out(size),
        "quiescent": Out(1),
    })


class ApicCluster(wiring.Component):
    """``size`` local APICs and their share of the fabric (module docstring).

    Parameters
    ----------
    size : int
        APICs in the cluster, 1 to :data:`MAX_CLUSTER_SIZE`.
    n_vectors, local_interrupts, storage, x2apic_support, pipelined
        Passed to every :class:`~apwake.rtl.lapic.local_apic.LocalApic`; ``pipelined`` also
        pipelines the cluster (module docstring).
    apic_factory : callable or None
        As :class:`~apwake.rtl.lapic.fabric.ApicFabric`'s: ``apic_factory(n_vectors=...,
        local_interrupts=..., storage=..., x2apic_support=..., pipelined=...)`` returns one APIC;
        None elaborates :class:`LocalApic`.

    Attributes
    ----------
    cpu : In(CpuPortSignature).array(size)
    lint : In(2).array(size)
    apic_id : In(32).array(size)
        Each slot's x2APIC ID (a constant the fabric drives).
    bsp, present : In(size)
        The slot whose APIC is the BSP's; the slots a CPU uses.
    tsc, advance : In(64), In(32)
        The fabric's time-stamp counter and time-skip count, to every APIC.
    tx_request, tx_grant, tx_msg, tx_accepted
    rx_valid, rx_msg, rx_source, lp_any, lp_index, lp_priority, lp_grant, accept
        The bus, as in the module docstring; ``rx_source`` and ``tx_grant`` are one-hot over
        the slots (or zero).  With ``pipelined``, ``lp_*``, ``lp_grant``, ``accept`` and
        ``tx_accepted`` belong to the message three cycles behind ``rx_*``.
    quiescent : Out(1)
        Every present APIC is quiescent.

    Raises
    ------
    ValueError, TypeError
        On a malformed parameter, naming it and its value.
    """

    def __init__(self, size, *, n_vectors=256, local_interrupts=True, storage="flops", x2apic_support=True,
                 pipelined=False, apic_factory=None):
        signature = cluster_signature(size)
        check_n_vectors(n_vectors)
        check_bool("local_interrupts", local_interrupts)
        self.size = size
        self.n_vectors = n_vectors
        self.local_interrupts = local_interrupts
        self.storage = check_storage(storage)
        self.x2apic_support = check_x2apic_support(x2apic_support)
        self.pipelined = check_bool("pipelined", pipelined)
        self._apic_factory = apic_factory or LocalApic
        super().__init__(signature)

    def elaborate(self, platform):
        m = Module()
        apics = []
        for j in range(self.size):
            apic = self._apic_factory(n_vectors=self.n_vectors, local_interrupts=self.local_interrupts,
                                      storage=self.storage, x2apic_support=self.x2apic_support,
                                      pipelined=self.pipelined)
            check_same_timing(apic, self.pipelined, f"APIC {j}")
            m.submodules[f"apic{j}"] = apic
            wiring.connect(m, wiring.flipped(self.cpu[j]), apic.cpu)
            m.d.comb += [apic.apic_id.eq(self.apic_id[j]), apic.bsp.eq(self.bsp[j]),
                         apic.lint.eq(self.lint[j]), apic.tsc.eq(self.tsc),
                         apic.advance.eq(self.advance)]
            apics.append(apic)

        # an absent slot is never a receiver: its APIC has an ID like any other
        match = Signal(self.size)
        priorities = [a.link.rx_priority for a in apics]
        valid, source = self.rx_valid, self.rx_source
        lowest = self.rx_msg.delivery_mode == DeliveryMode.LOWEST_PRIORITY
        m.d.comb += match.eq(Cat(a.link.rx_match for a in apics) & self.present)
        if self.pipelined:
            # stage 2: the APICs' answers, registered
            valid, source, lowest, match, priorities = register_stage(
                m, "stage2", valid=valid, source=source, lowest=lowest, match=match, priority=priorities)
        entries = [(match[j], priorities[j]) for j in range(self.size)]
        if self.pipelined:
            # stage 3: each group's pick, registered; trees compose (min_tree), so the pick
            # between the groups' picks is the pick over all APICs
            group = lp_group_size(self.size)
            picks = [min_tree(m, entries[g:g + group], name=f"lowest_priority_g{g // group}")
                     for g in range(0, self.size, group)]
            valid, source, lowest, match, group_any, group_index, group_priority = register_stage(
                m, "stage3", valid=valid, source=source, lowest=lowest, match=match,
                group_any=[p[0] for p in picks], group_index=[p[1] for p in picks],
                group_priority=[p[2] for p in picks])
            lp_any, lp_group, lp_priority = min_tree(m, list(zip(group_any, group_priority)),
                                                     name="lowest_priority")
            lp_index = Signal(range(max(self.size, 2)), name="lowest_priority_slot")
            with m.Switch(lp_group):
                for g, index in enumerate(group_index):
                    with m.Case(g):
                        m.d.comb += lp_index.eq(g * group + index)
            # stage 4: the cluster's pick, registered
            valid, source, lowest, match, lp_any, lp_index, lp_priority = register_stage(
                m, "stage4", valid=valid, source=source, lowest=lowest, match=match, lp_any=lp_any,
                lp_index=lp_index, lp_priority=lp_priority)
        else:
            lp_any, lp_index, lp_priority = min_tree(m, entries, name="lowest_priority")
        m.d.comb += [self.lp_any.eq(lp_any), self.lp_index.eq(lp_index),
                     self.lp_priority.eq(lp_priority)]

        for j, a in enumerate(apics):
            lp_grant = valid & lowest & self.lp_grant & (lp_index == j)
            m.d.comb += [
                a.link.rx_valid.eq(self.rx_valid),
                a.link.rx_msg.eq(self.rx_msg),
                a.link.rx_self.eq(self.rx_source[j]),
                a.link.lp_grant.eq(lp_grant),
                self.accept[j].eq(valid & Mux(lowest, lp_grant, match[j])),
                a.link.tx_done.eq(valid & source[j]),
                a.link.tx_accepted.eq(self.tx_accepted),
            ]
        m.d.comb += [
            self.tx_request.eq(Cat(a.link.tx_valid for a in apics) & self.present),
            self.tx_msg.eq(or_tree([Mux(self.tx_grant[j], a.link.tx_msg.as_value(), 0)
                                    for j, a in enumerate(apics)])),
            self.quiescent.eq((Cat(a.quiescent for a in apics) | ~self.present).all()),
        ]
        return m
