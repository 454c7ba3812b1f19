"""The soft-SoC (``rtl/soc``) as a simulation design: the fabric's APIC converted once, PicoRV32's
Verilog from its package, the firmware image in RAM."""

import hashlib
from dataclasses import asdict, dataclass

from apwake.rtl.soc import Soc
from apwake.rtl.soc.picorv32 import verilog_source

from apwake.firmware.build import build_firmware
from apwake.sim.vip.lapic.design import FabricConfig, OnFabricConfig, OnFabricDesign

__all__ = ["SocConfig", "SocDesign"]


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

    @property
    def label(self):
        return (f"soc-{self.fabric.label}" + ("" if self.ap_start == "sipi" else f"-{self.ap_start}")
                + ("" if self.msr_window else "-no-msr"))


class SocDesign(OnFabricDesign):
    name = "apwake_soc"

    def __init__(self, config):
        super().__init__(config)
        self.firmware = build_firmware(config.fabric.apic_ids)
        self._core_name, self._core_text = verilog_source()

    def parameters(self):
        digest = lambda text: hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]
        return {**asdict(self.config), "firmware": digest(repr(self.firmware.words)),
                "picorv32": digest(self._core_text)}

    def verilog_files(self):
        return {self._core_name: self._core_text}

    def verilator_args(self):
        # PicoRV32 as it ships trips lint warnings Amaranth's output does not
        return ["-Wno-fatal", "-Wno-lint", "-Wno-style"]

    def wrap(self, fabric):
        c = self.config
        return Soc(fabric, firmware=self.firmware.words, ram_bytes=c.ram_bytes,
                   stack_bytes=c.stack_bytes, uart_divisor=c.uart_divisor, ap_start=c.ap_start,
                   msr_window=c.msr_window)
