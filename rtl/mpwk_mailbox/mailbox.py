"""The ACPI MP wakeup mailbox as a memory-mapped peripheral (docs/spec/mpwk.md §2, §3, §7).

Hardware stands in for the firmware's polling loop: it knows which APs are parked (POLL), running
the OS, or on their way back from ResetVector, and answers the OS's commands as TDVF's relocated
loop does.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.utils import exact_log2
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature
from apwake.rtl.lib.memory import registered_read_port
from apwake.rtl.lib.registers import RegisterDecoder
from .layouts import (APIC_ID_BROADCAST, APIC_ID_INVALID, ApState, Command, FIRMWARE_HALF,
                      MADT_LENGTH, MADT_OFFSETS, MADT_TYPE_MP_WAKEUP, MailboxStatus, PAGE_SIZE)
from .registers import STATUS_MAP

__all__ = ["MpwkMailbox", "ApPortSignature", "STATUS_WORDS", "MAX_APS", "madt_entry"]

#: The most APs one mailbox serves: a typo guard, not a width (each AP has its own state and
#: wake-up vector registers, so the cost grows with the count).  The APIC fabric takes 4096.
MAX_APS = 4095

#: the status window's registers in word order: STATUS (write 1 to clear), then the APIC ID of the
#: last flagged request (:data:`apwake.rtl.mpwk_mailbox.registers.STATUS_MAP`)
STATUS_WORDS = tuple(r.name for r in sorted(STATUS_MAP, key=lambda r: r.offset))
assert [STATUS_MAP[name].offset for name in STATUS_WORDS] == [4 * i for i in range(len(STATUS_WORDS))]


def madt_entry(*, version, base, reset_vector=0):
    """MADT Multiprocessor Wakeup structure (ACPI 6.6 Table 5.45): 16 bytes for version 0,
    24 with ResetVector for version 1."""
    entry = bytearray(MADT_LENGTH[version])
    entry[0:2] = bytes([MADT_TYPE_MP_WAKEUP, MADT_LENGTH[version]])
    fields = {"version": (version, 2), "mailbox_address": (base, 8)}
    if version == 1:
        fields["reset_vector"] = (reset_vector, 8)
    for name, (value, size) in fields.items():
        entry[MADT_OFFSETS[name]:MADT_OFFSETS[name] + size] = value.to_bytes(size, "little")
    return bytes(entry)


class ApPortSignature(wiring.Signature):
    """One parked AP's link to the mailbox, CPU side.

    ``wake`` (with ``wake_vector``) stays high until the CPU pulses ``wake_ack``;
    ``return_to_firmware`` is a one-cycle pulse: the CPU jumped to ResetVector.  ``state`` is
    what the firmware side knows of this AP.  ``descheduled``: the VMM is not running this vCPU,
    so its firmware loop answers nothing until it runs again (docs/spec/mpwk.md §7 #16: unbounded
    acknowledge latency).
    """

    def __init__(self):
        super().__init__({
            "wake": In(1),
            "wake_vector": In(64),
            "wake_ack": Out(1),
            "return_to_firmware": Out(1),
            "descheduled": Out(1),
            "state": In(ApState),
        })


class MpwkMailbox(wiring.Component):
    """The 4 KiB mailbox page and the firmware's answer to it.

    Page layout (ACPI 6.6 Table 5.46): Command u16 @0, Reserved u16 @2, ApicId u32 @4,
    WakeupVector u64 @8, ReservedForOs @0x10, ReservedForFirmware @0x800.  After reset Command
    is 0, ApicId 0xFFFF_FFFF (TDVF's idle value), WakeupVector 0.

    Behaviour:

    * The Command dword (Command and Reserved, compared as 32 bits as TDVF does) going from 0 to
      non-zero latches Command, ApicId and WakeupVector: later writes cannot change the request
      (docs/spec/mpwk.md §7 #3, #4; such writes are flagged).
    * Wakeup (1) or, with ``version=1``, Test (2) for an AP in POLL is answered after
      ``ack_latency`` cycles: Wakeup raises that AP's ``wake`` with the latched vector and marks
      it OS_RUNNING; both acknowledge by clearing the mailbox (``ack_bytes=8``: Command,
      Reserved and ApicId, as TDVF's 8-byte store; ``2``: Command only).
    * A request is never acknowledged on an AP's behalf.  No AP in POLL with that ID after
      ``no_target_timeout`` cycles sets ``no_target`` and the request stays pending; it is still
      answered if the AP reaches POLL later (an AP returning through ResetVector, §7 #13) or its
      vCPU is scheduled again (``descheduled`` falls, §7 #16).
    * Refused, flagged and never acknowledged (TDVF hangs the OS the same way): unknown
      commands (Test on version 0 included), Reserved != 0, ApicId 0xFFFF_FFFE (broadcast).  The
      OS can withdraw any pending request by writing 0 to the Command dword.
    * Writes to the firmware half are dropped and flagged; reads return the page's content (the
      firmware half reads 0, so only the OS half is a memory: 2 KiB; a write's answer carries
      ``rdata`` 0 in the page body, so that memory is block RAM without read-during-write
      logic: rtl/lib/memory.py).
    * ``return_to_firmware`` (version 1): OS_RUNNING -> RETURNING for ``reset_latency`` cycles
      (the firmware's LOOP_INIT), then POLL; on version 0 it is flagged and the AP stays lost.
    * Status window at ``status_base``: STATUS (:class:`MailboxStatus`, write 1 to clear) and
      LAST_APIC_ID.  ``status`` shows the same bits as a port.
    * ``idle``: nothing changes on its own while the inputs hold (time skipping,
      docs/ARCHITECTURE.md): no request still counting towards its answer or its no-target
      flag, none about to be answered, no AP on its way back through ResetVector.

    Parameters
    ----------
    base : int
        Physical address of the page: 4 KiB aligned, non-zero (0 means "no mailbox" to Linux),
        below 4 GiB (the bus is 32-bit).
    apic_ids : sequence of int
        x2APIC IDs of the parked APs, in port order; 0 to :data:`MAX_APS` of them.
    version : int
        Mailbox version 0 (ACPI 6.4/6.5) or 1 (6.6, ResetVector and Test).
    reset_vector : int
        ResetVector published in the MADT (version 1; must be non-zero there).
    ack_bytes : int
        8 (TDVF) or 2.
    ack_clears : str
        ``"command"`` (the specification), or ``"wakeup_vector"`` to reproduce the firmware bug
        fixed in edk2 9c733f0b90 (2022): the acknowledge clears WakeupVector and leaves Command
        set, so the OS never sees its request answered (docs/spec/mpwk.md §7 #21; a negative test).
    ack_latency, no_target_timeout, reset_latency : int
        Cycles.
    status_base : int or None
        Address of the status window (default ``base + 0x1000``).
    """

    def __init__(self, *, base, apic_ids, version=1, reset_vector=0, ack_bytes=8, ack_latency=4,
                 no_target_timeout=1000, reset_latency=16, status_base=None,
                 ack_clears="command"):
        if not isinstance(base, int) or base <= 0 or base % PAGE_SIZE or base >= 1 << 32:
            raise ValueError(f"base must be a non-zero 4 KiB-aligned address below 4 GiB, "
                             f"not {base!r}")
        apic_ids = list(apic_ids)
        # zero APs is a 1-vCPU guest: TDVF still publishes the mailbox, nobody answers it
        if not 0 <= len(apic_ids) <= MAX_APS:
            raise ValueError(f"apic_ids must list 0 to {MAX_APS} APs, not {len(apic_ids)}")
        for i, apic_id in enumerate(apic_ids):
            if not isinstance(apic_id, int) or not 0 <= apic_id < APIC_ID_BROADCAST:
                raise ValueError(f"apic_ids[{i}] = {apic_id!r} is not a usable x2APIC ID")
        if len(set(apic_ids)) != len(apic_ids):
            raise ValueError(f"apic_ids repeat an ID: {apic_ids}")
        if version not in MADT_LENGTH:
            raise ValueError(f"version must be 0 or 1, not {version!r}")
        if version == 1 and not (isinstance(reset_vector, int) and 0 < reset_vector < 1 << 64):
            raise ValueError(f"a version 1 mailbox needs a non-zero reset_vector, not "
                             f"{reset_vector!r} (docs/spec/mpwk.md §7 #11)")
        if ack_bytes not in (2, 8):
            raise ValueError(f"ack_bytes must be 8 (TDVF) or 2, not {ack_bytes!r}")
        if ack_clears not in ("command", "wakeup_vector"):
            raise ValueError(f"ack_clears must be 'command' or 'wakeup_vector' (the edk2 bug), "
                             f"not {ack_clears!r}")
        self.ack_clears = ack_clears
        for name, value in (("ack_latency", ack_latency), ("no_target_timeout", no_target_timeout),
                            ("reset_latency", reset_latency)):
            if not isinstance(value, int) or not 1 <= value < 1 << 20:
                raise ValueError(f"{name} must be 1 to 2**20-1 cycles, not {value!r}")
        status_base = base + PAGE_SIZE if status_base is None else status_base
        if (not isinstance(status_base, int) or status_base % STATUS_MAP.size or
                base <= status_base < base + PAGE_SIZE):
            raise ValueError(f"status_base must be 16-byte aligned outside the page, "
                             f"not {status_base!r}")
        self.base, self.apic_ids, self.version = base, tuple(apic_ids), version
        self.reset_vector = reset_vector if version == 1 else 0
        self.ack_bytes, self.ack_latency = ack_bytes, ack_latency
        self.no_target_timeout, self.reset_latency = no_target_timeout, reset_latency
        self.status_base = status_base
        super().__init__({
            "bus": In(MemoryBusSignature()),
            "ap": In(ApPortSignature()).array(len(apic_ids)),
            "status": Out(MailboxStatus),
            "idle": Out(1),
        })

    def madt_entry(self):
        """The MADT Multiprocessor Wakeup structure (type 0x10) for this mailbox, as bytes."""
        return madt_entry(version=self.version, base=self.base, reset_vector=self.reset_vector)

    def elaborate(self, platform):
        m = Module()
        n = len(self.apic_ids)
        bus = self.bus

        command = Signal(32)                         # Command | Reserved << 16
        apic_id = Signal(32, init=APIC_ID_INVALID)
        vector = Signal(64)
        # only the OS half is stored: writes to the firmware half are dropped, so it reads 0
        m.submodules.body = body = Memory(shape=32, depth=FIRMWARE_HALF // 4, init=[])
        wport = body.write_port(granularity=8)
        # a write's answer does not carry the body word (resp_from_body), so a word is never used
        # in the cycle it is written: block RAM without collision logic
        rport = registered_read_port(m, body, name="body")

        pending = Signal()
        # the latched request (named: the proof harness, apwake.formal, reads them)
        p_command, p_apic_id, p_vector = (Signal(32, name="p_command"), Signal(32, name="p_apic_id"),
                                          Signal(64, name="p_vector"))
        waited = Signal(range(max(self.no_target_timeout, self.ack_latency) + 2))
        status = Signal(MailboxStatus)
        last_apic_id = Signal(32)
        flags = {name: Signal(name=f"flag_{name}") for name in (
            "unknown_command", "reserved_nonzero", "command_while_busy",
            "field_changed_while_pending", "no_target", "firmware_half_write",
            "broadcast_refused", "reset_unsupported")}

        # --- bus decode ---------------------------------------------------------------------------
        fire = bus.req_valid & bus.req_ready
        in_page = bus.addr[12:32] == (self.base >> 12)
        status_regs = RegisterDecoder(STATUS_MAP, bus.addr)
        in_status = bus.addr[STATUS_MAP.offset_bits:32] == (self.status_base >> STATUS_MAP.offset_bits)
        word = bus.addr[2:12]
        m.d.comb += bus.req_ready.eq(1)
        lane_mask = Cat(*(Cat(*[b] * 8) for b in bus.wstrb))

        def merged(old):
            return (old & ~lane_mask) | (bus.wdata & lane_mask)

        page_write = fire & bus.write & in_page
        firmware_write = page_write & (word >= FIRMWARE_HALF // 4)
        half_words_bits = exact_log2(FIRMWARE_HALF // 4)     # a word's index in the OS half
        m.d.comb += [
            flags["firmware_half_write"].eq(firmware_write),
            rport.addr.eq(word[:half_words_bits]),
            wport.addr.eq(word[:half_words_bits]),
            wport.data.eq(bus.wdata),
            wport.en.eq(Mux(page_write & ~firmware_write & (word >= 4), bus.wstrb, 0)),
        ]

        new_command = Signal(32)
        m.d.comb += new_command.eq(command)
        with m.If(page_write & (word == 0)):
            m.d.comb += new_command.eq(merged(command))
            m.d.sync += command.eq(merged(command))
        with m.If(page_write & (word == 1)):
            m.d.sync += apic_id.eq(merged(apic_id))
        with m.If(page_write & (word == 2)):
            m.d.sync += vector[0:32].eq(merged(vector[0:32]))
        with m.If(page_write & (word == 3)):
            m.d.sync += vector[32:64].eq(merged(vector[32:64]))
        m.d.comb += flags["field_changed_while_pending"].eq(
            page_write & pending & (word >= 1) & (word <= 3))

        # --- the request -----------------------------------------------------------------------------
        starts = page_write & (word == 0) & ~pending & (command == 0) & (new_command != 0)
        with m.If(starts):
            m.d.sync += [pending.eq(1), p_command.eq(new_command), p_apic_id.eq(apic_id),
                         p_vector.eq(vector), waited.eq(0), last_apic_id.eq(apic_id)]
        with m.If(page_write & (word == 0) & pending):
            with m.If(new_command == 0):
                m.d.sync += pending.eq(0)            # the OS withdraws its request
            with m.Else():
                m.d.comb += flags["command_while_busy"].eq(1)

        cmd = p_command[0:16]
        supported = (cmd == Command.WAKEUP) | ((cmd == Command.TEST) & (self.version == 1))
        refused = (p_command[16:32] != 0) | ~supported | (p_apic_id == APIC_ID_BROADCAST)
        first_cycle = pending & (waited == 0)
        m.d.comb += [
            flags["reserved_nonzero"].eq(first_cycle & (p_command[16:32] != 0)),
            flags["unknown_command"].eq(first_cycle & (p_command[16:32] == 0) & ~supported),
            flags["broadcast_refused"].eq(first_cycle & supported & (p_command[16:32] == 0)
                                          & (p_apic_id == APIC_ID_BROADCAST)),
        ]

        states = [Signal(ApState, name=f"ap{i}_state") for i in range(n)]
        target = Signal(max(n, 1))        # one spare bit, always 0, with no APs
        m.d.comb += target.eq(Cat(*((p_apic_id == apic) & (states[i] == ApState.POLL)
                                    & ~self.ap[i].descheduled
                                    for i, apic in enumerate(self.apic_ids))))
        with m.If(pending & (waited < self.no_target_timeout + 1)):
            m.d.sync += waited.eq(waited + 1)     # also for refused ones: their flags fire once
        with m.If(pending & ~refused & (target == 0) & (waited == self.no_target_timeout)):
            m.d.comb += flags["no_target"].eq(1)
        answer = Signal()
        m.d.comb += answer.eq(pending & ~refused & (target != 0) & (waited >= self.ack_latency)
                              & ~(page_write & (word == 0)))
        with m.If(answer):
            m.d.sync += pending.eq(0)
            if self.ack_clears == "wakeup_vector":
                m.d.sync += vector.eq(0)
            elif self.ack_bytes == 8:
                m.d.sync += [command.eq(0), apic_id.eq(0)]
            else:
                m.d.sync += command[0:16].eq(0)

        # --- the APs ---------------------------------------------------------------------------------
        returning = []
        for i in range(n):
            port = self.ap[i]
            returning.append(states[i] == ApState.RETURNING)
            wake, wake_vector = Signal(name=f"ap{i}_wake"), Signal(64, name=f"ap{i}_vector")
            countdown = Signal(range(self.reset_latency + 1), name=f"ap{i}_countdown")
            with m.If(port.wake_ack):
                m.d.sync += wake.eq(0)
            with m.If(answer & target[i] & (cmd == Command.WAKEUP)):
                m.d.sync += [wake.eq(1), wake_vector.eq(p_vector), states[i].eq(ApState.OS_RUNNING)]
            with m.If(port.return_to_firmware & (states[i] == ApState.OS_RUNNING)):
                if self.version == 1:
                    m.d.sync += [states[i].eq(ApState.RETURNING), countdown.eq(self.reset_latency)]
                else:
                    m.d.comb += flags["reset_unsupported"].eq(1)
            with m.If(states[i] == ApState.RETURNING):
                with m.If(countdown == 0):
                    m.d.sync += states[i].eq(ApState.POLL)
                with m.Else():
                    m.d.sync += countdown.eq(countdown - 1)
            m.d.comb += [port.wake.eq(wake), port.wake_vector.eq(wake_vector),
                         port.state.eq(states[i])]

        m.d.comb += self.idle.eq(~(pending & ((waited <= self.no_target_timeout) | answer))
                                 & ~Cat(*returning, 0).any())

        # --- status and read data ---------------------------------------------------------------------
        raised = Cat(*(flags[name] for name in flags))
        clear = Signal(len(flags))
        with m.If(fire & bus.write & in_status & status_regs["STATUS"]):
            m.d.comb += clear.eq(bus.wdata & lane_mask)
        m.d.sync += status.as_value()[0:len(flags)].eq(
            (status.as_value()[0:len(flags)] & ~clear) | raised)
        with m.If(flags["command_while_busy"] | flags["field_changed_while_pending"]):
            m.d.sync += last_apic_id.eq(apic_id)
        m.d.comb += self.status.eq(status)

        resp_valid, resp_from_body, resp_data = Signal(), Signal(), Signal(32)
        header = Mux(word == 0, command, Mux(word == 1, apic_id,
                                             Mux(word == 2, vector[0:32], vector[32:64])))
        m.d.sync += [
            resp_valid.eq(fire),
            resp_from_body.eq(fire & ~bus.write & in_page & (word >= 4) & (word < FIRMWARE_HALF // 4)),
            resp_data.eq(Mux(in_page & (word < 4), header,
                             Mux(in_status, status_regs.read({"STATUS": status.as_value(),
                                                              "LAST_APIC_ID": last_apic_id}), 0))),
        ]
        m.d.comb += [bus.resp_valid.eq(resp_valid),
                     bus.rdata.eq(Mux(resp_from_body, rport.data, resp_data))]
        return m
