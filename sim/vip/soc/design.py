"""The soft-SoC (``rtl/soc``) as a simulation design: the fabric's APIC converted once, the cores'
Verilog (PicoRV32's or SERV's) from its package, the firmware image for their ISA in RAM."""

import hashlib
from dataclasses import asdict, dataclass

from apwake.rtl.soc import Soc
from apwake.rtl.soc.cores import DEFAULT_CORE, core_choice

from apwake.firmware.build import build_firmware
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["SocConfig", "SocDesign", "BUDGET_NS_PER_4"]

#: simulated ns the firmware may take to print its last line, per 4 cores (the APs start and
#: print one after another), by core: PicoRV32 needs under 1 ms on 4 cores and about 12 ms of
#: INIT-SIPI on 32 (1.2 million cycles; the mailbox start wakes each AP three times); SERV about
#: 6 times PicoRV32's cycles on few cores.  A watchdog: a generous one costs only a stuck run.
BUDGET_NS_PER_4 = {"picorv32": 25_000_000, "serv": 40_000_000}


@dataclass(frozen=True)
class SocConfig(OnFabricConfig):
    ENV = "APWAKE_SOC_CONFIG"
    fabric: FabricConfig
    ram_bytes: int = 8192
    stack_bytes: int = 256
    uart_divisor: int = 4          # simulation: 4 clocks a bit; the boards use 12 MHz / 115200
    msr_window: bool = True        # the per-core MSR window (the iCEBreaker build has none)
    ap_start: str = "sipi"         # "mailbox": parked on the MP wakeup mailbox (TDX style);
                                   # "ghcb": SEV-ES style, the GHCB MSR unit takes INIT/SIPI;
                                   # "context": the start-context unit (VMI, direct start)
    core: str = DEFAULT_CORE       # or "serv" (apwake.rtl.soc.cores.CORES)
    probe_bus_error: bool = False  # the BSP ends with a load no window answers (build_firmware)

    def __post_init__(self):
        super().__post_init__()
        core_choice(self.core)     # an unknown core is refused here, before any build
        if self.probe_bus_error and self.ap_start != "sipi":
            raise ValueError(f"probe_bus_error is an INIT-SIPI run's ending, not {self.ap_start!r}'s")

    @property
    def budget_ns(self):
        """Simulated ns to wait for the firmware's last line before calling the run stuck: the
        watchdog of the SoC tests and of `apwake run soc-demo` (:data:`BUDGET_NS_PER_4`)."""
        return BUDGET_NS_PER_4[self.core] * -(-self.n_cpus // 4)

    @property
    def leds_all_online(self):
        """What the 8 LEDs show once every core is online: the firmware's online mask (bit i for
        core i, firmware/main.c), its first 8 bits."""
        return ((1 << self.n_cpus) - 1) & 0xFF

    @property
    def label(self):
        return (f"soc-{self.fabric.label}" + ("" if self.ap_start == "sipi" else f"-{self.ap_start}")
                + ("" if self.msr_window else "-no-msr") + ("" if self.core == DEFAULT_CORE else f"-{self.core}")
                + ("-probe" if self.probe_bus_error else ""))


class SocDesign(OnFabricDesign):
    name = "apwake_soc"

    def __init__(self, config):
        super().__init__(config)
        self.core = core_choice(config.core)
        self.firmware = build_firmware(config.fabric.apic_ids, isa=self.core.isa,
                                       probe_bus_error=config.probe_bus_error)
        self._core_files = self.core.verilog_files()

    def parameters(self):
        digest = lambda text: hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]
        return {**asdict(self.config), "firmware": digest(repr(self.firmware.words)),
                "core_verilog": digest("".join(self._core_files.values()))}

    def verilog_files(self):
        return dict(self._core_files)

    def watched_outputs(self):
        return []           # the cores, not models, take the APICs' events: no CPU ports

    def verilator_args(self):
        # PicoRV32 and SERV as they ship trip lint warnings Amaranth's output does not
        return ["-Wno-fatal", "-Wno-lint", "-Wno-style"]

    def wrap(self, fabric):
        c = self.config
        return Soc(fabric, firmware=self.firmware.words, firmware_bytes=self.firmware.ram_end, ram_bytes=c.ram_bytes,
                   stack_bytes=c.stack_bytes, uart_divisor=c.uart_divisor, ap_start=c.ap_start,
                   msr_window=c.msr_window, core=c.core)
