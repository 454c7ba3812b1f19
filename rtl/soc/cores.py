"""The soft-SoC's core choice (issue 16): which RISC-V core runs the firmware, with the ISA the
firmware is compiled for and the Verilog the build needs.  Every choice has the same ports
(``bus``: :class:`~.picorv32.NativeBusSignature`, ``run``, ``trap``), so the rest of the SoC
does not know which it has."""

from dataclasses import dataclass

from apwake.rtl.lib.checks import check_bool

__all__ = ["CoreChoice", "CORES", "DEFAULT_CORE", "core_choice"]


@dataclass(frozen=True)
class CoreChoice:
    """One core the SoC can be built with.

    Attributes
    ----------
    name : str
        The SoC parameter's value (``Soc(core=...)``, ``apwake run soc-demo --core``).
    isa : str
        What the firmware is compiled for (``firmware/build.py``): ``"rv32i"`` plus any of the
        ``m``/``c`` letters the core's parameters enable.
    description : str
    """

    name: str
    isa: str
    description: str

    def make(self, *, reset_address, registered_reset=False):
        """The core as a component with ``bus``, ``run`` and ``trap``: it starts at
        ``reset_address`` after reset.  sp is not set at reset: the firmware's entry code sets
        it (``firmware/crt0.S``), so every core of one reset address is the same module with
        the same parameters (Verilator generates its code once for all of them).
        ``registered_reset``: SERV's reset from a flip-flop of its own (:class:`~.serv.Serv`);
        PicoRV32's bus outputs are flip-flops already, so it takes no such option (ignored).

        Raises
        ------
        TypeError
            ``registered_reset`` is not a bool (for either core).
        """
        check_bool("registered_reset", registered_reset)
        if self.name == "picorv32":
            from .picorv32 import PicoRV32
            return PicoRV32(reset_address=reset_address)
        from .serv import Serv
        return Serv(reset_address=reset_address, registered_reset=registered_reset)

    def verilog_files(self):
        """``{file name: text}``: the core's Verilog, from its ``pythondata-cpu-*`` package."""
        if self.name == "picorv32":
            from .picorv32 import verilog_source
            return dict([verilog_source()])
        from .serv import verilog_sources
        return verilog_sources()


#: the choices, by name
CORES = {
    "picorv32": CoreChoice("picorv32", "rv32i", "PicoRV32 (YosysHQ): RV32I without MUL/DIV, "
                                                "compressed ISA or IRQ; dual-port register file"),
    "serv": CoreChoice("serv", "rv32i", "SERV 1.2.0 (Olof Kindgren): bit-serial RV32I without Zicsr; "
                                        "register file in a 512 x 2-bit RAM"),
}


#: the core a SoC has unless told otherwise
DEFAULT_CORE = "picorv32"


def core_choice(core):
    """The :class:`CoreChoice` named ``core``.

    Raises
    ------
    ValueError
        ``core`` is not one of :data:`CORES`' names (the message names the parameter, the value
        and the choices).
    """
    if not isinstance(core, str) or core not in CORES:
        raise ValueError(f"core must be one of {tuple(CORES)}, not {core!r}")
    return CORES[core]
