"""The soft-SoC's shared bus: the cores' requests (and a DMA initiator's) arbitrated onto one
decoder, the RAM, the shared I/O (UART, LEDs, lock), the mailbox, the START window, and (unless
a :class:`~.window_bus.WindowBus` beside each group of cores takes them) each core's own
windows (issue 11 part 4: out of :class:`apwake.rtl.soc.Soc`)."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.bus import MemoryBusSignature, access_states
from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.priority import RoundRobinArbiter
from apwake.rtl.lib.registers import RegisterDecoder
from apwake.rtl.lib.stage import register_stage
from .memory_map import BOOT_ROM_BYTES, IO_MAP, SOC_MAP
from .picorv32 import NativeBusSignature
from .signatures import WindowAccessSignature
from .uart import UartTx
from .window_bus import answers_to_held_requests, core_window_decode, window_access_step

__all__ = ["Interconnect"]

_RAM, _IO, _MAILBOX, _START = (SOC_MAP.slot(name) for name in ("ram", "io", "mailbox", "start"))


class Interconnect(wiring.Component):
    """One shared bus for ``n_cores`` PicoRV32 native buses (docs/ARCHITECTURE.md, "Soft-SoC")
    and, with ``dma``, one more initiator that reaches the RAM only.

    A round-robin arbiter grants one requester at a time (IDLE; with ``registered_requests``
    also in DONE, then LATCH copies the granted request); it keeps the grant for its whole
    access, which is decoded by ``address[31:28]`` (:data:`apwake.rtl.soc.memory_map.SOC_MAP`)
    in DECODE and answered (the core's ``ready``) in DONE:

    * RAM (0x0): one cycle to read (state RAM); stores below ``BOOT_ROM_BYTES`` are dropped.
      Four cycles an access (IDLE, DECODE, RAM, DONE; with ``registered_requests`` DONE or
      IDLE, LATCH, DECODE, RAM).
    * shared I/O (0x1, :data:`IO_MAP`): the UART transmitter (a store waits in DECODE while it is
      busy, then pulses ``uart_valid`` with ``uart_data``), the LEDs, the lock (a read is test
      and set, a store writes bit 0).
    * with ``core_windows``, the core's own windows (0x2 APIC, 0x3 control, 0x5 MSR with
      ``msr_window``): the access goes to the granted core's ``windows`` port and waits there
      (state WINDOW) until it is done, or parked (the bus goes back to IDLE; that core waits for
      its ``resume``).  Without it, a :class:`~.window_bus.WindowBus` beside each group of cores
      takes those accesses before they reach this bus.
    * the mailbox (0x4, with ``mailbox``): one access on ``mailbox_bus`` (MAILBOX, MAILBOX_RESP).
    * the START window (0x6, with ``start``): one access on ``start_bus`` (START, START_RESP).
    * anything else reads 0 (stores ignored) and sets the core's ``bus_error`` bit, which stays
      set until reset: a fetch or a data access there is a software fault (a runaway program
      counter, a window the SoC was built without), which a core without a trap of its own
      (SERV) would otherwise execute through silently.

    The ``dma`` initiator (the start-context unit's reads of the guest's struct and GDT) takes
    part in the round robin after the cores.  It reaches the RAM alone, with the cores' rule for
    the boot ROM; any other address reads 0 (a store is dropped), so it can neither set the lock
    nor reach a core's window.  Its request is taken in RAM (DECODE for another address) and
    answered in DONE, the cycle after, as :class:`apwake.rtl.lib.bus.MemoryBusSignature` says.

    Parameters
    ----------
    n_cores : int
        1 to 256.
    ram_bytes : int
        Size of the RAM behind ``ram_read``/``ram_write`` (a multiple of 4).
    uart_divisor : int
        Clocks per UART bit.
    msr_window : bool
        Route window 0x5 to the cores' MSR windows (else it reads 0 and sets the core's
        ``bus_error``); only with ``core_windows``.
    core_windows : bool
        The cores' own windows are reached through ``windows`` (default); without, their
        addresses are not decoded here (a :class:`~.window_bus.WindowBus` takes them).
    mailbox : bool
        Route window 0x4 to ``mailbox_bus`` (else it reads 0 and sets the core's
        ``bus_error``).
    start : bool
        Route window 0x6 to ``start_bus`` (else it reads 0 and sets the core's
        ``bus_error``).
    dma : bool
        The ``dma`` initiator.
    registered_requests : bool
        Take each core's request (``valid``, ``addr``, ``wdata``, ``wstrb``) from flip-flops
        that copy it every cycle, so that no path runs from inside a core through the arbiter
        and the decoder (a large build's: a SERV core's request is combinational from its bit
        counter, and the arbiter and decoder sit in the middle of the device; synth/REPORT.md
        "ulx3s-timing").  The copy of ``valid`` is cleared in the cycle after the core's
        ``ready``, so a request is never taken twice.  The granted request is copied once more,
        in a state of its own after the grant (LATCH), so that the decoder, the RAM's address
        and the UART start from flip-flops beside them rather than from the multiplexer of
        every core's request that the grant steers.  A core alone on the bus waits six cycles
        for a RAM access instead of four; when requests queue, the next grant is made in DONE,
        so the accesses follow each other four cycles apart as without the copies.  A request
        a core withdraws unanswered (its reset) can still be granted in the first cycle after
        it is withdrawn, as, without the copy, one withdrawn in the cycle after its grant is
        still carried out.

    In both forms, a core that lets its ``valid`` fall during its access (its reset: a core
    holds ``valid`` until ``ready``) is not answered, and the request the core makes after its
    reset waits for a grant of its own instead of taking that access's answer
    (:func:`~.window_bus.answers_to_held_requests`; with the copies, a ``ready`` can still come
    in the very cycle the core's ``valid`` falls, which the core ignores).  The access still
    ends: with the copies, as the core requested it; without them, with the fields the core
    drives by then (a store may end as the read the core fetches with after its reset).  A
    withdrawn read of the lock still sets it, for no one.

    Attributes
    ----------
    cores : In(NativeBusSignature()) per core
        The cores' native memory buses.
    windows : Out(WindowAccessSignature(n_cores))
        Only with ``core_windows``: the cores' own windows (one engine for all: the granted
        core's access, named by ``core``).
    ram_read : In(ReadPort.Signature(addr_width=a, shape=32))
        A synchronous read port of the RAM (``a`` bits of word address).
    ram_write : In(WritePort.Signature(addr_width=a, shape=32, granularity=8))
        Its write port, one enable a byte lane.
    mailbox_bus : Out(MemoryBusSignature())
        Only with ``mailbox``: the mailbox page and its status window.
    start_bus : Out(MemoryBusSignature())
        Only with ``start``: the START window.
    dma : In(MemoryBusSignature())
        Only with ``dma``: an initiator's accesses to the RAM.
    uart_tx : Out(1), init 1
        The serial line (8N1).
    uart_valid, uart_data : Out(1), Out(8)
        One cycle with each byte software sends (a testbench's transcript).
    leds : Out(8)
    bus_error : Out(n_cores)
        Per core, sticky: the core made an access that no window answers.

    Raises
    ------
    ValueError
        ``n_cores`` or ``ram_bytes`` out of range, a bad ``uart_divisor``.
    TypeError
        ``core_windows`` or ``registered_requests`` not a bool.
    """

    def __init__(self, *, n_cores, ram_bytes, uart_divisor, msr_window=True, mailbox=False, start=False,
                 dma=False, registered_requests=False, core_windows=True):
        if not isinstance(n_cores, int) or not 1 <= n_cores <= 256:
            raise ValueError(f"n_cores must be an integer from 1 to 256, not {n_cores!r}")
        if not isinstance(ram_bytes, int) or ram_bytes < 8 or ram_bytes % 4:
            raise ValueError(f"ram_bytes must be a multiple of 4 from 8, not {ram_bytes!r}")
        self.n_cores, self.ram_bytes, self.msr_window, self.mailbox = n_cores, ram_bytes, msr_window, mailbox
        self.start, self.dma_port = start, dma
        self.registered_requests = check_bool("registered_requests", registered_requests)
        self.core_windows = check_bool("core_windows", core_windows)
        self._uart = UartTx(uart_divisor)
        addr_width = (ram_bytes // 4 - 1).bit_length()
        members = {
            "cores": In(NativeBusSignature()).array(n_cores),
            "ram_read": In(ReadPort.Signature(addr_width=addr_width, shape=32)),
            "ram_write": In(WritePort.Signature(addr_width=addr_width, shape=32, granularity=8)),
            "uart_tx": Out(1, init=1), "uart_valid": Out(1), "uart_data": Out(8), "leds": Out(8),
            "bus_error": Out(n_cores),
        }
        if core_windows:
            members["windows"] = Out(WindowAccessSignature(n_cores))
        if mailbox:
            members["mailbox_bus"] = Out(MemoryBusSignature())
        if start:
            members["start_bus"] = Out(MemoryBusSignature())
        if dma:
            members["dma"] = In(MemoryBusSignature())
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n, cores = self.n_cores, self.cores
        m.submodules.uart = uart = self._uart
        m.d.comb += self.uart_tx.eq(uart.tx)
        requesters = n + self.dma_port
        m.submodules.arbiter = arbiter = RoundRobinArbiter(requesters)

        sel = Signal(range(max(requesters, 2)))
        done = Signal()
        answered = Signal(n)            # (answers_to_held_requests below)
        readys = [answered[i] for i in range(n)]
        if self.core_windows:
            port = self.windows
            readys = [ready | port.resume[i] for i, ready in enumerate(readys)]
        requests = [(c.valid, c.addr, c.wdata, c.wstrb) for c in cores]
        if self.registered_requests:
            # one cycle late; not again in the cycle after the answer, when the core has only
            # just seen its ready (the copy is loaded every cycle: no enable crosses the device)
            requests = [register_stage(m, f"core{i}_request", valid=c.valid & ~readys[i], addr=c.addr,
                                       wdata=c.wdata, wstrb=c.wstrb)
                        for i, c in enumerate(cores)]

        # the granted requester's request: a core's, or (index n) the DMA initiator's
        valids, addrs, wdatas, wstrbs = (list(field) for field in zip(*requests))
        # no answer to a core that withdrew its request (its reset) since the grant
        m.d.comb += answered.eq(answers_to_held_requests(m, sel=sel, done=done, valids=valids,
                                                         granting=arbiter.valid))
        valids = Cat(valids)
        if self.dma_port:
            dma = self.dma
            addrs.append(dma.addr)
            wdatas.append(dma.wdata)
            wstrbs.append(Mux(dma.write, dma.wstrb, 0))
            from_dma = sel == n
        addr, wdata, wstrb = Array(addrs)[sel], Array(wdatas)[sel], Array(wstrbs)[sel]
        if self.registered_requests:
            # the granted request copied beside the decoder (state LATCH): the 32:1 multiplexer
            # the grant register steers ends at flip-flops, not in the RAM's address and the
            # UART (the 32-core ECP5 build's critical path once the windows left this bus)
            granted = [Signal(32, name="granted_addr"), Signal(32, name="granted_wdata"),
                       Signal(4, name="granted_wstrb")]
            latch = [field.eq(value) for field, value in zip(granted, (addr, wdata, wstrb))]
            addr, wdata, wstrb = granted
        write = wstrb != 0
        rdata = Signal(32)
        for core, ready in zip(cores, readys):
            m.d.comb += [core.ready.eq(ready), core.rdata.eq(rdata)]
        if self.core_windows:
            valids = valids & ~(port.parked | port.resume)        # not arbitrated
        if self.dma_port:
            m.d.comb += [dma.resp_valid.eq(done & from_dma), dma.rdata.eq(rdata)]
            valids = Cat(valids, dma.req_valid)

        word = addr[2:2 + len(self.ram_read.addr)]
        m.d.comb += [self.ram_read.addr.eq(word), self.ram_write.addr.eq(word), self.ram_write.data.eq(wdata)]

        window = SOC_MAP.window_of(addr)
        if self.core_windows:           # the granted core's windows: which one, and their answer
            to_core, core_window = core_window_decode(m, addr, msr_window=self.msr_window)
            m.d.comb += [port.core.eq(sel), port.window.eq(core_window), port.addr.eq(addr),
                         port.write.eq(write), port.wdata.eq(wdata)]

        lock = Signal()
        io = RegisterDecoder(IO_MAP, addr)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += arbiter.requests.eq(valids)
                with m.If(arbiter.valid):
                    m.d.sync += sel.eq(arbiter.grant_index)
                    m.next = "LATCH" if self.registered_requests else "DECODE"
            if self.registered_requests:
                with m.State("LATCH"):
                    m.d.sync += latch
                    m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(window == _RAM):
                    with m.If(addr[0:28] >= BOOT_ROM_BYTES):     # the boot ROM ignores stores
                        m.d.comb += self.ram_write.en.eq(wstrb)
                    m.next = "RAM"
                if self.dma_port:
                    with m.Elif(from_dma):             # the DMA initiator reaches the RAM only
                        m.d.comb += dma.req_ready.eq(1)
                        m.d.sync += rdata.eq(0)
                        m.next = "DONE"
                with m.Elif(window == _IO):
                    m.d.sync += rdata.eq(io.read({"UART_STATUS": uart.busy, "LEDS": self.leds, "LOCK": lock}))
                    m.next = "DONE"
                    with m.If(io["UART_TX"] & write):
                        with m.If(uart.busy):
                            m.next = "DECODE"            # the store waits for the transmitter
                        with m.Else():
                            m.d.comb += [uart.start.eq(1), uart.data.eq(wdata[0:8]),
                                         self.uart_valid.eq(1), self.uart_data.eq(wdata[0:8])]
                    with m.If(io["LEDS"] & write):
                        m.d.sync += self.leds.eq(wdata[0:8])
                    with m.If(io["LOCK"]):
                        m.d.sync += lock.eq(Mux(write, wdata[0], 1))       # a read is test and set
                if self.core_windows:
                    with m.Elif(to_core):
                        window_access_step(m, port, capture=rdata)
                if self.mailbox:
                    with m.Elif(window == _MAILBOX):
                        m.next = "MAILBOX"
                if self.start:
                    with m.Elif(window == _START):
                        m.next = "START"
                with m.Else():
                    m.d.sync += rdata.eq(0)
                    for i in range(n):              # the DMA initiator was answered above
                        with m.If(sel == i):
                            m.d.sync += self.bus_error[i].eq(1)
                    m.next = "DONE"
            with m.State("RAM"):
                if self.dma_port:
                    m.d.comb += dma.req_ready.eq(from_dma)
                m.d.sync += rdata.eq(self.ram_read.data)
                m.next = "DONE"
            if self.core_windows:
                with m.State("WINDOW"):
                    window_access_step(m, port, capture=rdata)
            if self.mailbox:
                access_states(m, self.mailbox_bus, "MAILBOX", then="DONE", addr=addr, write=write,
                              wdata=wdata, wstrb=wstrb, capture=rdata)
            if self.start:
                access_states(m, self.start_bus, "START", then="DONE", addr=addr, write=write,
                              wdata=wdata, wstrb=wstrb, capture=rdata)
            with m.State("DONE"):
                m.d.comb += done.eq(1)
                if self.registered_requests:
                    # the next grant already (not to the requester answered now: its copy of
                    # ``valid`` clears only in the next cycle), so LATCH costs no cycle when
                    # requests queue
                    # (the grant register's one-hot twin: no decode of ``sel`` on this loop)
                    m.d.comb += arbiter.requests.eq(valids & ~arbiter.last)
                    with m.If(arbiter.valid):
                        m.d.sync += sel.eq(arbiter.grant_index)
                        m.next = "LATCH"
                    with m.Else():
                        m.next = "IDLE"
                else:
                    m.next = "IDLE"
        return m
