"""CPU topologies and the APIC IDs they give, as Linux reads them back.

A topology ``PxCxT`` is P packages of C cores of T threads.  The firmware gives each logical
CPU an APIC ID made of bit fields, thread lowest: ``package << (core_bits + smt_bits) |
core << smt_bits | thread``, each field as wide as its count needs rounded up to a power of two
(``smt_bits = ceil(log2 T)``, ``core_bits = ceil(log2 C)``), which is what CPUID leaf 0xB/0x1F
reports as the level shifts and what Linux's topology code (arch/x86/kernel/cpu/topology*.c)
splits the ID by.  So ``2x6x2`` has sparse IDs: 0-11 and 16-27.  An explicit list of IDs
(``--apic-ids``) takes any IDs.
"""

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Topology", "parse_topology", "parse_apic_ids", "TopologyError"]

#: x2APIC IDs run from 0 to 0xFFFF_FFFE; 0xFFFF_FFFF is the broadcast
MAX_X2APIC_ID = 0xFFFF_FFFE


class TopologyError(ValueError):
    """A topology or ID list that cannot be; the message names the value."""


def _bits(count):
    return (count - 1).bit_length()


@dataclass(frozen=True)
class Topology:
    """``packages`` x ``cores`` x ``threads`` logical CPUs."""

    packages: int
    cores: int
    threads: int

    @property
    def smt_bits(self):
        return _bits(self.threads)

    @property
    def core_bits(self):
        return _bits(self.cores)

    @property
    def n_cpus(self):
        return self.packages * self.cores * self.threads

    def apic_id(self, package, core, thread):
        return package << (self.core_bits + self.smt_bits) | core << self.smt_bits | thread

    def apic_ids(self):
        """Every CPU's APIC ID, package by package, core by core, thread by thread."""
        return [self.apic_id(p, c, t) for p in range(self.packages) for c in range(self.cores)
                for t in range(self.threads)]

    def split(self, apic_id):
        """``(package, core, thread)`` of ``apic_id``, as Linux derives them."""
        return (apic_id >> (self.core_bits + self.smt_bits),
                (apic_id >> self.smt_bits) & ((1 << self.core_bits) - 1),
                apic_id & ((1 << self.smt_bits) - 1))


def parse_topology(text):
    """``"PxCxT"`` -> :class:`Topology`; TopologyError naming the text otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", str(text))
    if not match:
        raise TopologyError(f"topology must be PACKAGESxCORESxTHREADS such as 2x16x2, not {text!r}")
    topology = Topology(*(int(g) for g in match.groups()))
    if min(topology.packages, topology.cores, topology.threads) < 1:
        raise TopologyError(f"every count of topology {text!r} must be at least 1")
    if topology.apic_id(topology.packages - 1, topology.cores - 1, topology.threads - 1) > MAX_X2APIC_ID:
        raise TopologyError(f"topology {text!r} needs APIC IDs above {MAX_X2APIC_ID:#x}")
    return topology


def parse_apic_ids(text):
    """APIC IDs from ``text``: a comma- or space-separated list (decimal or 0x hex), or the path
    of a file holding one; at least one, no repeats, each 0 to 0xFFFF_FFFE.  TopologyError
    naming the entry otherwise."""
    source = str(text)
    if not re.fullmatch(r"[\s,0-9a-fA-FxX]+", source):
        # not a list: the name of a file of them
        path = Path(source)
        if not path.is_file():
            raise TopologyError(f"{text!r} is neither a list of APIC IDs nor a file")
        source = path.read_text()
    items = [item for item in re.split(r"[\s,]+", source.strip()) if item]
    if not items:
        raise TopologyError(f"no APIC IDs in {text!r}")
    ids = []
    for item in items:
        try:
            value = int(item, 0)
        except ValueError:
            raise TopologyError(f"APIC ID {item!r} is not a number") from None
        if not 0 <= value <= MAX_X2APIC_ID:
            raise TopologyError(f"APIC ID {item} is outside 0 to {MAX_X2APIC_ID:#x}")
        if value in ids:
            raise TopologyError(f"APIC ID {item} is listed twice")
        ids.append(value)
    return ids
