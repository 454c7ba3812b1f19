"""The soft-SoC cores' own windows: each core's local APIC (xAPIC MMIO), its control window and
its MSR window, served by one engine for every core, or in a large build one per group of cores
(issue 11 part 4: out of :class:`apwake.rtl.soc.Soc`; issue 16: one engine instead of one per
core).

The bus in front of it (the shared :class:`apwake.rtl.soc.interconnect.Interconnect`, or a
group's :class:`apwake.rtl.soc.window_bus.WindowBus`) grants one core at a time and keeps the
grant for the whole access, so one engine serves its cores' accesses in turn, the way the GHCB
unit serves N vCPUs.  What each core keeps between its accesses (the
MSR window's SELECT, DATA_LO and DATA_HI) is a word of a memory indexed by the core: block RAM
on an FPGA instead of 96 flip-flops a core.  On the iCE40UP5K a window engine per core cost 164
LUTs and 96 flip-flops a core (synth/REPORT.md "icebreaker-serv-c4-msr-nox2apic").
"""

import operator
from functools import reduce

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apwake.rtl.ghcb_msr.layouts import MSR_GHCB
from apwake.rtl.ghcb_msr.signatures import VcpuPortSignature
from apwake.rtl.lapic.signatures import RegisterBusSignature, Space
from apwake.rtl.lib.checks import check_bool
from apwake.rtl.lib.memory import registered_read_port
from apwake.rtl.lib.registers import RegisterDecoder
from .memory_map import AP_START, CONTROL_MAP, FEATURES, MSR_WINDOW_MAP
from .signatures import CoreWindow, WindowAccessSignature

__all__ = ["CoreWindows", "APICS_PER_REQUEST_COPY"]

#: the MSR window's registers that hold state, as the word index of each core's entry in the
#: state memory (the core's index above it)
_SELECT, _DATA_LO, _DATA_HI = 0, 1, 2
#: a power of two, so that a word's address is the core's index and the word's, concatenated
#: (the fourth word of each core is not used)
_WORDS_PER_CORE = 4
#: with ``registered_request``, the APICs each copy of the request's flip-flops drives (cores
#: 0-7 the first, 8-15 the second...), so that no request net spans every APIC of the device
APICS_PER_REQUEST_COPY = 8


class CoreWindows(wiring.Component):
    """The windows every core sees at the same addresses, with its own registers behind them
    (docs/ARCHITECTURE.md, "Soft-SoC"; the maps are :data:`CONTROL_MAP` and
    :data:`MSR_WINDOW_MAP` in :mod:`apwake.rtl.soc.memory_map`; the MSR window follows
    docs/spec/ghcb.md §1), for the core ``access.core`` names.

    * APIC (:attr:`CoreWindow.APIC`): the access goes to ``apic[core]`` in space MMIO at
      ``addr[11:0]``: a request cycle (until ``req_ready``), then the response; the access is
      done with the response's low half.
    * Control (:attr:`CoreWindow.CONTROL`), done in its first cycle: CORE_ID, APIC_ID,
      START_ADDR (``start_addr[core]``), N_CORES, AP_START, FEATURES, START_SP
      (``start_sp[core]``), RAM_BYTES, STACK_BYTES; a store to RESET_VECTOR pulses
      ``back_to_firmware[core]`` (not for the BSP).
    * MSR (:attr:`CoreWindow.MSR`, with ``msr_window``): SELECT holds the MSR number; a DATA_LO
      store holds the low half of the next WRMSR; a DATA_LO read is RDMSR of SELECT (the low half
      answers, the high half goes to DATA_HI); a DATA_HI store is WRMSR of SELECT with DATA_LO and
      the stored high half, in one access.  The GHCB MSR (``ap_start="ghcb"``) is read and
      written on ``vcpu[core]``; every other MSR goes to ``apic[core]`` in space MSR (as the APIC
      window; the response's high half goes to DATA_HI, for a WRMSR and for an APIC window read
      too).  A VMGEXIT store (``ap_start="ghcb"``) pulses ``vcpu[core].vmgexit`` and parks the
      access: ``parked[core]`` until ``vcpu[core].exit_done``, then ``resume[core]`` for one
      cycle.  Registers that are not readable read 0, as the map says.  Stores to SELECT and
      DATA_LO and a VMGEXIT are done in their first cycle; a read of SELECT or DATA_HI in the
      second (the state memory's read), RDMSR and WRMSR of the GHCB MSR in the second and the
      third.  The three registers read 0 after a reset until they are written (a memory is not
      reset: a flip-flop per word and core says whether it was written since).

    Parameters
    ----------
    apic_ids : sequence of int
        Core i's APIC ID (APIC_ID), 32-bit, for every core of the SoC; their number is N_CORES
        (1 to 256).
    bsp_index : int
        The BSP ignores RESET_VECTOR.
    cores : range or None
        The cores this engine serves (consecutive indices of ``apic_ids``; None, the default:
        all).  ``access.core`` and the per-core members count from ``cores.start``; CORE_ID
        answers the SoC's index.  A large build has one engine per group of cores, each beside
        its group (:class:`~.window_bus.WindowBus`).
    ap_start : str
        ``"sipi"``, ``"mailbox"``, ``"ghcb"`` or ``"context"`` (AP_START; ``"ghcb"`` adds ``vcpu``).
    msr_window : bool
        The MSR window exists (FEATURES.msr_window); needed by ``"ghcb"``.
    x2apic : bool
        The APICs have x2APIC mode (FEATURES.x2apic).
    ram_bytes, stack_bytes : int
        RAM_BYTES and STACK_BYTES (:class:`apwake.rtl.soc.Soc`'s parameters), 32-bit.
    registered_request : bool
        Drive the APICs' register buses from flip-flops loaded in the
        cycle before the request, the same cycles as without them: for large FPGA builds,
        where the path from a core's bus through the interconnect and this engine into every
        APIC's register decode was the critical one (the 16-core ECP5 build: 42.7 ns without,
        34.1 MHz with; synth/REPORT.md).  One copy of those flip-flops per
        :data:`APICS_PER_REQUEST_COPY` APICs, each loaded only for its own cores' accesses (so
        that synthesis keeps them apart), drives its APICs alone: the 32-core build's critical
        path was one request register driving all 32 APICs across the device (29.4 ns of
        routing).  Each APIC's ``req_valid`` is a flip-flop of its own too, set as the engine
        enters APIC_REQ for its core and cleared as the APIC takes the request (the same
        cycles), and the engine then waits for the response alone: no APIC's ``req_ready``
        reaches it.  The SoC sets it with its fabric's ``pipelined``.

    Attributes
    ----------
    (``n_cores`` and "per core" count the cores of ``cores``.)

    access : In(WindowAccessSignature(n_cores))
        The decoded accesses, from the interconnect or the group's
        :class:`~.window_bus.WindowBus`: one at a time, for the core it names.
    apic : Out(RegisterBusSignature()) per core
        Each core's local APIC register bus (xAPIC MMIO and MSRs).
    start_addr : In(32) per core
        Where each core last started (START_ADDR).
    start_sp : In(32) per core
        The stack its last start gave it, or 0 (START_SP).
    back_to_firmware : Out(n_cores)
        One cycle: that core (an AP) wrote RESET_VECTOR.
    vcpu : Out(VcpuPortSignature()) per core
        Only with ``"ghcb"``: each core's GHCB MSR, VMGEXIT and exit_done.

    Raises
    ------
    ValueError
        No or more than 256 APIC IDs, an ID that is not 32-bit, ``bsp_index`` out of range,
        ``cores`` not a non-empty range of those cores with step 1, an unknown ``ap_start``,
        ``"ghcb"`` without the MSR window, a RAM or stack size that is not 32-bit.
    TypeError
        ``msr_window``, ``x2apic`` or ``registered_request`` not a bool.
    """

    def __init__(self, *, apic_ids, bsp_index, ap_start="sipi", msr_window=True, x2apic=True, ram_bytes=8192,
                 stack_bytes=256, registered_request=False, cores=None):
        apic_ids = tuple(apic_ids)
        if not 1 <= len(apic_ids) <= 256:
            raise ValueError(f"apic_ids must name 1 to 256 cores, not {len(apic_ids)}")
        for i, apic_id in enumerate(apic_ids):
            if not isinstance(apic_id, int) or not 0 <= apic_id < 1 << 32:
                raise ValueError(f"apic_ids[{i}] must be a 32-bit integer, not {apic_id!r}")
        if not isinstance(bsp_index, int) or not 0 <= bsp_index < len(apic_ids):
            raise ValueError(f"bsp_index must be a core index below {len(apic_ids)}, not {bsp_index!r}")
        cores = range(len(apic_ids)) if cores is None else cores
        if (not isinstance(cores, range) or cores.step != 1 or not cores
                or not 0 <= cores.start < cores.stop <= len(apic_ids)):
            raise ValueError(f"cores must be a non-empty range of step 1 inside range({len(apic_ids)}), "
                             f"not {cores!r}")
        n_cores = len(cores)
        for name, value in (("ram_bytes", ram_bytes), ("stack_bytes", stack_bytes)):
            if not isinstance(value, int) or not 0 <= value < 1 << 32:
                raise ValueError(f"{name} must be a 32-bit integer, not {value!r}")
        if ap_start not in AP_START:
            raise ValueError(f"ap_start must be one of {tuple(AP_START)}, not {ap_start!r}")
        if ap_start == "ghcb" and not msr_window:
            raise ValueError("ap_start='ghcb' needs the MSR window (the GHCB MSR is reached there)")
        for name, value in (("msr_window", msr_window), ("x2apic", x2apic),
                            ("registered_request", registered_request)):
            check_bool(name, value)
        self.apic_ids, self.n_cores, self.bsp_index, self.cores = apic_ids, n_cores, bsp_index, cores
        self.ram_bytes, self.stack_bytes = ram_bytes, stack_bytes
        self.ap_start, self.msr_window, self.x2apic = ap_start, msr_window, x2apic
        self.registered_request = registered_request
        members = {"access": In(WindowAccessSignature(n_cores)),
                   "apic": Out(RegisterBusSignature()).array(n_cores),
                   "start_addr": In(32).array(n_cores), "start_sp": In(32).array(n_cores),
                   "back_to_firmware": Out(n_cores)}
        if ap_start == "ghcb":
            members["vcpu"] = Out(VcpuPortSignature()).array(n_cores)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        acc, n, core = self.access, self.n_cores, self.access.core
        ghcb = self.ap_start == "ghcb"
        first = Signal()                        # the access's first cycle (the FSM is idle)
        in_msr = acc.window == CoreWindow.MSR

        first_core = self.cores.start
        control = RegisterDecoder(CONTROL_MAP, acc.addr)
        control_answer = control.read({
            "CORE_ID": core + first_core,
            "APIC_ID": Array(Const(self.apic_ids[i], 32) for i in self.cores)[core],
            "START_ADDR": Array(self.start_addr)[core], "N_CORES": len(self.apic_ids),
            "AP_START": AP_START[self.ap_start],
            "FEATURES": ((FEATURES["MSR_WINDOW"] if self.msr_window else 0) |
                         (FEATURES["X2APIC"] if self.x2apic else 0)),
            "START_SP": Array(self.start_sp)[core], "RAM_BYTES": self.ram_bytes, "STACK_BYTES": self.stack_bytes})
        reset_vector = first & (acc.window == CoreWindow.CONTROL) & acc.write & control["RESET_VECTOR"]
        for i in range(n):
            if first_core + i != self.bsp_index:
                m.d.comb += self.back_to_firmware[i].eq(reset_vector & (core == i))

        # the access's core's SELECT (held from the state memory's read) and, in a WRMSR, its
        # DATA_LO: the read port's data, which it keeps while it is not enabled again
        select, data_lo = Signal(32), Signal(32)
        # SELECT as the next cycle will hold it (READ loads it from the state memory)
        select_next = Signal(32)
        m.d.comb += select_next.eq(select)
        # the APIC request (APIC_REQ): the core's own bus; the others see it without req_valid.
        # With ``registered_request`` its fields are flip-flops, one copy per group of APICs,
        # loaded in every cycle before APIC_REQ in which the access is one of the group's cores'
        # with what that state will ask (the access holds still until it is done), so that the
        # APICs' register decode starts from registers (the timing is the same).
        requesting = Signal()
        # (registered, the address is SELECT as the next cycle holds it: READ loads it)
        request = [acc.write, Mux(in_msr, Space.MSR, Space.MMIO),
                   Mux(in_msr, select_next if self.registered_request else select, acc.addr[0:12]),
                   Mux(in_msr, Cat(data_lo, acc.wdata), acc.wdata)]

        def request_fields(suffix=""):
            return (Signal(name=f"req_write{suffix}"), Signal(Space, name=f"req_space{suffix}"),
                    Signal(32, name=f"req_addr{suffix}"), Signal(64, name=f"req_wdata{suffix}"))

        if self.registered_request:
            copies = [request_fields(f"_{group}") for group in range(-(-n // APICS_PER_REQUEST_COPY))]
            for group, fields in enumerate(copies):
                with m.If(~requesting & (core // APICS_PER_REQUEST_COPY == group)):
                    m.d.sync += [req.eq(value) for req, value in zip(fields, request)]
        else:
            copies = [request_fields()]
            m.d.comb += [req.eq(value) for req, value in zip(copies[0], request)]
        # registered: each APIC's req_valid is a flip-flop of its own, set as this engine enters
        # APIC_REQ for its core and cleared as the APIC takes the request (the cycles the
        # unregistered engine raises ``requesting & (core == i)`` in), so the core index's decode
        # no longer runs into every APIC's take (the 32-core build's critical path once the
        # request fields were registers)
        entering = Signal()         # the engine enters APIC_REQ at the next edge
        for i, bus in enumerate(self.apic):
            group = i // APICS_PER_REQUEST_COPY if self.registered_request else 0
            req_write, req_space, req_addr, req_wdata = copies[group]
            if self.registered_request:
                req_valid = Signal(name=f"apic{i}_req_valid")
                with m.If(entering & (core == i)):
                    m.d.sync += req_valid.eq(1)
                with m.Elif(req_valid & bus.req_ready):
                    m.d.sync += req_valid.eq(0)
            else:
                req_valid = requesting & (core == i)
            m.d.comb += [bus.req_valid.eq(req_valid), bus.write.eq(req_write),
                         bus.space.eq(req_space), bus.addr.eq(req_addr), bus.wdata.eq(req_wdata)]
        # (only the unregistered engine looks at the APICs' req_ready: see APIC_REQ)
        req_ready = None if self.registered_request else Array(bus.req_ready for bus in self.apic)[core]
        resp_valid = Array(bus.resp_valid for bus in self.apic)[core]
        # an APIC's rdata is 0 unless it answers (RegisterBusSignature), and only the access's
        # core's APIC is asked: an OR of the 64-bit answers instead of an N-way multiplexer
        resp_rdata = reduce(operator.or_, (bus.rdata for bus in self.apic))

        if self.msr_window:
            m.submodules.state = state = Memory(shape=32, depth=n * _WORDS_PER_CORE, init=[])
            # no word is read in the cycle it is written (a load and a store are never in one cycle)
            read, write = registered_read_port(m, state, name="state"), state.write_port()
            # written[core * 4 + word]: the word was written since the reset (else it reads 0);
            # loaded: the one the read port holds was
            written, loaded = Signal(n * _WORDS_PER_CORE), Signal()
            word_data = Mux(loaded, read.data, 0)
            # the read port is enabled only when it is read (no read-during-write logic); its
            # data stays until the next read
            m.d.comb += [read.en.eq(0), data_lo.eq(word_data)]
            msr = RegisterDecoder(MSR_WINDOW_MAP, acc.addr)
            rdmsr, wrmsr = msr["DATA_LO"] & ~acc.write, msr["DATA_HI"] & acc.write

            def store(word, data):
                address = Cat(Const(word, 2), core)
                m.d.comb += [write.addr.eq(address), write.data.eq(data), write.en.eq(1)]
                m.d.sync += written.bit_select(address, 1).eq(1)

            def load(word):
                address = Cat(Const(word, 2), core)
                m.d.comb += [read.addr.eq(address), read.en.eq(1)]
                m.d.sync += loaded.eq(written.bit_select(address, 1))

        if ghcb:
            vcpus = self.vcpu
            msr_rdata = Array(v.msr_rdata for v in vcpus)[core]
            msr_write, vmgexit = Signal(), Signal()
            for i, v in enumerate(vcpus):
                m.d.comb += [v.msr_write.eq(msr_write & (core == i)), v.vmgexit.eq(vmgexit & (core == i)),
                             v.msr_wdata.eq(Cat(data_lo, acc.wdata))]
            # a parked VMGEXIT waits for the hypervisor, the core's bus request with it
            parked, resume = Signal(n), Signal(n)
            m.d.comb += [acc.parked.eq(parked), acc.resume.eq(resume)]
            for i, v in enumerate(vcpus):
                with m.If(parked[i] & v.exit_done):
                    m.d.sync += [parked[i].eq(0), resume[i].eq(1)]
                with m.Else():
                    m.d.sync += resume[i].eq(0)
                with m.If(vmgexit & (core == i)):
                    m.d.sync += parked[i].eq(1)

        def to_apic_req():
            m.d.comb += entering.eq(1)
            m.next = "APIC_REQ"

        def done(rdata):
            m.d.comb += [acc.done.eq(1), acc.rdata.eq(rdata)]
            m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += first.eq(acc.valid)
                with m.If(acc.valid):
                    with m.If(acc.window == CoreWindow.CONTROL):
                        done(control_answer)
                    with m.Elif(acc.window == CoreWindow.APIC):
                        to_apic_req()
                    if self.msr_window:
                        with m.Elif(in_msr & acc.write & msr["SELECT"]):
                            store(_SELECT, acc.wdata)
                            done(0)
                        with m.Elif(in_msr & acc.write & msr["DATA_LO"]):
                            store(_DATA_LO, acc.wdata)
                            done(0)
                        if ghcb:
                            with m.Elif(in_msr & acc.write & msr["VMGEXIT"]):
                                m.d.comb += [vmgexit.eq(1), acc.park.eq(1)]
                        with m.Elif(in_msr & ~acc.write & msr["DATA_HI"]):
                            load(_DATA_HI)
                            m.next = "READ"
                        with m.Elif(in_msr & (rdmsr | wrmsr | (~acc.write & msr["SELECT"]))):
                            load(_SELECT)
                            m.next = "READ"
                    with m.Else():
                        done(0)
            if self.msr_window:
                with m.State("READ"):           # word_data: SELECT, or DATA_HI for its read
                    # (a DATA_HI read copies it into select too: harmless, as every MSR
                    # request reads SELECT first)
                    m.d.sync += select.eq(word_data)
                    m.d.comb += select_next.eq(word_data)
                    with m.If(~acc.write & (msr["SELECT"] | msr["DATA_HI"])):
                        done(word_data)
                    with m.Elif(wrmsr):
                        load(_DATA_LO)
                        m.next = "WRMSR"
                    if ghcb:
                        with m.Elif(word_data == MSR_GHCB):        # RDMSR of the GHCB MSR
                            store(_DATA_HI, msr_rdata[32:64])
                            done(msr_rdata[0:32])
                    with m.Else():
                        to_apic_req()
                with m.State("WRMSR"):          # word_data: DATA_LO, until the access is done
                    if ghcb:
                        with m.If(select == MSR_GHCB):
                            m.d.comb += msr_write.eq(1)
                            done(0)
                        with m.Else():
                            to_apic_req()
                    else:
                        to_apic_req()
            def answer():                       # the response: the cycle after the take
                with m.If(resp_valid):
                    if self.msr_window:
                        store(_DATA_HI, resp_rdata[32:64])
                    done(resp_rdata[0:32])

            with m.State("APIC_REQ"):
                m.d.comb += requesting.eq(1)
                if self.registered_request:
                    # each APIC's req_valid clears at its own take; this state waits for the
                    # response alone, so no APIC's req_ready (decided from its state in the take
                    # cycle) runs into this engine (the same cycles)
                    answer()
                else:
                    with m.If(req_ready):
                        m.next = "APIC_RESP"
            if not self.registered_request:
                with m.State("APIC_RESP"):
                    answer()
        return m
