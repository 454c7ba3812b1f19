"""The soft-SoC: N RISC-V cores (PicoRV32 or SERV, :mod:`.cores`), each with its local APIC on
the IPI fabric, shared RAM, a UART, LEDs and a hardware lock (issue 6).

x86 semantics on RISC-V cores: core ``bsp_index`` runs from reset; every other core is held in
reset by its APIC's wait-for-SIPI state.  INIT (level assert) puts a core back there; a SIPI
while waiting starts it at PROGADDR_RESET = :data:`AP_BOOT`, whose firmware stub loads
``START_SP`` into sp unless it is 0 (a state-carrying start's ESP) and jumps to ``START_ADDR``
(vector << 12, recorded at that SIPI, or the carried EIP), since PicoRV32's reset address is a
synthesis parameter (SERV's RESET_PC likewise).  Each core reaches its own APIC's xAPIC registers at
:data:`APIC_BASE` (RV32 has no RDMSR/WRMSR: the MMIO view).

The top connects the parts (issue 11 part 4), each a component with its own unit test
(tests/test_soc_parts.py): the cores, the shared bus (:class:`~.interconnect.Interconnect`: a
round-robin arbiter, a core keeps the grant for its whole access; RAM answers in one cycle),
the cores' own windows (:class:`~.core_windows.CoreWindows`: APIC, control, MSR; one engine
for every core, their state in a memory; in a large build one per group of
:data:`CORES_PER_WINDOW_BUS` cores, on a :class:`~.window_bus.WindowBus` beside them) and how
cores start (:class:`~.ap_start.ApStart`).
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from apwake.rtl.ghcb_msr import connect_apic_events
from apwake.rtl.lib.memory import registered_read_port
from .ap_start import ApStart
from .core_windows import CoreWindows
from .interconnect import Interconnect
from .window_bus import WindowBus
from .memory_map import AP_BOOT, AP_START, RAM_BASE
from .cores import DEFAULT_CORE, core_choice
from .signatures import StartTraceSignature

__all__ = ["Soc", "CORES_PER_WINDOW_BUS"]

#: a large (pipelined) build's group of cores with a windows engine and bus of their own
CORES_PER_WINDOW_BUS = 8


class Soc(wiring.Component):
    """Parameters
    ----------
    fabric : apwake.rtl.lapic.ApicFabric (not yet elaborated)
    core : str
        Which core every CPU is (:data:`~.cores.CORES`): ``"picorv32"`` (default) or ``"serv"``
        (bit-serial: about a sixth of the LUTs and six times the cycles of PicoRV32;
        synth/REPORT.md).  The firmware image must be built for its ISA
        (``build_firmware(..., isa=core_choice(core).isa)``).
    firmware : list of int
        The RAM image (32-bit words, little-endian), from ``firmware/build.py``.
    firmware_bytes : int or None
        Bytes of RAM the firmware uses from address 0, its zeroed data (.bss) included
        (``FirmwareImage.ram_end``); None counts the image alone.
    ram_bytes : int
    stack_bytes : int
        Per core, at the top of RAM (core i's stack ends ``i * stack_bytes`` below the top).
    uart_divisor : int
        Clocks per UART bit (12 MHz / 115200 = 104).
    msr_window : bool
        The per-core MSR window (x2APIC and GHCB MSRs); off in the iCEBreaker's default build
        (2 PicoRV32 cores, beside which it does not fit), on in its 4-SERV build
        (synth/REPORT.md).  CONTROL FEATURES tells the firmware.
    ap_start : str
        ``"sipi"``: APs wait for SIPI.  ``"mailbox"``: TDX style, APs start parked on an ACPI MP
        wakeup mailbox (:class:`apwake.rtl.mpwk_mailbox.MpwkMailbox`, version 1, at
        :data:`MAILBOX_BASE`); a Wakeup starts the core at WakeupVector, a write to the control
        window's RESET_VECTOR sends it back (ResetVector).  INIT/SIPI still work.
        ``"ghcb"``: SEV-ES style, the GHCB MSR unit (:class:`apwake.rtl.ghcb_msr.GhcbMsrUnit`) takes
        INIT and SIPI: a first SIPI launches the core at :data:`SEV_LAUNCH_ADDR`; each core
        reaches its GHCB MSR through the MSR window, and its VMGEXIT store completes only when
        the hypervisor resumes it (an AP reset hold stalls that core, not the bus).
        ``"context"``: the start-context unit (:class:`apwake.rtl.start_context.StartContextUnit`)
        takes the SIPIs and the calls of the START window (SET_INITIAL_AP_STATE, START,
        PARAVIRT) and reads the guest's ``struct vmi_ap_state`` and GDT from the RAM (a second
        initiator on the shared bus); a CONTEXT launch starts the core at the state's EIP with
        its ESP as the stack.

    Raises
    ------
    ValueError
        An unknown ``core`` or ``ap_start``, ``ap_start="ghcb"`` without the MSR window, a RAM
        size that is not a multiple of 4 above 4096, or a firmware or stacks that do not fit.

    Ports: ``uart_tx`` (serial line), ``uart_valid``/``uart_data`` (each byte software sends,
    for a testbench transcript), ``leds``, ``running``, ``trap`` (per core: the core's own trap;
    SERV has none) and ``bus_error`` (per core, sticky: an access no window answers,
    :class:`~.interconnect.Interconnect`); with
    ``"context"``, ``start_trace`` (:class:`~.signatures.StartTraceSignature`: the launch records
    and INITs, for a testbench).
    """

    def __init__(self, fabric, *, firmware, ram_bytes=8192, stack_bytes=256, uart_divisor=104,
                 ap_start="sipi", msr_window=True, core=DEFAULT_CORE, firmware_bytes=None):
        self.core = core_choice(core)
        if ap_start not in AP_START:
            raise ValueError(f"ap_start must be one of {tuple(AP_START)}, not {ap_start!r}")
        if ap_start == "ghcb" and not msr_window:
            raise ValueError("ap_start='ghcb' needs the MSR window (the GHCB MSR is reached there)")
        self.ap_start, self.msr_window = ap_start, msr_window
        if ram_bytes % 4 or not 4096 < ram_bytes <= 1 << 20:
            raise ValueError(f"ram_bytes must be a multiple of 4 above 4096 (the SIPI trampoline "
                             f"sits at 0x1000), not {ram_bytes!r}")
        used = max(4 * len(firmware), firmware_bytes or 0)
        if used > ram_bytes - fabric.n_cpus * stack_bytes:
            raise ValueError(f"firmware of {used} bytes (image and .bss) does not fit below the "
                             f"{fabric.n_cpus} stacks of {stack_bytes} bytes in {ram_bytes} bytes of RAM")
        if stack_bytes * fabric.n_cpus > ram_bytes // 2:
            raise ValueError(f"{fabric.n_cpus} stacks of {stack_bytes} bytes take more than half the RAM")
        self.fabric, self.firmware = fabric, list(firmware)
        self.ram_bytes, self.stack_bytes, self.uart_divisor = ram_bytes, stack_bytes, uart_divisor
        n = fabric.n_cpus
        members = {
            "uart_tx": Out(1, init=1), "uart_valid": Out(1), "uart_data": Out(8),
            "leds": Out(8), "running": Out(n), "trap": Out(n), "bus_error": Out(n),
        }
        if ap_start == "context":
            members["start_trace"] = Out(StartTraceSignature(n))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        fabric, n, bsp = self.fabric, self.fabric.n_cpus, self.fabric.bsp_index
        # A pipelined fabric is a large FPGA build's: the SoC then cuts its own long paths too,
        # the cores' bus requests (Interconnect, WindowBus), the APICs' requests (CoreWindows)
        # and SERV's reset (Serv) each from flip-flops, and the cores' own windows served
        # beside each group of cores instead of behind the shared bus (docs/ARCHITECTURE.md,
        # synth/REPORT.md "ulx3s-timing")
        large = fabric.pipelined
        m.submodules.fabric = fabric
        m.submodules.ap_start = starter = ApStart(apic_ids=fabric.apic_ids, bsp_index=bsp, ap_start=self.ap_start)
        m.submodules.interconnect = bus = Interconnect(
            n_cores=n, ram_bytes=self.ram_bytes, uart_divisor=self.uart_divisor, msr_window=self.msr_window,
            mailbox=self.ap_start == "mailbox", start=self.ap_start == "context", dma=self.ap_start == "context",
            registered_requests=large, core_windows=not large)
        m.submodules.ram = ram = Memory(shape=32, depth=self.ram_bytes // 4, init=self.firmware)
        # not read in a store's cycle (whose answer no core uses), so never read as it is written
        ram_read = registered_read_port(m, ram, name="ram")
        m.d.comb += [ram_read.addr.eq(bus.ram_read.addr), ram_read.en.eq(bus.ram_read.en & ~bus.ram_write.en.any()),
                     bus.ram_read.data.eq(ram_read.data)]
        wiring.connect(m, bus.ram_write, ram.write_port(granularity=8))
        if self.ap_start == "mailbox":
            wiring.connect(m, bus.mailbox_bus, starter.mailbox_bus)
        if self.ap_start == "context":
            wiring.connect(m, bus.start_bus, starter.start_bus)
            wiring.connect(m, starter.memory, bus.dma)
            wiring.connect(m, starter.trace, wiring.flipped(self.start_trace))
        m.d.comb += [self.uart_tx.eq(bus.uart_tx), self.uart_valid.eq(bus.uart_valid),
                     self.uart_data.eq(bus.uart_data), self.leds.eq(bus.leds), self.bus_error.eq(bus.bus_error)]

        # the cores' own windows: one engine behind the shared bus, or (a large build) one per
        # group of CORES_PER_WINDOW_BUS cores, with a bus of its own beside them (WindowBus)
        groups = [range(first, min(first + CORES_PER_WINDOW_BUS, n)) for first in range(0, n, CORES_PER_WINDOW_BUS)]
        windows_of, bus_of = {}, {}     # core -> (its group's engine, its index there); -> its bus port
        for g, cores in enumerate(groups if large else [range(n)]):
            windows = CoreWindows(
                apic_ids=fabric.apic_ids, bsp_index=bsp, cores=cores, ap_start=self.ap_start,
                msr_window=self.msr_window, x2apic=fabric.x2apic_support, ram_bytes=self.ram_bytes,
                stack_bytes=self.stack_bytes, registered_request=large)
            if large:
                m.submodules[f"windows{g}"] = windows
                m.submodules[f"window_bus{g}"] = window_bus = WindowBus(
                    n_cores=len(cores), msr_window=self.msr_window, registered_requests=True)
                wiring.connect(m, window_bus.windows, windows.access)
                for j, i in enumerate(cores):
                    wiring.connect(m, window_bus.shared[j], bus.cores[i])
                    bus_of[i] = window_bus.cores[j]
            else:
                m.submodules.windows = windows
                wiring.connect(m, bus.windows, windows.access)
                bus_of.update(enumerate(bus.cores))
            windows_of.update((i, (windows, j)) for j, i in enumerate(cores))
        for i in range(n):
            m.submodules[f"core{i}"] = core = self.core.make(
                reset_address=RAM_BASE if i == bsp else AP_BOOT, registered_reset=large)
            wiring.connect(m, core.bus, bus_of[i])
            windows, j = windows_of[i]
            wiring.connect(m, windows.apic[j], fabric.cpu[i].reg)
            connect_apic_events(m, fabric.cpu[i], starter.apic[i])
            if self.ap_start == "ghcb":
                wiring.connect(m, windows.vcpu[j], starter.vcpu[i])
            m.d.comb += [core.run.eq(starter.run[i]), self.running[i].eq(starter.run[i]), self.trap[i].eq(core.trap),
                         windows.start_addr[j].eq(starter.start_addr[i]), windows.start_sp[j].eq(starter.start_sp[i]),
                         starter.back_to_firmware[i].eq(windows.back_to_firmware[j])]
        return m
