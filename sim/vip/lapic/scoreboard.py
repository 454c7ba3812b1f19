"""Scoreboard for IPI traffic: exactly-once delivery and priority order.

Inputs, all time-stamped with the clock edge at which the hardware acted:

* what each sender wrote (in order), from the testbench;
* every bus cycle, from :class:`apwake.sim.vip.lapic.monitor.FabricMonitor`;
* every INTA and EOI of each receiver, from its interrupt handler model.

Checks:

1. Each sender's IPIs appear on the bus exactly once, in the order written.
2. Each message is accepted by exactly the APICs the reference model
   (:func:`apwake.sim.vip.lapic.model.expected_acceptors`) names.
3. Per receiver, replaying accepts, INTAs and EOIs in edge order (INTA/EOI before an accept
   at the same edge, as the RTL updates IRR/ISR): every INTA returns the highest pending vector
   and only when its class is above the in-service class; a vector accepted while already
   pending merges (architectural, docs/spec/lapic.md §8 #19) and is counted; in the end every accepted
   vector was delivered or merged, and nothing is left pending or in service.
"""

from dataclasses import dataclass, field

from .model import expected_acceptors, priority_class

__all__ = ["IpiScoreboard", "ReceiverLog"]


@dataclass
class ReceiverLog:
    intas: list = field(default_factory=list)   # (edge_ns, vector)
    eois: list = field(default_factory=list)    # edge_ns


class IpiScoreboard:
    def __init__(self, states, *, spurious_vector):
        self.states = states
        self.spurious_vector = spurious_vector
        self.sent = {i: [] for i in range(len(states))}     # port -> [expected msg fields]
        self.receivers = {i: ReceiverLog() for i in range(len(states))}
        self.stats = {"messages": 0, "accepts": 0, "delivered": 0, "merged": 0}

    def expect(self, port, **msg_fields):
        """Record that ``port`` wrote an IPI whose bus message must carry ``msg_fields``."""
        self.sent[port].append(msg_fields)

    def check(self, bus_cycles):
        """Run all checks; raise AssertionError describing the first violation."""
        by_source = {i: [] for i in self.sent}
        accepts = {i: [] for i in self.sent}
        for cycle in bus_cycles:
            by_source[cycle.source].append(cycle)
            expected = expected_acceptors(cycle.msg, cycle.source, self.states)
            if cycle.accept != expected:
                raise AssertionError(
                    f"message {cycle.msg} from port {cycle.source} at {cycle.edge_ns} ns was "
                    f"accepted by ports {sorted(cycle.accept)}; the reference model expects "
                    f"{sorted(expected)}")
            for r in cycle.accept:
                accepts[r].append((cycle.edge_ns, cycle.msg["vector"]))
        for port, sent in self.sent.items():
            got = by_source[port]
            if len(got) != len(sent):
                raise AssertionError(f"port {port} wrote {len(sent)} IPIs, the bus carried "
                                     f"{len(got)} (lost or duplicated)")
            for k, (want, cycle) in enumerate(zip(sent, got)):
                mismatch = {f: (v, cycle.msg[f]) for f, v in want.items() if cycle.msg[f] != v}
                if mismatch:
                    raise AssertionError(f"port {port} IPI #{k}: bus message differs from the "
                                         f"ICR written: {mismatch} (written, on bus)")
        self.stats["messages"] = len(bus_cycles)
        for r in self.sent:
            self._replay(r, accepts[r], self.receivers[r])
        return self.stats

    def _replay(self, r, accepts, log):
        INTA, EOI, ACCEPT = 0, 1, 2       # same-edge order: the RTL clears before it sets
        events = sorted([(t, INTA, v) for t, v in log.intas] + [(t, EOI, None) for t in log.eois]
                        + [(t, ACCEPT, v) for t, v in accepts])
        irr, isr = set(), []
        for t, kind, vector in events:
            if kind == ACCEPT:
                self.stats["accepts"] += 1
                if vector in irr:
                    self.stats["merged"] += 1
                else:
                    irr.add(vector)
            elif kind == INTA:
                highest = max(irr, default=None)
                in_service = priority_class(isr[-1]) if isr else 0
                deliverable = highest is not None and priority_class(highest) > in_service
                expected = highest if deliverable else self.spurious_vector
                if vector != expected:
                    raise AssertionError(
                        f"port {r}: INTA at {t} ns returned {vector:#x}, expected {expected:#x} "
                        f"(pending {sorted(irr, reverse=True)[:6]}, in service {isr})")
                if deliverable:
                    irr.discard(vector)
                    isr.append(vector)
                    self.stats["delivered"] += 1
            else:
                if not isr:
                    raise AssertionError(f"port {r}: EOI at {t} ns with nothing in service")
                isr.pop()
        if irr or isr:
            raise AssertionError(f"port {r}: left pending {sorted(irr)} / in service {isr}")
