"""One soft-SoC core's own windows: its local APIC (xAPIC MMIO), its control window and its MSR
window (issue 11 part 4: out of :class:`apwake.rtl.soc.Soc`)."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.ghcb_msr.layouts import MSR_GHCB
from apwake.rtl.ghcb_msr.signatures import VcpuPortSignature
from apwake.rtl.lapic.signatures import RegisterBusSignature, Space
from apwake.rtl.lib.registers import RegisterDecoder
from .memory_map import AP_START, CONTROL_MAP, FEATURES, MSR_WINDOW_MAP
from .signatures import CoreWindow, WindowAccessSignature

__all__ = ["CoreWindows"]


class CoreWindows(wiring.Component):
    """The windows every core sees at the same addresses, with its own registers behind them
    (docs/ARCHITECTURE.md, "Soft-SoC"; the maps are :data:`CONTROL_MAP` and
    :data:`MSR_WINDOW_MAP` in :mod:`apwake.rtl.soc.memory_map`; the MSR window follows
    docs/spec/ghcb.md §1).

    * APIC (:attr:`CoreWindow.APIC`): the access goes to ``apic`` in space MMIO at
      ``addr[11:0]``: a request cycle (until ``req_ready``), then the response; the access is
      done with the response's low half.
    * Control (:attr:`CoreWindow.CONTROL`), done in its first cycle: CORE_ID, APIC_ID,
      START_ADDR (``start_addr``), N_CORES, AP_START, FEATURES, START_SP (``start_sp``),
      RAM_BYTES, STACK_BYTES; a store to RESET_VECTOR pulses ``back_to_firmware`` (not on the
      BSP).
    * MSR (:attr:`CoreWindow.MSR`, with ``msr_window``): SELECT holds the MSR number; a DATA_LO
      store holds the low half of the next WRMSR; a DATA_LO read is RDMSR of SELECT (the low half
      answers, the high half goes to DATA_HI); a DATA_HI store is WRMSR of SELECT with DATA_LO and
      the stored high half, in one access.  The GHCB MSR (``ap_start="ghcb"``) is read and written
      on ``vcpu`` in the access's first cycle; every other MSR goes to ``apic`` in space MSR (as
      the APIC window; the response's high half goes to DATA_HI, for a WRMSR and for an APIC
      window read too).  A VMGEXIT store (``ap_start="ghcb"``) pulses ``vcpu.vmgexit`` and parks
      the access: ``parked`` until ``vcpu.exit_done``, then ``resume`` for one cycle.
      Registers that are not readable read 0, as the map says.

    Parameters
    ----------
    core_index : int
        This core's index (CORE_ID).
    apic_id : int
        Its APIC ID (APIC_ID).
    n_cores : int
        N_CORES.
    bsp_index : int
        The BSP ignores RESET_VECTOR.
    ap_start : str
        ``"sipi"``, ``"mailbox"``, ``"ghcb"`` or ``"context"`` (AP_START; ``"ghcb"`` adds ``vcpu``).
    msr_window : bool
        The MSR window exists (FEATURES.msr_window); needed by ``"ghcb"``.
    x2apic : bool
        The APIC has x2APIC mode (FEATURES.x2apic).
    ram_bytes, stack_bytes : int
        RAM_BYTES and STACK_BYTES (:class:`apwake.rtl.soc.Soc`'s parameters), 32-bit.

    Attributes
    ----------
    access : In(WindowAccessSignature())
        The decoded accesses of this core, from the interconnect.
    apic : Out(RegisterBusSignature())
        This core's local APIC register bus (xAPIC MMIO and MSRs).
    start_addr : In(32)
        Where the core last started (START_ADDR).
    start_sp : In(32)
        The stack its last start gave it, or 0 (START_SP).
    back_to_firmware : Out(1)
        One cycle: the core (an AP) wrote RESET_VECTOR.
    vcpu : Out(VcpuPortSignature())
        Only with ``"ghcb"``: the core's GHCB MSR, VMGEXIT and exit_done.

    Raises
    ------
    ValueError
        An index out of range, an unknown ``ap_start``, ``"ghcb"`` without the MSR window.
    """

    def __init__(self, *, core_index, apic_id, n_cores, bsp_index, ap_start="sipi", msr_window=True,
                 x2apic=True, ram_bytes=8192, stack_bytes=256):
        for name, value in (("core_index", core_index), ("bsp_index", bsp_index)):
            if not isinstance(value, int) or not 0 <= value < n_cores:
                raise ValueError(f"{name} must be a core index below {n_cores}, not {value!r}")
        if not isinstance(apic_id, int) or not 0 <= apic_id < 1 << 32:
            raise ValueError(f"apic_id must be a 32-bit integer, not {apic_id!r}")
        for name, value in (("ram_bytes", ram_bytes), ("stack_bytes", stack_bytes)):
            if not isinstance(value, int) or not 0 <= value < 1 << 32:
                raise ValueError(f"{name} must be a 32-bit integer, not {value!r}")
        if ap_start not in AP_START:
            raise ValueError(f"ap_start must be one of {tuple(AP_START)}, not {ap_start!r}")
        if ap_start == "ghcb" and not msr_window:
            raise ValueError("ap_start='ghcb' needs the MSR window (the GHCB MSR is reached there)")
        for name, value in (("msr_window", msr_window), ("x2apic", x2apic)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self.ram_bytes, self.stack_bytes = ram_bytes, stack_bytes
        self.core_index, self.apic_id, self.n_cores, self.bsp_index = core_index, apic_id, n_cores, bsp_index
        self.ap_start, self.msr_window, self.x2apic = ap_start, msr_window, x2apic
        members = {"access": In(WindowAccessSignature()), "apic": Out(RegisterBusSignature()),
                   "start_addr": In(32), "start_sp": In(32), "back_to_firmware": Out(1)}
        if ap_start == "ghcb":
            members["vcpu"] = Out(VcpuPortSignature())
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        acc, apic = self.access, self.apic
        ghcb = self.ap_start == "ghcb"
        first = Signal()                       # the access's first cycle (the FSM is idle)
        answer = Signal(32)                    # what it reads, when it is done in that cycle
        to_apic, park = Signal(), Signal()     # it goes to the APIC; it is a VMGEXIT

        control = RegisterDecoder(CONTROL_MAP, acc.addr)
        with m.If(acc.window == CoreWindow.CONTROL):
            m.d.comb += answer.eq(control.read({
                "CORE_ID": self.core_index, "APIC_ID": self.apic_id, "START_ADDR": self.start_addr,
                "N_CORES": self.n_cores, "AP_START": AP_START[self.ap_start],
                "FEATURES": ((FEATURES["MSR_WINDOW"] if self.msr_window else 0) |
                             (FEATURES["X2APIC"] if self.x2apic else 0)),
                "START_SP": self.start_sp,
                "RAM_BYTES": self.ram_bytes, "STACK_BYTES": self.stack_bytes}))
            if self.core_index != self.bsp_index:
                m.d.comb += self.back_to_firmware.eq(first & acc.write & control["RESET_VECTOR"])
        with m.Elif(acc.window == CoreWindow.APIC):
            m.d.comb += to_apic.eq(1)

        select, lo, hi = Signal(32), Signal(32), Signal(32)
        # what the APIC request is: an MMIO access, or (MSR window) RDMSR/WRMSR of SELECT
        apic_space, apic_addr, apic_wdata = Space.MMIO, acc.addr[0:12], acc.wdata
        if self.msr_window:
            msr = RegisterDecoder(MSR_WINDOW_MAP, acc.addr)
            rdmsr, wrmsr = msr["DATA_LO"] & ~acc.write, msr["DATA_HI"] & acc.write
            is_ghcb = Signal()                 # SELECT is the GHCB MSR: the access goes to vcpu
            if ghcb:
                m.d.comb += is_ghcb.eq(select == MSR_GHCB)
            in_msr = acc.window == CoreWindow.MSR
            apic_space = Mux(in_msr, Space.MSR, Space.MMIO)
            apic_addr, apic_wdata = Mux(in_msr, select, apic_addr), Mux(in_msr, Cat(lo, acc.wdata), apic_wdata)
            with m.If(in_msr):
                m.d.comb += [answer.eq(msr.read({"SELECT": select, "DATA_HI": hi,
                                                 "DATA_LO": self.vcpu.msr_rdata[0:32] if ghcb else 0})),
                             to_apic.eq((rdmsr | wrmsr) & ~is_ghcb)]
                with m.If(first):
                    with m.If(msr["SELECT"] & acc.write):
                        m.d.sync += select.eq(acc.wdata)
                    with m.If(msr["DATA_LO"] & acc.write):
                        m.d.sync += lo.eq(acc.wdata)
                    if ghcb:
                        vcpu = self.vcpu
                        with m.If(is_ghcb & rdmsr):
                            m.d.sync += hi.eq(vcpu.msr_rdata[32:64])
                        with m.If(is_ghcb & wrmsr):
                            m.d.comb += [vcpu.msr_write.eq(1), vcpu.msr_wdata.eq(Cat(lo, acc.wdata))]
                        m.d.comb += [park.eq(msr["VMGEXIT"] & acc.write), vcpu.vmgexit.eq(park)]

        if ghcb:                               # a parked VMGEXIT waits for the hypervisor
            with m.If(acc.parked & self.vcpu.exit_done):
                m.d.sync += [acc.parked.eq(0), acc.resume.eq(1)]
            with m.Else():
                m.d.sync += acc.resume.eq(0)
            with m.If(first & park):
                m.d.sync += acc.parked.eq(1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += first.eq(acc.valid)
                with m.If(acc.valid):
                    with m.If(to_apic):
                        m.next = "APIC_REQ"
                    with m.Elif(park):
                        m.d.comb += acc.park.eq(1)
                    with m.Else():
                        m.d.comb += [acc.done.eq(1), acc.rdata.eq(answer)]
            with m.State("APIC_REQ"):
                m.d.comb += [apic.req_valid.eq(1), apic.space.eq(apic_space), apic.addr.eq(apic_addr),
                             apic.write.eq(acc.write), apic.wdata.eq(apic_wdata)]
                with m.If(apic.req_ready):
                    m.next = "APIC_RESP"
            with m.State("APIC_RESP"):
                with m.If(apic.resp_valid):
                    m.d.comb += [acc.done.eq(1), acc.rdata.eq(apic.rdata[0:32])]
                    if self.msr_window:
                        m.d.sync += hi.eq(apic.rdata[32:64])
                    m.next = "IDLE"
        return m
