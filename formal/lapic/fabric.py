"""Proof harness of the IPI fabric (:class:`apwake.rtl.lapic.ApicFabric`) with its local APICs.

The destination rule is an independent function written for the proof from the Intel SDM
vol. 3A §11.6.2 "Determining IPI Destination" (physical, logical flat and cluster, broadcast,
shorthands, lowest priority; §10.6 in editions before 2023), §11.12.10 (x2APIC destinations and
the derived logical ID, §11.12.10.2) and §11.6.1 (the ICR, its valid combinations for P4 and
Xeon processors, and the delivery status bit 12).  The receivers' registers it reads are the
harness's own record of what each CPU wrote (SVR, LDR, DFR, ICR high), not the RTL's.

The solver drives every CPU port: register writes and reads (MMIO in xAPIC mode, MSRs in x2APIC
mode) and the acknowledges of INIT, SIPI, NMI and SMI.  IA32_APIC_BASE is not written (each
configuration stays in one mode: IDs above 0xFE run only in x2APIC mode), interrupts are not
acknowledged (INTA), and x2APIC writes have no reserved bits set (they would be #GP).
"""

from amaranth import Cat, Const, Module, Mux, Signal

from apwake.rtl.lapic import ApicFabric, LocalApic
from apwake.rtl.lapic.cluster import cluster_count
from apwake.rtl.lapic.receiver import ACCEPT_DELAYS
from apwake.rtl.lapic.signatures import Space
from apwake.sim.harness.formal import elaborate_once
from ..props import HarnessBase

__all__ = ["FabricProof", "CONFIGS", "sdm_accepts"]

#: APIC IDs per configuration: xAPIC (IDs below 0xFF start in xAPIC mode) and x2APIC (IDs
#: above 0xFE run only in x2APIC mode; two logical clusters: 0x10 and 0x11)
CONFIGS = {
    "xapic3": (0, 1, 2),
    "xapic4": (0, 1, 2, 3),
    "x2apic3": (0x100, 0x101, 0x112),
    "x2apic4": (0x100, 0x101, 0x112, 0x113),
}
N_VECTORS = 32

# From the SDM's ICR figure (§11.6.1), not from the RTL's layouts
_FIXED, _LOWEST, _SMI, _NMI, _INIT, _STARTUP = 0, 1, 2, 4, 5, 6
_SELF, _ALL, _ALL_BUT_SELF = 1, 2, 3


def sdm_accepts(*, msg, sender_is_me, x2apic, apic_id, sw_enabled, ldr8, dfr_model):
    """Whether one APIC accepts fabric message ``msg`` (a ``FabricMessage`` view) by the SDM's
    destination rules (before lowest-priority arbitration), given its mode, ID and registers."""
    mode, dest = msg.delivery_mode.as_value(), msg.destination
    fixed_like = (mode == _FIXED) | (mode == _LOWEST)
    broadcast = Mux(msg.x2apic, dest == 0xFFFF_FFFF, dest == 0xFF)
    if x2apic:
        physical = (dest == apic_id) | broadcast
        cluster, position = apic_id >> 4 & 0xFFFF, 1 << (apic_id & 0xF)
        logical = broadcast | ((dest[16:32] == cluster) & ((dest[0:16] & position) != 0))
    else:
        physical = ((dest[8:32] == 0) & (dest[0:8] == apic_id)) | broadcast
        flat = (dfr_model == 0xF) & ((ldr8 & dest[0:8]) != 0)
        cluster = (dfr_model == 0x0) & (dest[4:8] == ldr8[4:8]) & ((dest[0:4] & ldr8[0:4]) != 0)
        logical = (ldr8 != 0) & (broadcast | ((dest[8:32] == 0) & (flat | cluster)))
    by_destination = Mux(msg.dest_mode.as_value(), logical, physical)
    shorthand = msg.shorthand.as_value()
    addressed = Mux(shorthand == 0, by_destination,
                    Mux(shorthand == _SELF, sender_is_me,
                        Mux(shorthand == _ALL, 1, ~sender_is_me)))
    init_deassert = (mode == _INIT) & (msg.level.as_value() == 0)
    return (init_deassert | addressed) & (sw_enabled | ~fixed_like)


class FabricProof(HarnessBase):
    """The fabric of configuration ``config`` with its properties.

    Properties (``Assert``; each has a ``Cover``), ``<i>`` an APIC's port:

    * ``fab_one_message_<i>``: every ICR write the APIC takes that the SDM's table of valid
      combinations allows puts exactly one message on the bus, with the written fields (and the
      ICR high destination of the moment in xAPIC mode); a refused one puts none, and no
      message appears without a write (nothing lost, nothing duplicated);
    * ``fab_destination_<j>``: in every bus cycle, APIC ``j`` accepts exactly when
      :func:`sdm_accepts` says so (every delivery mode, destination mode and shorthand);
    * ``fab_lowest_priority``: a lowest-priority message goes to exactly one candidate when there
      is one, with the lowest priority class (``rx_priority``), and to none otherwise;
    * ``fab_delivered_<j>``: an accepted message reaches the receiver in the next step: its IRR
      bit (Fixed or lowest priority, vectors 16 and up) or its INIT/SIPI/NMI/SMI flag, INIT
      clearing a pending SIPI, the first SIPI's vector kept until acknowledged (INIT then SIPI
      ordering in the pending flags);
    * ``fab_fair_<i>``: a waiting sender is on the bus within ``len(apic_ids)`` steps;
    * ``fab_response_<i>``: the register port's ``resp_valid`` is high exactly in the cycle
      after one where it took a request (no response lost, none without a request);
    * ``fab_rdata_quiet_<i>``: the register port's ``rdata`` is 0 in every cycle without
      ``resp_valid`` (what lets the soft-SoC OR the APICs' answers);
    * ``fab_delivery_status_<i>`` (xAPIC): ICR bit 12 reads 1 exactly while the IPI is in
      flight (from the write until its bus cycle; pipelined: until it is on the trace).

    On the pipelined fabric (``pipelined``) the trace shows stage 4, three cycles after the APICs
    matched the message: the destination and lowest-priority rules then read the registers and
    priorities of that cycle (three steps before the trace), a waiting sender is on the trace
    within ``len(apic_ids) + 4`` steps (the grant register and the three stages), and an INIT taken
    while a Fixed or lowest-priority message was in flight excuses its IRR bit (the reset clears
    it, rtl/lapic/receiver.py "Delay").  The other properties are the same.

    Assumptions on each register port: no IA32_APIC_BASE write and no INTA; in x2APIC mode no
    reserved bits in ICR, SVR and SELF IPI writes; and the RegisterBusSignature's rule that a
    request not yet taken is offered again unchanged (``request_held<i>``: a pipelined APIC
    decodes its fields a cycle before it takes it).

    Parameters
    ----------
    config : str
        A key of :data:`CONFIGS`.
    cluster_size : int or None
        The fabric's ``cluster_size``: None is one cluster of every APIC; 2 with three APICs
        splits them into a full cluster and one with an unused slot, so the properties cover
        the two-level arbitration and lowest-priority selection (rtl/lapic/cluster.py).  On
        the pipelined fabric one cluster of three has groups of 2 and 1 (``lp_group_size``), so
        that run (``fabric-x2apic3-pipe``) covers the pick between a cluster's groups.
    pipelined : bool
        The fabric's ``pipelined`` (rtl/lapic/fabric.py).
    defect : str or None
        ``"mask_last_stage"`` (pipelined only): the arbiter keeps out only the sender of the
        trace's message, so a sender whose message is in an earlier stage is granted again.
        ``"regrant"``: the arbiter may grant the sender whose message is on the bus again (a
        statement added to the elaborated fabric), which duplicates messages.
    """

    DEFECTS = {"regrant": "the arbiter grants the sender whose message is on the bus again",
               "mask_last_stage": "the pipelined fabric's arbiter keeps out only the sender whose message "
                                  "is in the last stage (the trace's)"}

    def __init__(self, config="xapic3", *, cluster_size=None, pipelined=False, defect=None):
        super().__init__(defect=defect)
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {sorted(CONFIGS)}, not {config!r}")
        self.config, self.apic_ids = config, CONFIGS[config]
        self.x2apic = config.startswith("x2apic")
        self.pipelined = pipelined
        self.apics = []

        def factory(**kwargs):
            apic = LocalApic(**kwargs)
            self.apics.append(apic)
            return apic

        self.dut = ApicFabric(self.apic_ids, n_vectors=N_VECTORS, local_interrupts=False,
                              apic_factory=factory, cluster_size=cluster_size, pipelined=pipelined)
        for port in self.dut.cpu:
            for name in ("req_valid", "space", "addr", "write", "wdata"):
                self.free(getattr(port.reg, name))
            for name in ("init_ack", "sipi_ack", "nmi_ack", "smi_ack"):
                self.free(getattr(port, name))

    def elaborate(self, platform):
        m = Module()
        dut, n, x2 = self.dut, len(self.apic_ids), self.x2apic
        fabric = elaborate_once(dut, platform)
        # the clusters create their APICs when they elaborate; an unused slot's APIC (the last
        # cluster's) comes last and is no port's
        for c in range(cluster_count(n, dut.cluster_size)):
            elaborate_once(fabric.submodule(f"cluster{c}"), platform)
        del self.apics[n:]
        m.submodules.fabric = dut
        irr = [elaborate_once(apic, platform).submodule("interrupts").irr for apic in self.apics]
        if self.defect == "regrant":
            fabric.module.d.comb += fabric.submodule("arbiter").requests.eq(
                Cat(*(apic.link.tx_valid for apic in self.apics)))
        if self.defect == "mask_last_stage":
            if not self.pipelined:
                raise ValueError("the mask_last_stage defect needs pipelined=True")
            fabric.module.d.comb += fabric.submodule("arbiter").requests.eq(
                Cat(*(apic.link.tx_valid for apic in self.apics[:n]))
                & ~Mux(dut.trace.valid, Const(1, n) << dut.trace.source, 0))
        self.begin(m)
        trace = dut.trace
        self.watch(trace.valid, trace.msg, trace.source, trace.accept)
        on_bus = [trace.valid & (trace.source == i) for i in range(n)]
        regs = []
        # cycles from the APICs' match to the trace, and the extra steps a sender waits
        lag = ACCEPT_DELAYS[-1] if self.pipelined else 0
        extra_wait = lag + 1 if self.pipelined else 0       # and the grant register

        def at_match(value, name):
            """``value`` in the cycle the APICs matched the message the trace shows."""
            for k in range(lag):
                value = self.past(value, f"{name}_{k + 1}")
            return value

        for i, apic_id in enumerate(self.apic_ids):
            cpu, reg = dut.cpu[i], dut.cpu[i].reg
            self.assume(f"no_apic_base_write{i}", ~(reg.req_valid & (reg.space == Space.MSR) & (reg.addr == 0x1B)))
            self.assume(f"no_inta{i}", ~cpu.inta)
            taken = reg.req_valid & reg.req_ready
            # RegisterBusSignature: a request offered and not taken is offered again with the
            # same fields (a pipelined APIC decodes them a cycle ahead)
            fields = Cat(reg.space, reg.addr, reg.write, reg.wdata)
            waiting = self.past(reg.req_valid & ~reg.req_ready, f"waiting{i}")
            self.assume(f"request_held{i}", ~waiting | (reg.req_valid & (fields == self.past(fields, f"fields{i}"))))
            wdata = reg.wdata
            if x2:
                msr = reg.req_valid & reg.write & (reg.space == Space.MSR)
                # x2APIC: no reserved bits (#GP): ICR bits 13, 17:16, 31:20; SVR above 8; SELF IPI above 7
                self.assume(f"x2apic_defined_bits{i}", ~msr
                            | ((reg.addr != 0x830) | ((wdata & 0xFFF3_2000) == 0))
                            & ((reg.addr != 0x80F) | (wdata[9:64] == 0))
                            & ((reg.addr != 0x83F) | (wdata[8:64] == 0)))
                at = lambda address: taken & reg.write & (reg.space == Space.MSR) & (reg.addr == address)
                icr_write, self_ipi, svr_write = at(0x830), at(0x83F), at(0x80F)
                ldr_write = dfr_write = hi_write = Const(0)
            else:
                at = lambda offset: taken & reg.write & (reg.space == Space.MMIO) & (reg.addr == offset)
                icr_write, svr_write, ldr_write, dfr_write, hi_write = (at(0x300), at(0x0F0), at(0x0D0),
                                                                        at(0x0E0), at(0x310))
                self_ipi = Const(0)
            # --- this CPU's registers, as written (reset by INIT, SDM §11.4.7.3) ----------------
            sw_en, ldr8 = Signal(name=f"svr_enable{i}"), Signal(8, name=f"ldr{i}")
            dfr, icr_hi = Signal(4, init=0xF, name=f"dfr{i}"), Signal(8, name=f"icr_hi{i}")
            init_taken = cpu.init & cpu.init_ack
            with m.If(svr_write):
                m.d.sync += sw_en.eq(wdata[8])
            with m.If(ldr_write):
                m.d.sync += ldr8.eq(wdata[24:32])
            with m.If(dfr_write):
                m.d.sync += dfr.eq(wdata[28:32])
            with m.If(hi_write):
                m.d.sync += icr_hi.eq(wdata[24:32])
            with m.If(init_taken):
                m.d.sync += [sw_en.eq(0), ldr8.eq(0), dfr.eq(0xF), icr_hi.eq(0)]
            regs.append((sw_en, ldr8, dfr))
            # --- the message this write asks for (SDM §11.6.1) --------------------------------
            mode, vector = wdata[8:11], wdata[0:8]
            shorthand, level, trigger = wdata[18:20], wdata[14], wdata[15]
            init_deassert = (mode == _INIT) & trigger & ~level & ~self_ipi
            refused = ~self_ipi & ((mode == 3) | (mode == 7) | ((mode != _FIXED) & (
                (shorthand == _SELF) | ((shorthand == _ALL) & ~init_deassert))))
            pend = Signal(name=f"pend{i}")
            exp = {name: Signal(width, name=f"exp_{name}{i}") for name, width in (
                ("vector", 8), ("mode", 3), ("dest_mode", 1), ("shorthand", 2), ("dest", 32),
                ("deassert", 1))}
            sends = (icr_write | self_ipi) & ~refused
            with m.If(on_bus[i]):
                m.d.sync += pend.eq(0)
            with m.If(sends):
                m.d.sync += [pend.eq(1), exp["vector"].eq(vector),
                             exp["mode"].eq(Mux(self_ipi, _FIXED, mode)),
                             exp["dest_mode"].eq(Mux(self_ipi, 0, wdata[11])),
                             exp["shorthand"].eq(Mux(self_ipi, _SELF, shorthand)),
                             exp["dest"].eq(Mux(self_ipi, 0, wdata[32:64] if x2 else icr_hi)),
                             exp["deassert"].eq(init_deassert)]
            self.watch(pend, *exp.values())
            msg = trace.msg
            carries = ((msg.vector == exp["vector"]) & (msg.delivery_mode.as_value() == exp["mode"])
                       & (msg.shorthand.as_value() == exp["shorthand"]) & (msg.x2apic == int(x2))
                       & (msg.level.as_value() == ~exp["deassert"]) & (msg.trigger.as_value() == exp["deassert"]))
            # the destination and its mode matter only without a shorthand
            carries &= (msg.shorthand.as_value() != 0) | ((msg.destination == exp["dest"])
                                                         & (msg.dest_mode.as_value() == exp["dest_mode"]))
            self.prove(f"fab_one_message_{i}", (~sends | ~pend | on_bus[i]) & (~on_bus[i] | (pend & carries)))
            self.cover(f"cover_message_{i}", on_bus[i])
            self.cover(f"cover_refused_{i}", (icr_write | self_ipi) & refused)
            # --- fairness ------------------------------------------------------------------------
            bound = n + extra_wait
            wait = Signal(range(bound + 2), name=f"wait{i}")
            with m.If(pend & ~on_bus[i]):
                m.d.sync += wait.eq(Mux(wait == bound + 1, wait, wait + 1))
            with m.Else():
                m.d.sync += wait.eq(0)
            self.prove(f"fab_fair_{i}", wait <= bound)
            self.cover(f"cover_fair_wait_{i}", on_bus[i] & (wait == bound))
            # --- the response exactly one cycle after the request is taken (RegisterBusSignature)
            # (from the first step: nothing was taken before it, so a response out of reset fails)
            self.prove(f"fab_response_{i}", reg.resp_valid == self.past(taken, f"taken{i}"), first_step=True)
            # back to back (pipelined: the next request offered in the response cycle, since a
            # request is taken in its second cycle at the earliest)
            self.cover(f"cover_response_{i}", reg.resp_valid & (reg.req_valid if self.pipelined else taken))
            # --- quiet read data (RegisterBusSignature): 0 outside a response ------------------------
            self.prove(f"fab_rdata_quiet_{i}", reg.resp_valid | (reg.rdata == 0), first_step=True)
            self.cover(f"cover_rdata_{i}", reg.resp_valid & (reg.rdata != 0))
            # --- delivery status (xAPIC ICR bit 12) ------------------------------------------------
            if not x2:
                read_icr = taken & ~reg.write & (reg.space == Space.MMIO) & (reg.addr == 0x300)
                was_read, was_pend = self.past(read_icr, f"read_icr{i}"), self.past(pend, f"pend{i}")
                self.prove(f"fab_delivery_status_{i}", ~(reg.resp_valid & was_read) | (reg.rdata[12] == was_pend))
                self.cover(f"cover_delivery_status_{i}", reg.resp_valid & was_read & reg.rdata[12])

        # --- destinations -----------------------------------------------------------------------
        msg = trace.msg
        lowest = msg.delivery_mode.as_value() == _LOWEST
        candidates = []
        for j, apic_id in enumerate(self.apic_ids):
            sw_en, ldr8, dfr = (at_match(r, f"{name}{j}") for r, name in zip(regs[j], ("svr_enable", "ldr", "dfr")))
            want = Signal(name=f"sdm_accepts{j}")
            m.d.comb += want.eq(sdm_accepts(msg=msg, sender_is_me=trace.source == j, x2apic=x2,
                                            apic_id=apic_id, sw_enabled=sw_en, ldr8=ldr8, dfr_model=dfr))
            candidates.append(want)
            self.prove(f"fab_destination_{j}", ~trace.valid | lowest | (trace.accept[j] == want))
            self.cover(f"cover_accept_{j}", trace.valid & ~lowest & trace.accept[j] & (msg.shorthand.as_value() == 0)
                       & (msg.dest_mode.as_value() == 1))
        cand = Cat(*candidates)
        accept = trace.accept
        one_or_none = (accept & (accept - 1)) == 0
        priority = [at_match(apic.link.rx_priority, f"priority{j}") for j, apic in enumerate(self.apics)]
        lowest_ok = Cat(*(~accept[j] | Cat(*(~cand[k] | (priority[j] <= priority[k]) for k in range(n))).all()
                          for j in range(n))).all()
        self.prove("fab_lowest_priority", ~(trace.valid & lowest) | (
            one_or_none & ((accept & ~cand) == 0) & ((accept != 0) == (cand != 0)) & lowest_ok))
        self.cover("cover_lowest_priority", trace.valid & lowest & (accept != 0) & ((cand & (cand - 1)) != 0))
        self.cover("cover_broadcast", trace.valid & (msg.shorthand.as_value() == _ALL_BUT_SELF)
                   & (accept == ((1 << n) - 1) & ~(1 << 0)))

        # --- delivery into IRR and the pending flags ----------------------------------------------
        was_valid = self.past(trace.valid, "bus_valid")
        was_mode = self.past(msg.delivery_mode.as_value(), "bus_mode")
        was_vector = self.past(msg.vector, "bus_vector")
        was_level = self.past(msg.level.as_value(), "bus_level")
        was_accept = self.past(accept, "bus_accept")
        for j in range(n):
            cpu = dut.cpu[j]
            got = was_valid & was_accept[j]
            # an INIT taken from the match to the acceptance (one cycle without the pipeline)
            init_taken = [self.past(cpu.init & cpu.init_ack, f"init_taken{j}")]
            for k in range(lag):
                init_taken.append(self.past(init_taken[-1], f"init_taken{j}_{k + 1}"))
            was_init_taken = Cat(*init_taken).any()
            was_sipi, was_sipi_ack = self.past(cpu.sipi, f"sipi{j}"), self.past(cpu.sipi_ack, f"sipi_ack{j}")
            was_vec = self.past(cpu.sipi_vector, f"sipi_vector{j}")
            legal = (was_vector >= 16) & (was_vector < N_VECTORS)
            irr_bit = Signal(name=f"irr_bit{j}")
            m.d.comb += irr_bit.eq((irr[j] >> was_vector[0:5])[0])
            fixed_ok = ~((was_mode == _FIXED) | (was_mode == _LOWEST)) | ~legal | was_init_taken | irr_bit
            nmi_ok = (was_mode != _NMI) | cpu.nmi
            smi_ok = (was_mode != _SMI) | cpu.smi
            init_ok = (was_mode != _INIT) | ~was_level | (cpu.init & ~cpu.sipi)
            sipi_ok = (was_mode != _STARTUP) | (cpu.sipi & (cpu.sipi_vector == Mux(was_sipi & ~was_sipi_ack,
                                                                                      was_vec, was_vector)))
            self.prove(f"fab_delivered_{j}", ~got | (fixed_ok & nmi_ok & smi_ok & init_ok & sipi_ok))
            self.cover(f"cover_init_then_sipi_{j}", cpu.init & cpu.sipi)
            self.cover(f"cover_irr_{j}", got & legal & irr_bit & (was_mode == _FIXED))
        return m
