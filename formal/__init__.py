"""Formal proofs of the RTL blocks: proof harnesses beside the blocks, and the list of runs.

One subpackage per RTL block, named like its ``rtl/`` folder: :mod:`.lapic` (the IPI fabric),
:mod:`.mpwk_mailbox` (the MP wakeup mailbox), :mod:`.ghcb_msr` (the GHCB MSR unit).  Each holds a
harness: an Amaranth ``Elaboratable`` around the unchanged block with ``Assert``/``Assume``/
``Cover`` statements (:mod:`.props`).  :data:`PROOFS` says how each is run (mode, depth,
solver, whether CI runs it); :func:`run` runs one with SymbiYosys
(:func:`apwake.sim.harness.formal.run_proof`).  ``apwake prove`` and the ``formal`` pytest
marker use them; docs/FORMAL.md lists the properties and the measured times.
"""

from dataclasses import dataclass

from .props import DEFECTS_DOC

__all__ = ["Proof", "PROOFS", "BLOCKS", "DEFECTS_DOC", "harness", "run", "proofs_of"]

#: block name (the rtl/ folder) -> what ``apwake prove`` accepts for it too
BLOCKS = {"lapic": ("fabric",), "mpwk_mailbox": ("mailbox", "mpwk"), "ghcb_msr": ("ghcb",)}


@dataclass(frozen=True)
class Proof:
    """One SymbiYosys run of a harness.

    Attributes
    ----------
    name : str
        Unique, also the run's folder under ``build/formal/``.
    block : str
        A key of :data:`BLOCKS`.
    config : dict
        The harness's keyword arguments.
    mode : str
        ``"bmc"``, ``"prove"`` or ``"cover"``.
    depth : int
    solver : str
    slow : bool
        Left out of CI and of the default pytest run (``-m slow``, ``apwake prove --slow``).
    """

    name: str
    block: str
    config: tuple
    mode: str
    depth: int
    solver: str = "yices"
    slow: bool = False


def _runs(block, label, config, *, bmc, cover, prove=None, slow=False, slow_bmc=None):
    runs = [Proof(f"{label}-bmc", block, config, "bmc", bmc, slow=slow),
            Proof(f"{label}-cover", block, config, "cover", cover, slow=slow)]
    if prove:
        runs.append(Proof(f"{label}-prove", block, config, "prove", prove, slow=slow))
    if slow_bmc:
        runs.append(Proof(f"{label}-bmc{slow_bmc}", block, config, "bmc", slow_bmc, slow=True))
    return runs


#: every proof run; CI runs those with ``slow=False`` (docs/FORMAL.md has their times)
PROOFS = (
    _runs("mpwk_mailbox", "mailbox-v1", (("version", 1),), bmc=14, cover=14, prove=12)
    + _runs("mpwk_mailbox", "mailbox-v0", (("version", 0),), bmc=14, cover=14, prove=12)
    + _runs("ghcb_msr", "ghcb-es", (("snp", False),), bmc=16, cover=16, slow_bmc=24)
    + _runs("ghcb_msr", "ghcb-snp", (("snp", True),), bmc=12, cover=16, slow=True)
    + _runs("ghcb_msr", "ghcb-v1", (("snp", False), ("max_version", 1)), bmc=12, cover=16, slow=True)
    + _runs("lapic", "fabric-xapic3", (("config", "xapic3"),), bmc=6, cover=8, slow_bmc=10)
    + _runs("lapic", "fabric-x2apic3", (("config", "x2apic3"),), bmc=10, cover=8, slow=True)
    + _runs("lapic", "fabric-x2apic3-c2", (("config", "x2apic3"), ("cluster_size", 2)), bmc=10, cover=8)
    + _runs("lapic", "fabric-xapic3-c2", (("config", "xapic3"), ("cluster_size", 2)), bmc=6, cover=8,
            slow=True)
    + _runs("lapic", "fabric-x2apic3-c2-pipe", (("config", "x2apic3"), ("cluster_size", 2), ("pipelined", True)),
            bmc=12, cover=18)
    + _runs("lapic", "fabric-xapic3-c2-pipe", (("config", "xapic3"), ("cluster_size", 2), ("pipelined", True)),
            bmc=11, cover=18, slow_bmc=12)
    # one cluster of 3: its groups of 2 and 1 (rtl/lapic/cluster.py lp_group_size) and the pick between them
    + _runs("lapic", "fabric-x2apic3-pipe", (("config", "x2apic3"), ("pipelined", True)), bmc=12, cover=18)
    + _runs("lapic", "fabric-xapic4", (("config", "xapic4"),), bmc=12, cover=10, slow=True)
    + _runs("lapic", "fabric-x2apic4", (("config", "x2apic4"),), bmc=12, cover=10, slow=True)
)


def _block_name(block):
    for name, aliases in BLOCKS.items():
        if block == name or block in aliases:
            return name
    raise ValueError(f"unknown block {block!r}: one of {', '.join(sorted(BLOCKS))} "
                     f"(or {', '.join(a for aliases in BLOCKS.values() for a in aliases)})")


def proofs_of(block=None, *, slow=False):
    """The runs of ``block`` (a :data:`BLOCKS` name or alias; None: every block); with ``slow``
    the slow ones too."""
    name = _block_name(block) if block else None
    return [p for p in PROOFS if (name is None or p.block == name) and (slow or not p.slow)]


def harness(proof, *, defect=None):
    """A new harness for ``proof`` (with a deliberate ``defect``, a key of its ``DEFECTS``)."""
    if proof.block == "lapic":
        from .lapic.fabric import FabricProof as cls
    elif proof.block == "mpwk_mailbox":
        from .mpwk_mailbox.mailbox import MailboxProof as cls
    else:
        from .ghcb_msr.unit import GhcbProof as cls
    return cls(**dict(proof.config), defect=defect)


def run(proof, *, defect=None, solver=None, workroot=None, timeout=None):
    """Run ``proof`` with SymbiYosys; returns :class:`apwake.sim.harness.formal.ProofResult`.
    A ``defect`` run is named ``<name>-<defect>``."""
    from apwake.sim.harness.formal import run_proof
    top = harness(proof, defect=defect)
    name = proof.name + (f"-{defect}" if defect else "") + (f"-{solver}" if solver else "")
    return run_proof(top, name=name, mode=proof.mode, depth=proof.depth,
                     solver=solver or proof.solver, ports=top.ports,
                     trace_signals=top.trace_signals, workroot=workroot, timeout=timeout)
