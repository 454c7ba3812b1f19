"""A synchronous memory read port that FPGA block RAM maps without collision logic (issue 16).

Amaranth's synchronous read port (``Memory.read_port()``) promises the old data when the same
word is written in the same cycle.  The iCE40's SB_RAM40_4K leaves that case undefined, so Yosys
(``memory_libmap``) keeps the promise with logic of its own (``emulate_read_first`` in its log):
the write's data, address and enable in flip-flops, delayed a cycle, and a comparator and
multiplexer on the read data.  In the iCEBreaker's 4-SERV SoC build that was 68 flip-flops for
each APIC's register memory alone (synth/REPORT.md, "icebreaker-serv-c4-msr-nox2apic"; an APIC
synthesised alone did not get them).

A block that never uses a word read in the cycle it is written builds its port here instead: an
asynchronous read port followed by a flip-flop (the same old-data behaviour in the Verilog, so
Verilator's simulation does not change), on a memory marked ``no_rw_check``.  Yosys's
``memory_dff`` folds the flip-flop into a synchronous port and, because of the mark, treats a
collision as don't-care (Yosys manual, ``memory_dff -no-rw-check``: "same result as setting the
no_rw_check attribute on all memories"), so the block RAM is used as it is.  What remains is one
flip-flop and a LUT a data bit, with which Yosys gives the read data its initial value (0) until
the first read: Amaranth signals always have one.
"""

from amaranth import Signal

__all__ = ["RegisteredReadPort", "registered_read_port"]


class RegisteredReadPort:
    """The port :func:`registered_read_port` returns.

    Attributes
    ----------
    addr : Signal
        The word to read, taken at the clock edge where ``en`` is high.
    en : Signal(1), init 1
        Read enable; ``data`` keeps its value while it is low.
    data : Signal of the memory's shape
        The word read at the last enabled edge: the value before a write of that edge.
    """

    def __init__(self, addr, en, data):
        self.addr, self.en, self.data = addr, en, data


def registered_read_port(m, memory, *, domain="sync", name=None):
    """A read port of ``memory`` (an ``amaranth.lib.memory.Memory``, not yet elaborated) in
    ``domain`` that reads as ``memory.read_port(domain=domain)`` does, for a block that never
    uses a word read in the cycle it is written (the caller's promise: on an FPGA such a read
    returns an undefined value).

    Adds the port's logic to module ``m`` and marks the memory ``no_rw_check``, which Yosys
    applies to the whole memory: a plain ``read_port()`` of the same memory loses its old-data
    guarantee on an FPGA too.  One difference from ``read_port()``, in Amaranth's own simulator
    only: under the domain's reset with ``en`` low, its read port's data is cleared; this one
    keeps its value, as both do in the Verilog (Verilator, Yosys) and on an FPGA.

    Returns
    -------
    RegisteredReadPort
        ``addr``, ``en`` and ``data``, named ``NAME_read_en`` and ``NAME_read_data``.

    Raises
    ------
    ValueError
        ``domain`` is ``"comb"`` (ask the memory for an asynchronous port instead); the memory
        is then left unmarked.
    amaranth.lib.memory.AlreadyElaborated
        ``memory`` was already elaborated (from ``memory.read_port``).
    """
    if domain == "comb":
        raise ValueError("domain must be a clock domain, not 'comb': use memory.read_port(domain='comb')")
    port = memory.read_port(domain="comb")
    memory.attrs["no_rw_check"] = 1
    prefix = f"{name}_" if name else ""
    en = Signal(init=1, name=f"{prefix}read_en")
    # not reset: the Verilog of a synchronous read port has no reset either, and memory_dff folds
    # it into the block RAM's output register
    kept = Signal(memory.shape, name=f"{prefix}read_data", reset_less=True)
    with m.If(en):
        m.d[domain] += kept.eq(port.data)
    return RegisteredReadPort(port.addr, en, kept)
