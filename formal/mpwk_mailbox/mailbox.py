"""Proof harness of the MP wakeup mailbox (:class:`apwake.rtl.mpwk_mailbox.MpwkMailbox`).

The rules come from ACPI 6.5 §5.2.12.19 "Multiprocessor Wakeup Structure" (the mailbox: the OS
writes ApicId and WakeupVector, then Command; the firmware of the AP with that APIC ID clears
Command to acknowledge and jumps to WakeupVector), ACPI 6.6 (mailbox version 1: ResetVector and
the Test command) and TDVF's polling loop (edk2 ``OvmfPkg/TdxDxe``), which the block stands in
for.  The solver drives the OS's bus (the header words 0-3 of the page) and every AP's
acknowledge, return through ResetVector and descheduling freely.
"""

from amaranth import Cat, Module, Signal

from apwake.rtl.mpwk_mailbox import MpwkMailbox
from apwake.rtl.mpwk_mailbox.layouts import ApState, Command
from apwake.sim.harness.formal import elaborate_once
from ..props import HarnessBase

__all__ = ["MailboxProof", "BASE", "APIC_IDS"]

BASE = 0x1000
#: two parked APs: an xAPIC-range ID and one that only an x2APIC can have
APIC_IDS = (1, 0x102)


class MailboxProof(HarnessBase):
    """The mailbox with its properties.

    Properties (``Assert``; ``Cover`` for each shows it is reached):

    * ``mb_wake_matches_request``: an AP leaves POLL for OS_RUNNING only for a latched Wakeup
      command (Reserved 0) naming its APIC ID, and receives the WakeupVector that was in the
      page when Command was written (later field writes change nothing);
    * ``mb_wake_once``: at most one AP is woken per Command, and one at a time;
    * ``mb_ack_target``: the acknowledge (Command cleared by the firmware, not by the OS) only
      comes for a latched, supported request whose AP was polling and scheduled, never before
      the latch; on version 0 never for Test;
    * ``mb_wake_acked``: a wake-up and its acknowledge are the same step (the AP clears
      Command, ACPI: "the application processor ... clears the command");
    * ``mb_v0_no_reset`` (version 0): no AP ever goes back through ResetVector;
    * ``mb_bus_ready``: the bus takes every request in the cycle it is offered (``req_ready``
      high), which is why the harness counts the OS's writes from ``req_valid`` alone;
    * ``mb_bus_response``: ``resp_valid`` is high exactly in the cycle after a take (the
      MemoryBusSignature's rule; the testbench driver on Verilator sees the take from it:
      ``apwake.sim.harness.handshake.Driver.bus_access``).  Both hold from the first step
      (reset values included), and only for the requests ``os_header_only`` allows (the header
      words 0-3): the block's ``resp_valid`` does not depend on the address, but the accesses
      to the status registers and the page's body that the testbenches also make are not in
      the proof.

    Parameters
    ----------
    version : int
        Mailbox version 0 (ACPI 6.4/6.5) or 1 (6.6).
    defect : str or None
        ``"edk2_ack"``: the acknowledge clears WakeupVector and leaves Command (the block's
        ``ack_clears="wakeup_vector"``, edk2's pre-2022 bug, fixed in 9c733f0b90);
        ``"unlatched_vector"``: a WakeupVector written while a request is pending reaches the AP
        (a statement added to the elaborated block gives the AP the page's vector at the
        acknowledge instead of the latched one); ``"late_response"``: the response comes two
        cycles after the take instead of one (statements added to the elaborated block drive
        ``resp_valid`` from two registers of the take).
    """

    DEFECTS = {"edk2_ack": "the acknowledge clears WakeupVector, not Command (edk2 9c733f0b90)",
               "unlatched_vector": "the AP gets the page's WakeupVector at the acknowledge, not the latched one",
               "late_response": "resp_valid two cycles after the take instead of one"}

    def __init__(self, *, version=1, defect=None):
        super().__init__(defect=defect)
        self.version = version
        self.dut = MpwkMailbox(base=BASE, apic_ids=APIC_IDS, version=version,
                               reset_vector=0x8000 if version == 1 else 0, ack_bytes=8,
                               ack_latency=2, no_target_timeout=3, reset_latency=2,
                               ack_clears="wakeup_vector" if defect == "edk2_ack" else "command")
        for name in ("req_valid", "addr", "write", "wdata", "wstrb"):
            self.free(getattr(self.dut.bus, name))
        for port in self.dut.ap:
            for name in ("wake_ack", "return_to_firmware", "descheduled"):
                self.free(getattr(port, name))

    def elaborate(self, platform):
        m = Module()
        dut, n = self.dut, len(APIC_IDS)
        inside = elaborate_once(dut, platform)
        m.submodules.mailbox = dut
        command, apic_id, vector = inside["command"], inside["apic_id"], inside["vector"]
        if self.defect == "unlatched_vector":
            # the AP takes WakeupVector from the page when it is answered, not from the latch
            with inside.module.If(inside["answer"]):
                inside.module.d.sync += [inside[f"ap{i}_vector"].eq(vector) for i in range(n)]
        started = self.begin(m)
        bus = dut.bus
        if self.defect == "late_response":
            # the block registers the take once; a second register makes the answer a cycle late
            taken, late = Signal(name="defect_taken"), Signal(name="defect_late")
            inside.module.d.sync += [taken.eq(bus.req_valid & bus.req_ready), late.eq(taken)]
            inside.module.d.comb += bus.resp_valid.eq(late)
        # the bus (MemoryBusSignature): every request taken at once, answered the cycle after;
        # from the first step (nothing was taken before it: a response out of reset fails too)
        self.prove("mb_bus_ready", bus.req_ready, first_step=True)
        self.prove("mb_bus_response", bus.resp_valid == self.past(bus.req_valid & bus.req_ready, "taken"),
                   first_step=True)
        self.cover("cover_back_to_back", bus.resp_valid & bus.req_valid)
        self.watch(bus.req_valid, bus.req_ready, bus.resp_valid)     # a counterexample shows the handshake
        # the OS writes the header of the page (Command/Reserved, ApicId, WakeupVector)
        word = bus.addr[2:12]
        self.assume("os_header_only", ~bus.req_valid | ((bus.addr[12:32] == BASE >> 12) & (word < 4)))

        write0 = bus.req_valid & bus.write & (word == 0)
        lanes = Cat(*(Cat(*[b] * 8) for b in bus.wstrb))
        merged = Signal(32)
        m.d.comb += merged.eq((command & ~lanes) | (bus.wdata & lanes))

        # the request as the OS made it: what the page held when Command left 0
        lat_valid, woken = Signal(name="lat_valid"), Signal(name="woken")
        lat_cmd, lat_apic, lat_vec = Signal(32, name="lat_cmd"), Signal(32, name="lat_apic"), Signal(64, name="lat_vec")
        field_written = Signal(name="field_written")      # a field write while a request was pending
        self.watch(lat_valid, lat_cmd, lat_apic, lat_vec, woken, command, apic_id, vector)
        starts = write0 & (command == 0) & (merged != 0)
        with m.If(starts):
            m.d.sync += [lat_valid.eq(1), lat_cmd.eq(merged), lat_apic.eq(apic_id),
                         lat_vec.eq(vector), woken.eq(0), field_written.eq(0)]
        with m.If(write0 & (merged == 0)):
            m.d.sync += lat_valid.eq(0)                      # the OS withdraws it
        with m.If(bus.req_valid & bus.write & (word >= 1) & lat_valid):
            m.d.sync += field_written.eq(1)

        was = {name: self.past(value, name) for name, value in (
            ("lat_valid", lat_valid), ("lat_cmd", lat_cmd), ("lat_apic", lat_apic),
            ("lat_vec", lat_vec), ("woken", woken), ("command", command), ("write0", write0),
            ("field_written", field_written))}
        was_state = [self.past(dut.ap[i].state, f"state{i}") for i in range(n)]
        was_desched = [self.past(dut.ap[i].descheduled, f"desched{i}") for i in range(n)]
        wake = [(was_state[i] == ApState.POLL) & (dut.ap[i].state == ApState.OS_RUNNING) for i in range(n)]
        wake_any = Cat(*wake).any()
        with m.If(started & wake_any):
            m.d.sync += woken.eq(1)
        with m.If(starts):
            m.d.sync += woken.eq(0)
        ack = (was["command"] != 0) & (command == 0) & ~was["write0"]
        self.watch(*(dut.ap[i].state for i in range(n)), *(dut.ap[i].wake_vector for i in range(n)))

        supported = (was["lat_cmd"] == Command.WAKEUP)
        if self.version == 1:
            supported |= (was["lat_cmd"] == Command.TEST)
        for i, ident in enumerate(APIC_IDS):
            self.prove(f"mb_wake_matches_request_ap{i}", ~wake[i] | (
                was["lat_valid"] & (was["lat_cmd"] == Command.WAKEUP) & (was["lat_apic"] == ident)
                & dut.ap[i].wake & (dut.ap[i].wake_vector == was["lat_vec"])))
            self.cover(f"cover_wake_ap{i}", wake[i])
        self.prove("mb_wake_once", ~wake_any | (~was["woken"] & (Cat(*wake).as_unsigned() & (Cat(*wake) - 1) == 0)))
        target_polling = Cat(*((was["lat_apic"] == ident) & (was_state[i] == ApState.POLL) & ~was_desched[i]
                               for i, ident in enumerate(APIC_IDS))).any()
        self.prove("mb_ack_target", ~ack | (was["lat_valid"] & supported & target_polling))
        self.prove("mb_wake_acked", ~wake_any | ack)
        self.cover("cover_ack", ack)
        # invariants that tie the harness's record to the block's latch: they make k-induction
        # close (each is also a property of its own)
        pending = inside["pending"]
        self.prove("mb_inv_pending_iff_command", pending == (command != 0))
        self.prove("mb_inv_latch", ~pending | (lat_valid & (inside["p_command"] == lat_cmd)
                                                & (inside["p_apic_id"] == lat_apic)
                                                & (inside["p_vector"] == lat_vec)))
        self.prove("mb_inv_woken_idle", ~woken | ~pending)
        self.cover("cover_field_write_then_wake", wake_any & was["field_written"])
        if self.version == 1:
            self.cover("cover_test_ack", ack & (was["lat_cmd"] == Command.TEST))
            first = Signal()              # AP 0 was woken once already
            with m.If(started & wake[0]):
                m.d.sync += first.eq(1)
            self.cover("cover_rewake_after_reset_vector", first & wake[0])
        else:
            for i in range(n):
                self.prove(f"mb_v0_no_reset_ap{i}", (was_state[i] != ApState.OS_RUNNING)
                           | (dut.ap[i].state == ApState.OS_RUNNING))
            self.cover("cover_v0_return_refused", Cat(*(
                (was_state[i] == ApState.OS_RUNNING) & self.past(dut.ap[i].return_to_firmware, f"ret{i}")
                for i in range(n))).any())
        self.cover("cover_no_target", dut.status.no_target)
        return m
