"""Typed interfaces of the local APIC block.

* :class:`RegisterBusSignature`: how a CPU reaches its APIC's registers, xAPIC MMIO and MSRs on
  one port (``space`` selects which).  The other blocks have ports of their own: the mailbox a
  memory bus with the same handshake (:mod:`apwake.rtl.lib.bus`), the GHCB unit a vCPU port
  (:class:`apwake.rtl.ghcb_msr.unit.VcpuPortSignature`); a CPU model or the soft-SoC routes each access.
* :class:`CpuPortSignature`: everything between one CPU and its APIC (register bus, INIT/SIPI/
  NMI/SMI events, the INTR/INTA handshake).
* :class:`FabricLinkSignature`: between one APIC and the IPI fabric.
* :class:`TraceSignature`: the fabric's bus trace, for monitors and scoreboards.
* :class:`RegisterWriteSignature`: inside one APIC, the register write taken this cycle, from
  the register file to the parts that own a register (ICR, EOI, ESR, the timer).

Signatures are written from the initiator's point of view (the CPU for the first two, the APIC
for the link); components take the flipped view with ``In(...)``.
"""

from amaranth import unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from .layouts import FabricMessage

__all__ = ["Space", "RegisterBusSignature", "CpuPortSignature", "FabricLinkSignature",
           "TraceSignature", "RegisterWriteSignature", "LINK_TX", "LINK_RX"]


class Space(enum.Enum, shape=unsigned(1)):
    """Which address space a register access targets."""

    MMIO = 0   #: ``addr`` is the offset inside the 4 KiB xAPIC page
    MSR = 1    #: ``addr`` is the MSR number (RDMSR/WRMSR ECX)


class RegisterBusSignature(wiring.Signature):
    """A register access port, CPU side.

    A request is taken on a cycle where ``req_valid`` and ``req_ready`` are both high.  Exactly
    one cycle later ``resp_valid`` pulses with ``rdata`` (reads) and ``gp``: the access would
    raise #GP (x2APIC rules of docs/spec/lapic.md §1); the CPU model turns it into the exception.
    ``rdata`` is 0 in every other cycle (and for writes), so a CPU side may OR the answers of
    several ports instead of selecting one (the soft-SoC's windows do; proved for the APIC with
    its storage in flip-flops by ``fab_rdata_quiet_<i>``, formal/lapic/fabric.py, and checked
    for the storage in memory by tests/test_lapic_parts.py).
    ``req_ready`` stays low while an access cannot complete yet (an ICR write while the previous
    IPI is still in flight; any access in the cycle after a pipelined APIC's IA32_APIC_BASE.EN
    was cleared, while its registers reset; a pipelined APIC's request in its first cycle,
    while it is decoded), so nothing is lost.  A request's fields stay unchanged until it is
    taken (a pipelined APIC decodes them a cycle ahead); a requester that withdraws a request
    untaken (a CPU reset) leaves ``req_valid`` low for a cycle before it offers another.

    Members (CPU view): ``req_valid`` Out(1), ``req_ready`` In(1), ``space`` Out(Space),
    ``addr`` Out(32), ``write`` Out(1), ``wdata`` Out(64), ``resp_valid`` In(1),
    ``rdata`` In(64), ``gp`` In(1).
    """

    def __init__(self):
        super().__init__({
            "req_valid": Out(1),
            "req_ready": In(1),
            "space": Out(Space),
            "addr": Out(32),
            "write": Out(1),
            "wdata": Out(64),
            "resp_valid": In(1),
            "rdata": In(64),
            "gp": In(1),
        })


class CpuPortSignature(wiring.Signature):
    """Everything between a CPU and its local APIC, CPU side.

    Events are *pending levels* with an acknowledge, as KVM's ``pending_events``: ``init``,
    ``sipi`` (with ``sipi_vector``), ``nmi`` and ``smi`` stay high until the CPU pulses the
    matching ``*_ack`` for one cycle, so an event-driven CPU model cannot miss one.  Accepting
    INIT clears a pending SIPI (docs/spec/lapic.md §8 #5).

    ``intr`` is high while an interrupt is deliverable (highest IRR class above PPR, APIC
    software-enabled).  A one-cycle ``inta`` pulse moves the highest IRR vector to the ISR;
    one cycle later ``inta_done`` pulses with ``inta_vector`` (the spurious vector of SVR when
    nothing was deliverable any more, docs/spec/lapic.md §5).
    """

    def __init__(self):
        super().__init__({
            "reg": Out(RegisterBusSignature()),
            "init": In(1),
            "init_ack": Out(1),
            "sipi": In(1),
            "sipi_vector": In(8),
            "sipi_ack": Out(1),
            "nmi": In(1),
            "nmi_ack": Out(1),
            "smi": In(1),
            "smi_ack": Out(1),
            "intr": In(1),
            "inta": Out(1),
            "inta_done": In(1),
            "inta_vector": In(8),
        })


class FabricLinkSignature(wiring.Signature):
    """One APIC's link to the IPI fabric, APIC side.

    Send: the APIC holds ``tx_valid`` with ``tx_msg`` until the fabric pulses ``tx_done`` (the
    message was on the bus and every receiver decided); ``tx_accepted`` (valid with
    ``tx_done``) says whether any APIC accepted it.

    Receive: while ``rx_valid`` the bus carries ``rx_msg``; ``rx_self`` marks the sender.  The
    APIC answers in the same cycle with ``rx_match`` (it accepts; for lowest-priority messages:
    it is a candidate) and ``rx_priority`` (its PPR class, for lowest-priority arbitration).  The
    fabric picks one candidate of a lowest-priority message with ``lp_grant`` (never an APIC
    that is not a candidate).

    On the pipelined fabric (:class:`~apwake.rtl.lapic.fabric.ApicFabric` ``pipelined``)
    ``rx_match`` and ``rx_priority`` are still answered in the bus cycle, but ``lp_grant``,
    ``tx_done`` and ``tx_accepted`` come three cycles after it (the sender's ``tx_done`` five
    cycles after its grant), so the APIC must be built for it (``LocalApic(pipelined=True)``).
    """

    def __init__(self):
        super().__init__({
            "tx_valid": Out(1),
            "tx_msg": Out(FabricMessage),
            "tx_done": In(1),
            "tx_accepted": In(1),
            "rx_valid": In(1),
            "rx_msg": In(FabricMessage),
            "rx_self": In(1),
            "rx_match": Out(1),
            "rx_priority": Out(4),
            "lp_grant": In(1),
        })


#: the members of :class:`FabricLinkSignature` that send, and those that receive
LINK_TX = ("tx_valid", "tx_msg", "tx_done", "tx_accepted")
LINK_RX = ("rx_valid", "rx_msg", "rx_self", "rx_match", "rx_priority", "lp_grant")


class TraceSignature(wiring.Signature):
    """The fabric bus as seen by a monitor: one message per cycle at most.

    ``source`` is the sender's port index (``range(max(n_ports, 2))``: 1 bit up to 2 ports, 10 bits for
    1024), ``accept`` has one bit per port: the APICs that accepted the message in this cycle.
    """

    def __init__(self, *, n_ports):
        if not isinstance(n_ports, int) or n_ports < 1:
            raise TypeError(f"n_ports must be a positive integer, not {n_ports!r}")
        self.n_ports = n_ports
        super().__init__({
            "valid": Out(1),
            "msg": Out(FabricMessage),
            "source": Out(range(max(n_ports, 2))),
            "accept": Out(n_ports),
        })

    def __eq__(self, other):
        return type(self) is type(other) and self.n_ports == other.n_ports

    def __repr__(self):
        return f"TraceSignature(n_ports={self.n_ports})"


class RegisterWriteSignature(wiring.Signature):
    """A register write the register file has taken, register-file view.

    ``valid`` pulses for one cycle when a write to an APIC register is taken and legal in the
    current mode (no #GP, no illegal xAPIC address, the register writable in that mode).
    ``index`` is the register's index (:mod:`apwake.rtl.lapic.registers`), ``data`` the written
    value as the CPU gave it (all 64 bits of a WRMSR; the low 32 bits of an MMIO store).  Each
    part of the APIC decodes the indices of the registers it owns.

    Members (register-file view): ``valid`` Out(1), ``index`` Out(8), ``data`` Out(64).
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "index": Out(8),
            "data": Out(64),
        })
