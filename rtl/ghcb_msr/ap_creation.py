"""The SNP GHCB unit's VMSA table: per vCPU, the VMSA an AP Creation request handed over and the
one the vCPU will start from (docs/spec/ghcb.md §6).

KVM keeps these per vCPU (``snp_vmsa_gpa``, the GPA of the last accepted request or
INVALID_PAGE after a DESTROY, and ``vmcb->control.vmsa_pa``, the VMSA installed at the AP
Creation reset; arch/x86/kvm/svm/sev.c ``sev_snp_ap_creation`` and
``sev_snp_init_protected_guest_state``).  Here they are two memories of one word per vCPU, so a
unit for 4096 vCPUs adds two block RAMs, not 4096 address registers; only the dispatcher reaches
them, one job at a time.
"""

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import VMSA_GFN_BITS
from .signatures import ApAcceptSignature, VmsaJobSignature

__all__ = ["VmsaTable", "PendingVmsa"]


class PendingVmsa(data.Struct):
    """``snp_vmsa_gpa``: ``valid`` 0 is INVALID_PAGE (no request, or a DESTROY)."""

    valid: 1
    gfn: VMSA_GFN_BITS


class VmsaTable(wiring.Component):
    """Two memories of ``n_vcpus`` words: the pending VMSA (:class:`PendingVmsa`) and the
    installed one (a page frame).

    * ``accept`` (from the page engine, the cycle it accepts a request): the target's pending
      entry takes the request's (CREATE/CREATE_ON_INIT: valid with the frame; DESTROY: invalid).
    * ``job`` (from the dispatcher, for the vCPU it serves), two cycles: the read, then

      - the reset (``launch`` low): a valid pending entry moves to the installed memory and is
        cleared (KVM sets ``snp_vmsa_gpa = INVALID_PAGE`` once used), ``installed`` high; an
        invalid one leaves both alone, ``installed`` low;
      - the start (``launch`` high): ``vmsa_gpa`` takes the installed frame's address.

      ``vmsa_gpa`` also takes the frame installed by a reset; it holds until the next job, so
      the vCPU's ``vmsa_launch`` pulse (a cycle after ``done``) sees it.

    Parameters
    ----------
    n_vcpus : int

    Attributes
    ----------
    accept : In(ApAcceptSignature)
    job : In(VmsaJobSignature)
    vmsa_gpa : Out(32)
    """

    def __init__(self, *, n_vcpus):
        self.n_vcpus = n_vcpus
        super().__init__({
            "accept": In(ApAcceptSignature(n_vcpus)),
            "job": In(VmsaJobSignature(n_vcpus)),
            "vmsa_gpa": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        accept, job = self.accept, self.job
        m.submodules.pending = pending = Memory(shape=PendingVmsa, depth=self.n_vcpus, init=[])
        m.submodules.installed = installed = Memory(shape=VMSA_GFN_BITS, depth=self.n_vcpus, init=[])
        pending_rd, pending_wr = pending.read_port(), pending.write_port()
        installed_rd, installed_wr = installed.read_port(), installed.write_port()
        launch = Signal()
        # the dispatcher holds its vCPU for the whole job: both reads follow it
        m.d.comb += [pending_rd.addr.eq(job.vcpu), installed_rd.addr.eq(job.vcpu)]
        entry = PendingVmsa(pending_rd.data)

        # an accepted request (never in a job's cycles: the dispatcher is then serving the
        # requester's page exchange)
        with m.If(accept.accept):
            m.d.comb += [pending_wr.addr.eq(accept.target), pending_wr.en.eq(1),
                         pending_wr.data.valid.eq(accept.vmsa_valid),
                         pending_wr.data.gfn.eq(accept.gfn)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(job.start):
                    m.d.sync += launch.eq(job.launch)
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += job.done.eq(1)
                m.next = "IDLE"
                with m.If(launch):
                    m.d.sync += self.vmsa_gpa.eq(installed_rd.data << 12)
                with m.Elif(entry.valid):
                    m.d.comb += [job.installed.eq(1),
                                 installed_wr.addr.eq(job.vcpu), installed_wr.en.eq(1),
                                 installed_wr.data.eq(entry.gfn),
                                 pending_wr.addr.eq(job.vcpu), pending_wr.en.eq(1),
                                 pending_wr.data.valid.eq(0), pending_wr.data.gfn.eq(entry.gfn)]
                    m.d.sync += self.vmsa_gpa.eq(entry.gfn << 12)
        return m
