"""The soft-SoC: N PicoRV32 cores, each with its local APIC on the IPI fabric, shared RAM, a UART,
LEDs and a hardware lock (issue 6).

x86 semantics on RISC-V cores: core ``bsp_index`` runs from reset; every other core is held in
reset by its APIC's wait-for-SIPI state.  INIT (level assert) puts a core back there; a SIPI
while waiting starts it at PROGADDR_RESET = :data:`AP_BOOT`, whose firmware stub reads
``START_ADDR`` (vector << 12, recorded at that SIPI) and jumps there, since PicoRV32's reset
address is a synthesis parameter.  Each core reaches its own APIC's xAPIC registers at
:data:`APIC_BASE` (RV32 has no RDMSR/WRMSR: the MMIO view).

Interconnect: one shared bus, a round-robin arbiter between the cores (a core keeps the grant
for its whole access); RAM answers in one cycle, the APIC window through the APIC register bus.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from apwake.rtl.lib.bus import access_states
from apwake.rtl.lib.registers import RegisterDecoder
from apwake.rtl.lib.priority import RoundRobinArbiter
from apwake.rtl.lapic.signatures import Space
from apwake.rtl.ghcb_msr import connect_apic_events
from apwake.rtl.ghcb_msr.layouts import MSR_GHCB
from .memory_map import (AP_BOOT, AP_START, BOOT_ROM_BYTES, CONTROL_MAP, FEATURES, IO_MAP, MSR_WINDOW_MAP,
                         SOC_MAP, RAM_BASE)
from .ap_start import ApStart
from .picorv32 import PicoRV32
from .uart import UartTx

__all__ = ["Soc"]

_RAM, _IO, _APIC, _CONTROL, _MAILBOX, _MSR = (SOC_MAP.slot(name) for name in (
    "ram", "io", "apic", "control", "mailbox", "msr"))


class Soc(wiring.Component):
    """Parameters
    ----------
    fabric : apwake.rtl.lapic.ApicFabric (not yet elaborated)
    firmware : list of int
        The RAM image (32-bit words, little-endian), from ``firmware/build.py``.
    ram_bytes : int
    stack_bytes : int
        Per core, at the top of RAM (core i's stack ends ``i * stack_bytes`` below the top).
    uart_divisor : int
        Clocks per UART bit (12 MHz / 115200 = 104).
    msr_window : bool
        The per-core MSR window (x2APIC and GHCB MSRs); off on the iCE40UP5K, where it does
        not fit beside two cores.  CONTROL FEATURES tells the firmware.
    ap_start : str
        ``"sipi"``: APs wait for SIPI.  ``"mailbox"``: TDX style, APs start parked on an ACPI MP
        wakeup mailbox (:class:`apwake.rtl.mpwk_mailbox.MpwkMailbox`, version 1, at
        :data:`MAILBOX_BASE`); a Wakeup starts the core at WakeupVector, a write to the control
        window's RESET_VECTOR sends it back (ResetVector).  INIT/SIPI still work.
        ``"ghcb"``: SEV-ES style, the GHCB MSR unit (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`) takes
        INIT and SIPI: a first SIPI launches the core at :data:`SEV_LAUNCH_ADDR`; each core
        reaches its GHCB MSR through the MSR window, and its VMGEXIT store completes only when
        the hypervisor resumes it (an AP reset hold stalls that core, not the bus).

    Ports: ``uart_tx`` (serial line), ``uart_valid``/``uart_data`` (each byte software sends,
    for a testbench transcript), ``leds``, ``running`` and ``trap`` (per core).
    """

    def __init__(self, fabric, *, firmware, ram_bytes=8192, stack_bytes=256, uart_divisor=104,
                 ap_start="sipi", msr_window=True):
        if ap_start not in AP_START:
            raise ValueError(f"ap_start must be one of {tuple(AP_START)}, not {ap_start!r}")
        if ap_start == "ghcb" and not msr_window:
            raise ValueError("ap_start='ghcb' needs the MSR window (the GHCB MSR is reached there)")
        self.ap_start, self.msr_window = ap_start, msr_window
        if ram_bytes % 4 or not 4096 < ram_bytes <= 1 << 20:
            raise ValueError(f"ram_bytes must be a multiple of 4 above 4096 (the SIPI trampoline "
                             f"sits at 0x1000), not {ram_bytes!r}")
        if 4 * len(firmware) > ram_bytes - fabric.n_cpus * stack_bytes:
            raise ValueError(f"firmware of {len(firmware) * 4} bytes does not fit below the "
                             f"{fabric.n_cpus} stacks of {stack_bytes} bytes in {ram_bytes} bytes of RAM")
        if stack_bytes * fabric.n_cpus > ram_bytes // 2:
            raise ValueError(f"{fabric.n_cpus} stacks of {stack_bytes} bytes take more than half the RAM")
        self.fabric, self.firmware = fabric, list(firmware)
        self.ram_bytes, self.stack_bytes, self.uart_divisor = ram_bytes, stack_bytes, uart_divisor
        n = fabric.n_cpus
        super().__init__({
            "uart_tx": Out(1, init=1), "uart_valid": Out(1), "uart_data": Out(8),
            "leds": Out(8), "running": Out(n), "trap": Out(n),
        })

    def elaborate(self, platform):
        m = Module()
        fabric = self.fabric
        n, bsp = fabric.n_cpus, fabric.bsp_index
        m.submodules.fabric = fabric
        m.submodules.uart = uart = UartTx(self.uart_divisor)
        m.d.comb += self.uart_tx.eq(uart.tx)

        cores = []
        for i in range(n):
            core = PicoRV32(reset_address=RAM_BASE if i == bsp else AP_BOOT,
                            stack_address=RAM_BASE + self.ram_bytes - i * self.stack_bytes)
            m.submodules[f"core{i}"] = core
            cores.append(core)

        # --- how cores start: wait-for-SIPI, the mailbox or the GHCB unit ------------------------------
        m.submodules.ap_start = starter = ApStart(apic_ids=fabric.apic_ids, bsp_index=bsp, ap_start=self.ap_start)
        run = starter.run
        start_addr = Array(starter.start_addr[i] for i in range(n))
        ghcb = starter if self.ap_start == "ghcb" else None          # its vcpu ports
        for i, core in enumerate(cores):
            connect_apic_events(m, fabric.cpu[i], starter.apic[i])
            m.d.comb += [core.run.eq(run[i]), self.running[i].eq(run[i]), self.trap[i].eq(core.trap)]
        back_to_firmware = starter.back_to_firmware      # a core wrote RESET_VECTOR (one cycle)

        # --- the shared bus ----------------------------------------------------------------------------
        m.submodules.arbiter = arbiter = RoundRobinArbiter(n)
        sel = Signal(range(max(n, 2)))
        addr = Array(c.bus.addr for c in cores)[sel]
        wdata = Array(c.bus.wdata for c in cores)[sel]
        wstrb = Array(c.bus.wstrb for c in cores)[sel]
        write = wstrb != 0
        rdata = Signal(32)
        done = Signal()
        # a core whose VMGEXIT store waits for the hypervisor: not granted, answered on exit_done
        stalled = Signal(n)
        resumed = Signal(n)
        for i, core in enumerate(cores):
            m.d.comb += [core.bus.ready.eq((done & (sel == i)) | resumed[i]), core.bus.rdata.eq(rdata)]
        # the MSR window, per core
        msr_select = Array(Signal(32, name=f"msr_select{i}") for i in range(n))
        msr_lo = Array(Signal(32, name=f"msr_lo{i}") for i in range(n))
        msr_hi = Array(Signal(32, name=f"msr_hi{i}") for i in range(n))
        # what the APIC register bus access does (an MMIO window access or an MSR)
        apic_space, apic_addr = Signal(Space), Signal(32)
        apic_write, apic_wdata = Signal(), Signal(64)
        if ghcb is not None:
            for i in range(n):
                with m.If(stalled[i] & ghcb.vcpu[i].exit_done):
                    m.d.sync += [stalled[i].eq(0), resumed[i].eq(1)]
                with m.Else():
                    m.d.sync += resumed[i].eq(0)

        m.submodules.ram = ram = Memory(shape=32, depth=self.ram_bytes // 4, init=self.firmware)
        rport = ram.read_port()
        wport = ram.write_port(granularity=8)
        word = addr[2:2 + (self.ram_bytes // 4 - 1).bit_length()]
        m.d.comb += [rport.addr.eq(word), wport.addr.eq(word), wport.data.eq(wdata)]

        lock = Signal()
        leds = Signal(8)
        m.d.comb += self.leds.eq(leds)
        apic_ids = Array(Const(a, 32) for a in fabric.apic_ids)

        # the register windows, decoded from their descriptions (rtl/soc/memory_map.py)
        io = RegisterDecoder(IO_MAP, addr)
        control = RegisterDecoder(CONTROL_MAP, addr)
        msr = RegisterDecoder(MSR_WINDOW_MAP, addr)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += arbiter.requests.eq(Cat(*(c.bus.valid for c in cores)) & ~stalled & ~resumed)
                with m.If(arbiter.valid):
                    m.d.sync += sel.eq(arbiter.grant_index)
                    m.next = "DECODE"
            with m.State("DECODE"):
                window = addr[28:32]
                with m.If(window == _RAM):
                    with m.If(addr[0:28] >= BOOT_ROM_BYTES):     # the boot ROM ignores stores
                        m.d.comb += wport.en.eq(wstrb)
                    m.next = "RAM"
                with m.Elif(window == _IO):
                    m.d.sync += rdata.eq(io.read({"UART_STATUS": uart.busy, "LEDS": leds, "LOCK": lock}))
                    m.next = "DONE"
                    with m.If(io["UART_TX"] & write):
                        with m.If(uart.busy):
                            m.next = "DECODE"            # the store waits for the transmitter
                        with m.Else():
                            m.d.comb += [uart.start.eq(1), uart.data.eq(wdata[0:8]),
                                         self.uart_valid.eq(1), self.uart_data.eq(wdata[0:8])]
                    with m.If(io["LEDS"] & write):
                        m.d.sync += leds.eq(wdata[0:8])
                    with m.If(io["LOCK"]):
                        m.d.sync += lock.eq(Mux(write, wdata[0], 1))       # a read is test and set
                with m.Elif(window == _APIC):
                    m.d.sync += [apic_space.eq(Space.MMIO), apic_addr.eq(addr[0:12]),
                                 apic_write.eq(write), apic_wdata.eq(wdata)]
                    m.next = "APIC_REQ"
                with m.Elif(window == _CONTROL):
                    m.d.sync += rdata.eq(control.read({
                        "CORE_ID": sel, "APIC_ID": apic_ids[sel], "START_ADDR": start_addr[sel], "N_CORES": n,
                        "AP_START": AP_START[self.ap_start],
                        "FEATURES": FEATURES["MSR_WINDOW"] if self.msr_window else 0}))
                    with m.If(write & control["RESET_VECTOR"] & (sel != bsp)):
                        m.d.comb += back_to_firmware.eq(1 << sel)
                    m.next = "DONE"
                if self.ap_start == "mailbox":
                    with m.Elif(window == _MAILBOX):
                        m.next = "MAILBOX"
                with m.Elif((window == _MSR) & self.msr_window):
                    m.next = "DONE"
                    with m.If(msr["SELECT"]):
                        with m.If(write):
                            m.d.sync += msr_select[sel].eq(wdata)
                        m.d.sync += rdata.eq(msr_select[sel])
                    with m.Elif(msr["DATA_LO"] & write):
                        m.d.sync += msr_lo[sel].eq(wdata)
                    with m.Elif(msr["DATA_HI"] & ~write):
                        m.d.sync += rdata.eq(msr_hi[sel])
                    if ghcb is not None:
                        is_ghcb = msr_select[sel] == MSR_GHCB
                        with m.Elif(is_ghcb & msr["DATA_LO"]):  # RDMSR GHCB
                            vcpu_msr = Array(v.msr_rdata for v in ghcb.vcpu)[sel]
                            m.d.sync += [rdata.eq(vcpu_msr[0:32]), msr_hi[sel].eq(vcpu_msr[32:64])]
                        with m.Elif(is_ghcb & msr["DATA_HI"]):  # WRMSR GHCB
                            for i in range(n):
                                with m.If(sel == i):
                                    m.d.comb += [ghcb.vcpu[i].msr_write.eq(1),
                                                 ghcb.vcpu[i].msr_wdata.eq(Cat(msr_lo[i], wdata))]
                    with m.Elif(msr["DATA_LO"] | msr["DATA_HI"]):
                        # RDMSR / WRMSR of the core's local APIC (x2APIC, IA32_APIC_BASE)
                        m.d.sync += [apic_space.eq(Space.MSR), apic_addr.eq(msr_select[sel]),
                                     apic_write.eq(write), apic_wdata.eq(Cat(msr_lo[sel], wdata))]
                        m.next = "APIC_REQ"
                    if ghcb is not None:
                        with m.Elif(write & msr["VMGEXIT"]):
                            for i in range(n):
                                with m.If(sel == i):
                                    m.d.comb += ghcb.vcpu[i].vmgexit.eq(1)
                                    m.d.sync += stalled[i].eq(1)
                            m.next = "IDLE"          # the core's answer waits for exit_done
                with m.Else():
                    m.d.sync += rdata.eq(0)
                    m.next = "DONE"
            with m.State("RAM"):
                m.d.sync += rdata.eq(rport.data)
                m.next = "DONE"
            with m.State("APIC_REQ"):
                for i in range(n):
                    reg = fabric.cpu[i].reg
                    with m.If(sel == i):
                        m.d.comb += [reg.req_valid.eq(1), reg.space.eq(apic_space),
                                     reg.addr.eq(apic_addr), reg.write.eq(apic_write),
                                     reg.wdata.eq(apic_wdata)]
                        with m.If(reg.req_ready):
                            m.next = "APIC_RESP"
            with m.State("APIC_RESP"):
                for i in range(n):
                    reg = fabric.cpu[i].reg
                    with m.If((sel == i) & reg.resp_valid):
                        m.d.sync += [rdata.eq(reg.rdata[0:32]), msr_hi[sel].eq(reg.rdata[32:64])]
                        m.next = "DONE"
            if self.ap_start == "mailbox":
                access_states(m, starter.mailbox_bus, "MAILBOX", then="DONE", addr=addr, write=write,
                              wdata=wdata, wstrb=wstrb, capture=rdata)
            with m.State("DONE"):
                m.d.comb += done.eq(1)
                m.next = "IDLE"
        return m

