"""The GHCB MSR trap unit: the hypervisor's side of the GHCB MSR protocol, AP reset hold, the
AP jump table and SEV-SNP AP Creation, in hardware (docs/spec/ghcb.md §1-§4, §6, §7).

One unit serves every vCPU of a VM.  Each vCPU writes its GHCB MSR (0xC001_0130) and strobes
VMGEXIT; the unit answers by rewriting the MSR (MSR protocol) or by reading and writing the GHCB
page in guest memory through its memory port (page protocol), then pulses ``exit_done`` (the
next VMRUN).  It also takes the APIC fabric's INIT and SIPI for its vCPUs, as KVM does for SEV-ES
guests (``kvm_apic_accept_events`` + ``sev_vcpu_deliver_sipi_vector``), because the hypervisor
cannot load register state: a first SIPI starts a vCPU from its launch state (``launch``), a
later one only releases an AP reset hold.

For an SEV-SNP VM it also serves AP Creation (NAE 0x8000_0013, as KVM's
``sev_snp_ap_creation``): the guest hands a VMSA page for another vCPU, which starts from it at
once (CREATE), at its next INIT (CREATE_ON_INIT), or stops with none (DESTROY); ``vmsa_launch``
and ``vmsa_gpa`` on the vCPU's port say when and from where.  The unit never touches a local
APIC: what the guest programmed there survives AP Creation (mainline KVM differs: its
``kvm_vcpu_reset(vcpu, true)`` for the request resets the APIC, COCONUT-SVSM issue #378).

The unit joins four kinds of parts, one file each: a
:class:`~apwake.rtl.ghcb_msr.vcpu.VcpuControl` per vCPU (its MSR, mp_state, hold, INIT and
SIPI, AP Creation state), the :class:`~apwake.rtl.ghcb_msr.dispatch.ExitDispatch` (which exit
next; the MSR protocol), the :class:`~apwake.rtl.ghcb_msr.page.GhcbPageEngine` (the GHCB-page
protocol in guest memory) and, for SNP, the :class:`~apwake.rtl.ghcb_msr.ap_creation.VmsaTable`
(the VMSA GPAs, one memory word per vCPU).
"""

from amaranth import Array, Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.apic_ids import check_apic_ids
from apwake.rtl.lib.bus import MemoryBusSignature
from .ap_creation import VmsaTable
from .dispatch import ExitDispatch
from .layouts import (DEFAULT_VMSA_FEATURES, HV_FEATURES, PROTOCOL_MAX, PROTOCOL_MIN, SEV_FEATURES,
                      SevInfo, MsrCode, TermReason, layout_bits)
from .page import GhcbPageEngine
from .signatures import ApicEventsSignature, VcpuPortSignature
from .vcpu import VcpuControl

__all__ = ["GhcbMsrUnit", "VcpuPortSignature", "ApicEventsSignature", "default_cpuid",
           "connect_apic_events", "MAX_VCPUS"]

#: vCPUs one unit serves, as many as the APIC fabric takes (the termination status names one in
#: 12 bits, TermReason.vcpu).  Each has its own VcpuControl in the unit (not a separately
#: converted module), so the unit's conversion grows with the count.
MAX_VCPUS = 4096


def default_cpuid(cbit):
    """A small CPUID table: leaf 0 (AuthenticAMD) and 0x8000_001F (SME, SEV, SEV-ES; C-bit)."""
    return {0x0000_0000: (0x0000_0010, 0x6874_7541, 0x444D_4163, 0x6974_6E65),
            0x8000_001F: (0x0000_000B, cbit | 1 << 6, 0x0000_0001, 0x0000_0000)}


def connect_apic_events(m, apic, events):
    """Give the unit's ``events`` (an :class:`ApicEventsSignature` port) one APIC's CPU-port
    lines (:class:`apwake.rtl.lapic.signatures.CpuPortSignature`): the unit sees INIT, SIPI, NMI and
    INTR and acknowledges INIT and SIPI itself, as KVM does for SEV-ES guests."""
    m.d.comb += [events.init.eq(apic.init), events.sipi.eq(apic.sipi),
                 events.sipi_vector.eq(apic.sipi_vector), events.nmi.eq(apic.nmi),
                 events.intr.eq(apic.intr),
                 apic.init_ack.eq(events.init_ack), apic.sipi_ack.eq(events.sipi_ack)]


class GhcbMsrUnit(wiring.Component):
    """Parameters
    ----------
    n_vcpus : int
        1 to :data:`MAX_VCPUS`.
    bsp_index : int
        The vCPU that runs at creation; the others start UNINITIALIZED.
    min_version, max_version : int
        The protocol range the hypervisor offers in the SEV information response.  With
        ``max_version = 1`` the version-2 codes (MSR AP reset hold 0x006, HV features 0x080,
        GPA and PSC requests, the NAE HV-features and termination exits) are unknown to the unit:
        an MSR request is left unchanged and an NAE exit gets (2, 6), as a version-1-only
        hypervisor (KVM before SNP) behaves.  With 2 they are served whatever the guest
        negotiated: KVM keeps no per-VM negotiated version (§7).
    cbit : int
        C-bit position reported in the SEV information response (CPUID 0x8000_001F EBX[5:0]).
    cpuid : dict or None
        ``{function: (eax, ebx, ecx, edx)}`` served by 0x004; a function not in it leaves the MSR
        unchanged (§7).  Default :func:`default_cpuid`.
    snp : bool
        An SEV-SNP VM: 0x010/0x012/0x014 are answered and AP Creation (NAE 0x8000_0013) is
        served.  Otherwise (SEV-ES) the MSR codes terminate the vCPU and AP Creation gets
        (2, 4), as KVM does.
    hv_features : int
        The bitmap answered by 0x080 and NAE 0x8000_FFFD (KVM: SNP | AP creation = 0x3).
    apic_ids : tuple of int, optional
        The vCPUs' APIC IDs in port order, distinct, 32-bit (AP Creation names its target by
        APIC ID).  Default ``0 .. n_vcpus - 1``.
    vmsa_features : int
        The VM's SEV features (KVM's ``sev->vmsa_features``): AP Creation must hand the same in
        RAX.  64 bits; an SNP VM's have SNPActive (bit 0), which KVM always sets.  Default
        SNPActive alone.

    Ports
    -----
    vcpu : array of :class:`VcpuPortSignature` (flipped)
    apic : array of :class:`ApicEventsSignature` (flipped)
    memory : :class:`apwake.rtl.lib.bus.MemoryBusSignature`, initiator: GHCB page reads and reply writes.
        The bus is 32-bit: a GHCB GPA at or above 4 GiB is "unmappable" (resumed, nothing
        written, §7).
    term : :class:`TermReason`, the first termination: vCPU, reason set and code, and the
        request code that caused it (0x100, or an SNP-only code on an SEV-ES VM; 0 for NAE).
    idle : Out(1)
        Nothing changes on its own while the inputs hold (time skipping, docs/ARCHITECTURE.md):
        no exit served or waiting, no INIT/SIPI for the unit to take, no held vCPU with a wake
        event, no AP Creation kick or VMSA job pending (a CREATE_ON_INIT waiting for its INIT
        is not work).

    Behaviour choices (docs/spec/ghcb.md §7, all tested in ``cocotb_tests/ghcb_msr``): any code at any
    time (no negotiation gate, as KVM); hold with an interrupt or NMI pending is not entered and
    answers "not woken" at once; INIT while held keeps the hold type; SIPI outside INIT_RECEIVED
    is dropped; the page-form reply at SIPI writes SW_EXITINFO1 = 0, SW_EXITINFO2 = 1 and their
    valid bits (KVM's later RAX-RDX write-back at VMRUN is not modelled).  AP Creation: see
    :class:`~apwake.rtl.ghcb_msr.page.GhcbPageEngine` (checks and replies) and
    :class:`~apwake.rtl.ghcb_msr.vcpu.VcpuControl` (what the target does).

    Raises
    ------
    TypeError
        ``apic_ids`` is not a tuple or list, an APIC ID or ``vmsa_features`` is not an int.
    ValueError
        A parameter out of its range (the message names it and the range).
    """

    def __init__(self, *, n_vcpus, bsp_index=0, min_version=PROTOCOL_MIN,
                 max_version=PROTOCOL_MAX, cbit=51, cpuid=None, snp=False,
                 hv_features=HV_FEATURES["snp"] | HV_FEATURES["snp_ap_creation"], apic_ids=None,
                 vmsa_features=DEFAULT_VMSA_FEATURES):
        if not isinstance(n_vcpus, int) or not 1 <= n_vcpus <= MAX_VCPUS:
            raise ValueError(f"n_vcpus must be 1 to {MAX_VCPUS}, not {n_vcpus!r}")
        if not isinstance(bsp_index, int) or not 0 <= bsp_index < n_vcpus:
            raise ValueError(f"bsp_index must be 0 to {n_vcpus - 1}, not {bsp_index!r}")
        for name, value in (("min_version", min_version), ("max_version", max_version)):
            if not isinstance(value, int) or not 1 <= value < 1 << 16:
                raise ValueError(f"{name} must be 1 to 65535, not {value!r}")
        if min_version > max_version:
            raise ValueError(f"min_version {min_version} is above max_version {max_version}")
        if not isinstance(cbit, int) or not 32 <= cbit < 64:
            raise ValueError(f"cbit must be a physical address bit 32 to 63, not {cbit!r}")
        if snp and max_version < 2:
            raise ValueError(f"an SNP VM needs max_version 2 or more (its codes are version 2), "
                             f"not {max_version}")
        cpuid = default_cpuid(cbit) if cpuid is None else dict(cpuid)
        for function, values in cpuid.items():
            if (not isinstance(function, int) or not 0 <= function < 1 << 32 or len(values) != 4
                    or not all(isinstance(v, int) and 0 <= v < 1 << 32 for v in values)):
                raise ValueError(f"cpuid[{function!r}] must map a 32-bit function to four "
                                 f"32-bit values, not {values!r}")
        if not isinstance(hv_features, int) or not 0 <= hv_features < 1 << 52:
            raise ValueError(f"hv_features must fit 52 bits, not {hv_features!r}")
        apic_ids = tuple(range(n_vcpus)) if apic_ids is None else _check_apic_ids(apic_ids, n_vcpus)
        if not isinstance(vmsa_features, int) or isinstance(vmsa_features, bool):
            raise TypeError(f"vmsa_features must be an int, not {type(vmsa_features).__name__}")
        if not 0 <= vmsa_features < 1 << 64:
            raise ValueError(f"vmsa_features must fit 64 bits (SEV_FEATURES), not {vmsa_features:#x}")
        if snp and not vmsa_features & SEV_FEATURES["snp_active"]:
            raise ValueError(f"an SNP VM's vmsa_features must have SNPActive (bit 0), which KVM "
                             f"always sets, not {vmsa_features:#x}")
        self.apic_ids, self.vmsa_features = apic_ids, vmsa_features
        self.n_vcpus, self.bsp_index = n_vcpus, bsp_index
        self.min_version, self.max_version, self.cbit = min_version, max_version, cbit
        self.cpuid, self.snp, self.hv_features = cpuid, bool(snp), hv_features
        super().__init__({
            "vcpu": In(VcpuPortSignature()).array(n_vcpus),
            "apic": In(ApicEventsSignature()).array(n_vcpus),
            "memory": Out(MemoryBusSignature()),
            "term": Out(TermReason),
            "idle": Out(1),
        })

    def sev_info(self):
        """The SEV information response (0x001) as an integer; also the MSR's reset value."""
        return layout_bits(SevInfo, info=MsrCode.SEV_INFO_RESP, cbit=self.cbit,
                     min_version=self.min_version, max_version=self.max_version)

    def elaborate(self, platform):
        m = Module()
        n = self.n_vcpus
        m.submodules.dispatch = dispatch = ExitDispatch(
            n_vcpus=n, sev_info=self.sev_info(), cpuid=self.cpuid, v2=self.max_version >= 2,
            snp=self.snp, hv_features=self.hv_features)
        m.submodules.page = page = GhcbPageEngine(
            v2=self.max_version >= 2, hv_features=self.hv_features, snp=self.snp,
            apic_ids=self.apic_ids, vmsa_features=self.vmsa_features)
        wiring.connect(m, dispatch.page, page.job)
        wiring.connect(m, page.memory, wiring.flipped(self.memory))
        m.d.comb += self.term.eq(dispatch.term)
        if self.snp:
            m.submodules.vmsa_table = table = VmsaTable(n_vcpus=n)
            wiring.connect(m, dispatch.vmsa, table.job)
            wiring.connect(m, page.ap, table.accept)

        snp_strobes = ("vmsa_apply", "vmsa_start") if self.snp else ()
        vcpus = []
        for i in range(n):
            vcpu = VcpuControl(bsp=i == self.bsp_index, msr_init=self.sev_info(), snp=self.snp)
            m.submodules[f"vcpu{i}"] = vcpu
            vcpus.append(vcpu)
            wiring.connect(m, wiring.flipped(self.vcpu[i]), vcpu.port)
            wiring.connect(m, wiring.flipped(self.apic[i]), vcpu.apic)
            # the dispatcher's commands reach the vCPU it serves
            served = dispatch.sel == i
            control = dispatch.control
            m.d.comb += [vcpu.serving.eq(dispatch.busy & served),
                         vcpu.control.msr_value.eq(control.msr_value),
                         vcpu.control.hold_kind.eq(control.hold_kind),
                         vcpu.control.hold_page.eq(control.hold_page)]
            m.d.comb += [getattr(vcpu.control, strobe).eq(getattr(control, strobe) & served)
                         for strobe in ("load_msr", "finish", "hold", "stop", "take_release")
                         + snp_strobes]
            if self.snp:
                # an accepted AP Creation reaches its target, whoever is served
                m.d.comb += [vcpu.control.vmsa_installed.eq(control.vmsa_installed),
                             vcpu.ap_create.eq(page.ap.accept & page.ap.target_1h[i]),
                             vcpu.ap_kick.eq(page.ap.kick), vcpu.vmsa_gpa.eq(table.vmsa_gpa)]
        m.d.comb += dispatch.requests.eq(Cat(vcpu.request for vcpu in vcpus))
        # the page engine and the VMSA table only work for the dispatcher, which stays busy
        # until they are done
        m.d.comb += self.idle.eq(~dispatch.busy & (dispatch.requests == 0) &
                                 Cat(vcpu.settled for vcpu in vcpus).all())
        # an SEV-ES unit leaves the AP Creation members undriven (0): no per-vCPU muxes for them
        for status in ("msr", "release", "held_page") + (("ap_job", "ap_launch", "no_vmsa") if self.snp else ()):
            m.d.comb += getattr(dispatch.control, status).eq(
                Array(getattr(vcpu.control, status) for vcpu in vcpus)[dispatch.sel])
        return m


def _check_apic_ids(apic_ids, n_vcpus):
    """``apic_ids`` as a tuple, or TypeError/ValueError naming the first bad entry."""
    apic_ids = check_apic_ids(apic_ids)
    if len(apic_ids) != n_vcpus:
        raise ValueError(f"apic_ids must name n_vcpus = {n_vcpus} vCPUs, not {len(apic_ids)}")
    return apic_ids
