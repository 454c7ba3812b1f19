"""cocotb's Verilator runner (``cocotb_tools.runner.Verilator``) with apwake's tool location and
build flags: imported only where a model is built or run (:func:`apwake.sim.harness.build.build`,
:func:`apwake.sim.harness.run.run_cocotb`), not by the simulator process."""

import logging

from cocotb_tools.runner import Verilator

from .build import MAKE_SPEED_ARGS, USER_MAKE_ARGS
from .toolchain import objcache_make_args, verilator_env, verilator_root

__all__ = ["ApwakeVerilator"]


class ApwakeVerilator(Verilator):
    """cocotb's Verilator runner with apwake's tool location and build fixes."""

    #: keep the stock runner's --public-flat-rw (only the benchmark sets it, to measure it)
    public_everything = False

    def __init__(self):
        super().__init__()
        self.log = logging.getLogger("apwake.verilator")   # quiet unless asked, unlike the stock INFO

    def _build_command(self):
        cmds = super()._build_command()
        # The stock runner passes --public-flat-rw, which makes every net public: slower to
        # compile and to run.  public_ports.vlt makes public only the top's ports.
        if not self.public_everything:
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
        if self.waves:
            # Waveform builds are for looking, not for speed: unoptimised C++ compiles much
            # faster on the flat (traceable) model.  The PCH fix as in MAKE_SPEED_ARGS.
            cmds[1] += ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O0", "OPT_SLOW=-O0"]
        else:
            cmds[1] += MAKE_SPEED_ARGS
        cmds[1] += [*objcache_make_args(), *USER_MAKE_ARGS]
        return cmds

    def _simulator_in_path_build_only(self):
        self.executable = str(verilator_root() / "bin" / "verilator")

    def _set_env_build(self):
        super()._set_env_build()
        self.env = verilator_env(self.env)
