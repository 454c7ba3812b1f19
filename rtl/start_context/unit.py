"""The start-context unit: the hypervisor's side of a state-carrying AP start (docs/spec/lapic.md
§7), in hardware.

VMware's VMI lets a paravirtual 32-bit Linux tell the hypervisor, before the SIPIs, the whole
protected-mode state an AP is to start in (``vmi_startup_ipi_hook``: the ROM call
SetInitialAPState with the address of a ``struct vmi_ap_state`` and the APIC ID); the next SIPI
then starts the AP in that state instead of in real mode.  Xen's VCPUOP_initialise + VCPUOP_up
and Hyper-V's HvCallStartVirtualProcessor start a vCPU directly with a context, with no INIT or
SIPI at all.  This unit serves both forms and the SIPIs of the VM's vCPUs, and tells the vCPUs'
owner how each one is to start through a stream of launch records.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apwake.rtl.lib.apic_ids import check_apic_ids
from apwake.rtl.lib.bus import MemoryBusSignature, access_states
from apwake.rtl.lib.priority import RoundRobinArbiter, onehot_to_index
from .layouts import (CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_RESERVED, CR4_RESERVED, EFER_LMA,
                      EFER_LME, EFER_RESERVED, EFLAGS_FIXED1, EFLAGS_RESERVED, EFLAGS_VM, SEGMENTS,
                      VMI_AP_STATE_OFFSETS, VMI_AP_STATE_SIZE, VMI_AP_STATE_WORDS, GdtDescriptor,
                      LaunchKind, Segment, StartOp, StartState, StartStatus, StateField)
from .signatures import LaunchSignature, SipiEventsSignature, StartCallSignature

__all__ = ["StartContextUnit", "MAX_VCPUS"]

#: vCPUs one unit serves, as many as the APIC fabric takes (``LaunchSignature.vcpu`` is 12 bits).
MAX_VCPUS = 4096

#: the last struct address whose words stay below 4 GiB (``address + 92 <= 2**32``; for an
#: aligned address the same as "the 90 bytes of data do not cross 4 GiB")
_LAST_ADDRESS = (1 << 32) - VMI_AP_STATE_SIZE


class StartContextUnit(wiring.Component):
    """The hypervisor-side start-context unit of one VM.

    **vCPU state.**  Per vCPU (port order = ``apic_ids`` order) the unit keeps ``running`` (the
    BSP 1 at reset, the APs 0: waiting for SIPI, as on hardware) and ``armed`` (a context is
    stored for the next SIPI, in an ``amaranth.lib.memory.Memory`` of StartState rows, so a
    context costs no flip-flops per vCPU); per VM ``paravirt``.  ``init_taken`` on an AP clears
    ``running`` and keeps the armed context; on the BSP it changes nothing.

    **One engine, fair.**  The engine serves one thing at a time: a call, or a pending SIPI.
    They alternate when both wait: after a call, a waiting SIPI goes first (``call.ready`` is
    low while it does); after a SIPI, a waiting call.  SIPIs are picked round robin
    (:class:`apwake.rtl.lib.priority.RoundRobinArbiter`), so a pending SIPI is served within
    ``2 n`` services and a call within one SIPI service: nothing starves.

    **SIPI** on vCPU *s* (the record's kind is decided when the engine picks it):

    ========================  ============  =================================================
    vCPU                      record        effect when the sink takes it
    ========================  ============  =================================================
    running                   DROPPED       none
    armed                     CONTEXT       armed 0, running 1 (state: the stored context)
    neither, VM paravirtual   REFUSED       none: the vCPU still waits for SIPI
    neither                   REAL_MODE     running 1 (CS = vector << 8, IP 0; state all 0)
    ========================  ============  =================================================

    The SIPI is acknowledged (``apic[s].sipi_ack``) in the cycle its record is taken, so a
    stalled sink holds it pending in the APIC and nothing is lost.  An ``init_taken`` in that
    cycle is applied after the record's effect.

    **Calls** (``call``; the first failing check is reported, in this order):

    1. op 3: BAD_OP.  PARAVIRT: ``paravirt`` set, OK (``address``, ``apic_id`` ignored).
    2. no vCPU has ``apic_id``: UNKNOWN_APIC_ID.
    3. ``address`` not 4-byte aligned, or the struct would cross 4 GiB: BAD_ADDRESS.
    4. START to a running vCPU: ALREADY_RUNNING (before any memory access).
    5. read the 23 words of the ``struct vmi_ap_state`` (offsets
       :data:`~apwake.rtl.start_context.layouts.VMI_AP_STATE_OFFSETS`) in address order, then
       check, field named in brackets:

       a. CR0 reserved bits (all but PE MP EM TS ET NE WP AM NW CD PG): RESERVED_BITS [CR0];
       b. CR0.PE = 0 (the map starts protected-mode code), PG without PE, NW without CD:
          INVALID_STATE [CR0] (SDM vol. 3 §2.5; KVM ``kvm_is_valid_cr0``);
       c. CR4 bits 15, 19, 25-31: RESERVED_BITS [CR4] (SDM vol. 3 §2.5);
       d. EFER bits other than SCE LME LMA NXE SVME LMSLE FFXSR TCE: RESERVED_BITS [EFER];
       e. EFER.LME or LMA (a 32-bit map cannot describe long mode): INVALID_STATE [EFER]
          (KVM ``kvm_is_valid_sregs`` checks LMA against LME and CR0.PG);
       f. EFLAGS bits 3, 5, 15, 22-31: RESERVED_BITS [EFLAGS] (SDM vol. 1 §3.4.3);
       g. EFLAGS.VM (virtual-8086 is not protected-mode code): INVALID_STATE [EFLAGS];
       h. LDTR not 0 (the map has no LDT descriptor): INVALID_STATE [LDTR];
       i. per segment register, CS, SS, DS, ES, FS, GS: a null selector (bits 15:2 = 0) is
          INVALID_STATE for CS and SS and gives the null segment for the others; otherwise
          TI (bit 2) set: INVALID_STATE [seg] (no LDT); ``index * 8 + 7 > gdtr_limit``:
          INVALID_STATE [seg]; ``gdtr_base`` not 8-byte aligned: INVALID_STATE [GDTR]; read the
          descriptor's two words at ``gdtr_base + index * 8`` (a 32-bit address: it wraps at
          4 GiB as a linear address does) and check it: CS present, S = 1 and a code segment
          (type bit 3); SS present, S = 1, a writable data segment (type bit 3 = 0, bit 1 = 1)
          and SS.RPL = CS.RPL; DS, ES, FS, GS present, S = 1 and not execute-only code:
          otherwise INVALID_STATE [seg] (SDM vol. 3 §5.4 "Type Checking", §5.4.1, §3.4.5.1;
          the VM-entry "Checks on Guest Segment Registers").

    6. SET_INITIAL_AP_STATE: the StartState (eflags with bit 1 set) is stored for the target,
       ``armed`` 1, OK.  START: a CONTEXT record with ``via_sipi`` 0 and ``vector`` 0;
       ``running`` 1 and OK when the sink takes it (an armed context stays armed).

    A refused call changes nothing (no context stored, ``armed`` unchanged).  ``done`` pulses
    the cycle after the call completes, with ``status`` and ``field``.

    Parameters
    ----------
    apic_ids : tuple of int
        The vCPUs' APIC IDs (32-bit), in port order: 1 to :data:`MAX_VCPUS`, distinct.
    bsp_index : int
        The vCPU running at reset; the others wait for SIPI.

    Attributes
    ----------
    call : In(:class:`~apwake.rtl.start_context.signatures.StartCallSignature`)
        The guest's calls (the unit serves them).
    launch : Out(:class:`~apwake.rtl.start_context.signatures.LaunchSignature`)
        Launch records, a stream the sink may stall.
    apic : In(:class:`~apwake.rtl.start_context.signatures.SipiEventsSignature`) array of n
        Each vCPU's INIT and SIPI.
    memory : Out(:class:`apwake.rtl.lib.bus.MemoryBusSignature`)
        Guest memory, initiator, reads only: the struct and the GDT descriptors.
    idle : Out(1)
        Nothing changes on its own while the inputs hold (time skipping, as
        ``GhcbMsrUnit.idle``): the engine waits, no ``done`` pulse this cycle, no call, no
        pending SIPI and no AP taking an INIT.
    holding : Out(n)
        One-hot: the vCPU whose launch record waits for the sink (the decision is made, the
        record not yet taken).  A system holds that CPU's INIT back meanwhile
        (``rtl/system/pvstart.py``), so that a SIPI the hypervisor has picked and an INIT that
        comes later reach the CPU in that order; with an always-ready sink it is never high
        for more than the cycle the record is taken.

    Raises
    ------
    TypeError
        ``apic_ids`` is not a tuple or list, an APIC ID or ``bsp_index`` is not an int.
    ValueError
        1 to 4096 APIC IDs, each 0 to 2**32 - 1, no two alike; ``bsp_index`` one of them.

    Sources: Linux 2.6.2x ``arch/x86/kernel/vmi_32.c`` (``vmi_startup_ipi_hook``) and
    ``arch/x86/include/asm/vmi.h``; Zachary Amsden's reply to Eric W. Biederman on the hook
    (virtualization mailing list: the constraint "no mixed real and paravirtual mode" behind
    PARAVIRT); Xen ``xen/include/public/vcpu.h`` (VCPUOP_initialise, VCPUOP_up); Microsoft
    Hypervisor TLFS (HvCallStartVirtualProcessor); Intel SDM vol. 3 §2.5, §3.4.5, §5.4, §10.4 (MP
    initialization); AMD APM vol. 2 appendix B (VMCB state save area); KVM
    ``arch/x86/kvm/x86.c``.
    """

    def __init__(self, *, apic_ids, bsp_index=0):
        apic_ids = check_apic_ids(apic_ids)
        if not 1 <= len(apic_ids) <= MAX_VCPUS:
            raise ValueError(f"apic_ids must name 1 to {MAX_VCPUS} vCPUs, not {len(apic_ids)}")
        if not isinstance(bsp_index, int) or isinstance(bsp_index, bool):
            raise TypeError(f"bsp_index must be an int, not {type(bsp_index).__name__}")
        if not 0 <= bsp_index < len(apic_ids):
            raise ValueError(f"bsp_index must be 0 to {len(apic_ids) - 1}, not {bsp_index}")
        self.apic_ids, self.bsp_index = apic_ids, bsp_index
        super().__init__({
            "call": In(StartCallSignature()),
            "launch": Out(LaunchSignature()),
            "apic": In(SipiEventsSignature()).array(len(apic_ids)),
            "memory": Out(MemoryBusSignature()),
            "idle": Out(1),
            "holding": Out(len(apic_ids)),
        })

    @property
    def n_vcpus(self):
        return len(self.apic_ids)

    def elaborate(self, platform):
        m = Module()
        n, call, launch, bus = self.n_vcpus, self.call, self.launch, self.memory
        ap_mask = ((1 << n) - 1) & ~(1 << self.bsp_index)

        # --- per-vCPU state: bit vectors, updated once at the end of the cycle ---------------------
        running = Signal(n, init=1 << self.bsp_index)
        armed = Signal(n)
        paravirt = Signal()
        start_running, arm, disarm = Signal(n), Signal(n), Signal(n)     # this cycle's updates
        sipi = Cat(events.sipi for events in self.apic)
        init_taken = Cat(events.init_taken for events in self.apic) & ap_mask

        m.submodules.store = store = Memory(shape=StartState, depth=n, init=[])
        read, write = store.read_port(), store.write_port()

        # --- the engine's registers ----------------------------------------------------------------
        op = Signal(StartOp)
        address = Signal(32)
        apic_id = Signal(32)
        target = Signal(range(max(n, 2)))
        target_1h = Signal(n)
        kind = Signal(LaunchKind)
        vector = Signal(8)
        via_sipi = Signal()
        state = Signal(StartState)
        raw = Signal(32 * VMI_AP_STATE_WORDS)       # the struct's words, shifted in from the top
        word = Signal(range(VMI_AP_STATE_WORDS))
        seg = Signal(range(len(SEGMENTS)))
        desc_addr = Signal(32)
        desc = Signal(GdtDescriptor)
        turn = Signal()                             # 1: a pending SIPI goes before a call
        done = Signal()
        m.d.comb += [call.done.eq(done)]
        m.d.sync += done.eq(0)

        def struct_field(name):
            offset, size = VMI_AP_STATE_OFFSETS[name]
            return raw[offset * 8:(offset + size) * 8]

        def finish(status, field=StateField.NONE):
            m.d.sync += [call.status.eq(status), call.field.as_value().eq(field), done.eq(1)]
            m.next = "IDLE"

        # --- which vCPU has the call's APIC ID: one comparator per vCPU, on a register ------------
        match = Signal(n)
        m.d.comb += match.eq(Cat(apic_id == value for value in self.apic_ids))

        m.submodules.sipi_arbiter = arbiter = RoundRobinArbiter(n)
        vectors = Array(events.sipi_vector for events in self.apic)

        # --- the struct's fields ---------------------------------------------------------------------
        cr0, cr4, efer, eflags = (struct_field(name) for name in ("cr0", "cr4", "efer", "eflags"))
        pe, nw, cd, pg = (cr0[bit.bit_length() - 1] for bit in (CR0_PE, CR0_NW, CR0_CD, CR0_PG))
        gdtr_limit, gdtr_base = struct_field("gdtr_limit"), struct_field("gdtr_base")
        selectors = Array(struct_field(name) for name in SEGMENTS)
        cs_selector = struct_field("cs")

        # the segment being resolved
        selector = Signal(16)
        m.d.comb += selector.eq(selectors[seg])
        index, ti, rpl = selector[3:16], selector[2], selector[0:2]
        seg_field = Signal(4)
        m.d.comb += seg_field.eq(StateField.CS.value + seg)
        resolved = Signal(Segment)
        m.d.comb += [
            resolved.selector.eq(selector),
            # the Accessed bit set, as a CPU loading the selector sets it (SDM vol. 3 §3.4.5.1)
            resolved.attrib.eq(Cat(desc.type | 1, desc.s, desc.dpl, desc.p,
                                   desc.avl, desc.l, desc.db, desc.g, Const(0, 4))),
            resolved.limit.eq(Mux(desc.g, Cat(Const(0xFFF, 12), desc.limit_lo, desc.limit_hi),
                                  Cat(desc.limit_lo, desc.limit_hi))),
            resolved.base.eq(Cat(desc.base_lo, desc.base_hi)),
        ]
        null_segment = Signal(Segment)
        m.d.comb += null_segment.selector.eq(selector)

        def store_segment(value):
            for k, name in enumerate(SEGMENTS):
                with m.If(seg == k):
                    m.d.sync += getattr(state, name).eq(value)
            with m.If(seg == len(SEGMENTS) - 1):
                m.next = "COMMIT"
            with m.Else():
                m.d.sync += seg.eq(seg + 1)
                m.next = "SEGMENT"

        code, writable = desc.type[3], desc.type[1]
        bad_descriptor = Signal()
        with m.Switch(seg):
            with m.Case(0):     # CS: a code segment
                m.d.comb += bad_descriptor.eq(~desc.p | ~desc.s | ~code)
            with m.Case(1):     # SS: a writable data segment, RPL as CS's
                m.d.comb += bad_descriptor.eq(~desc.p | ~desc.s | code | ~writable |
                                              (rpl != cs_selector[0:2]))
            with m.Default():   # DS, ES, FS, GS: readable (not execute-only code)
                m.d.comb += bad_descriptor.eq(~desc.p | ~desc.s | (code & ~writable))

        launch_take = Signal()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                call_ready = ~(turn & sipi.any())
                m.d.comb += call.ready.eq(call_ready)
                take_call = call.valid & call_ready
                with m.If(take_call):
                    m.d.sync += [op.eq(call.op), address.eq(call.address), apic_id.eq(call.apic_id),
                                 turn.eq(1)]
                    m.next = "CALL"
                with m.Elif(sipi.any()):
                    m.d.comb += [arbiter.requests.eq(sipi),
                                 read.addr.eq(arbiter.grant_index), read.en.eq(1)]
                    grant = arbiter.grant
                    m.d.sync += [target.eq(arbiter.grant_index), target_1h.eq(grant),
                                 vector.eq(vectors[arbiter.grant_index]), via_sipi.eq(1), turn.eq(0)]
                    with m.If((running & grant).any()):
                        m.d.sync += kind.eq(LaunchKind.DROPPED)
                    with m.Elif((armed & grant).any()):
                        m.d.sync += kind.eq(LaunchKind.CONTEXT)
                    with m.Elif(paravirt):
                        m.d.sync += kind.eq(LaunchKind.REFUSED)
                    with m.Else():
                        m.d.sync += kind.eq(LaunchKind.REAL_MODE)
                    m.next = "SIPI_LOAD"

            with m.State("SIPI_LOAD"):
                # the stored context (read the cycle before); only a CONTEXT record shows it
                m.d.sync += state.eq(read.data)
                m.next = "LAUNCH"

            with m.State("CALL"):
                with m.If(op.as_value() == 3):
                    finish(StartStatus.BAD_OP)
                with m.Elif(op == StartOp.PARAVIRT):
                    m.d.sync += paravirt.eq(1)
                    finish(StartStatus.OK)
                with m.Elif(~match.any()):
                    finish(StartStatus.UNKNOWN_APIC_ID)
                with m.Elif((address[0:2] != 0) | (address > _LAST_ADDRESS)):
                    finish(StartStatus.BAD_ADDRESS)
                with m.Elif((op == StartOp.START) & (running & match).any()):
                    finish(StartStatus.ALREADY_RUNNING)
                with m.Else():
                    m.d.sync += [target.eq(onehot_to_index(match)), target_1h.eq(match), word.eq(0)]
                    m.next = "READ"

            # the struct, word by word in address order, shifted into raw from the top
            with m.State("READ"):
                m.d.comb += [bus.req_valid.eq(1), bus.addr.eq(address + Cat(Const(0, 2), word))]
                with m.If(bus.req_ready):
                    m.next = "READ_RESP"
            with m.State("READ_RESP"):
                with m.If(bus.resp_valid):
                    m.d.sync += [raw.eq(Cat(raw[32:], bus.rdata)), word.eq(word + 1)]
                    with m.If(word == VMI_AP_STATE_WORDS - 1):
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "READ"

            with m.State("CHECK"):
                with m.If((cr0 & CR0_RESERVED) != 0):
                    finish(StartStatus.RESERVED_BITS, StateField.CR0)
                with m.Elif(~pe | (pg & ~pe) | (nw & ~cd)):
                    finish(StartStatus.INVALID_STATE, StateField.CR0)
                with m.Elif((cr4 & CR4_RESERVED) != 0):
                    finish(StartStatus.RESERVED_BITS, StateField.CR4)
                with m.Elif((efer & EFER_RESERVED) != 0):
                    finish(StartStatus.RESERVED_BITS, StateField.EFER)
                with m.Elif((efer & (EFER_LME | EFER_LMA)) != 0):
                    finish(StartStatus.INVALID_STATE, StateField.EFER)
                with m.Elif((eflags & EFLAGS_RESERVED) != 0):
                    finish(StartStatus.RESERVED_BITS, StateField.EFLAGS)
                with m.Elif((eflags & EFLAGS_VM) != 0):
                    finish(StartStatus.INVALID_STATE, StateField.EFLAGS)
                with m.Elif(struct_field("ldtr") != 0):
                    finish(StartStatus.INVALID_STATE, StateField.LDTR)
                with m.Else():
                    for name in ("cr0", "cr2", "cr3", "cr4", "efer", "eip", "esp",
                                 "eax", "ebx", "ecx", "edx", "ebp", "esi", "edi"):
                        m.d.sync += getattr(state, name).eq(struct_field(name))
                    m.d.sync += [state.eflags.eq(eflags | EFLAGS_FIXED1),
                                 state.gdtr.limit.eq(gdtr_limit), state.gdtr.base.eq(gdtr_base),
                                 state.idtr.limit.eq(struct_field("idtr_limit")),
                                 state.idtr.base.eq(struct_field("idtr_base")),
                                 seg.eq(0)]
                    m.next = "SEGMENT"

            with m.State("SEGMENT"):
                with m.If(selector[2:16] == 0):
                    with m.If(seg < 2):             # CS and SS must not be null
                        finish(StartStatus.INVALID_STATE, seg_field)
                    with m.Else():
                        store_segment(null_segment)
                with m.Elif(ti):
                    finish(StartStatus.INVALID_STATE, seg_field)
                with m.Elif(Cat(Const(7, 3), index) > gdtr_limit):
                    finish(StartStatus.INVALID_STATE, seg_field)
                with m.Elif(gdtr_base[0:3] != 0):
                    finish(StartStatus.INVALID_STATE, StateField.GDTR)
                with m.Else():
                    m.d.sync += desc_addr.eq(gdtr_base + Cat(Const(0, 3), index))
                    m.next = "DESC_LO"

            access_states(m, bus, "DESC_LO", addr=desc_addr, capture=desc.as_value()[0:32],
                          then="DESC_HI")
            access_states(m, bus, "DESC_HI", addr=desc_addr + 4, capture=desc.as_value()[32:64],
                          then="DESCRIPTOR")

            with m.State("DESCRIPTOR"):
                with m.If(bad_descriptor):
                    finish(StartStatus.INVALID_STATE, seg_field)
                with m.Else():
                    store_segment(resolved)

            with m.State("COMMIT"):
                with m.If(op == StartOp.SET_INITIAL_AP_STATE):
                    m.d.comb += [write.addr.eq(target), write.data.eq(state), write.en.eq(1),
                                 arm.eq(target_1h)]
                    finish(StartStatus.OK)
                with m.Else():
                    m.d.sync += [kind.eq(LaunchKind.CONTEXT), vector.eq(0), via_sipi.eq(0)]
                    m.next = "LAUNCH"

            with m.State("LAUNCH"):
                m.d.comb += launch.valid.eq(1)
                with m.If(launch.ready):
                    m.d.comb += launch_take.eq(1)
                    with m.If((kind == LaunchKind.REAL_MODE) | (kind == LaunchKind.CONTEXT)):
                        m.d.comb += start_running.eq(target_1h)
                    with m.If(via_sipi & (kind == LaunchKind.CONTEXT)):
                        m.d.comb += disarm.eq(target_1h)
                    with m.If(via_sipi):
                        m.next = "IDLE"
                    with m.Else():
                        finish(StartStatus.OK)

        m.d.comb += [
            launch.vcpu.eq(target), launch.kind.eq(kind), launch.vector.eq(vector),
            launch.via_sipi.eq(via_sipi),
            launch.state.eq(Mux(kind == LaunchKind.CONTEXT, state.as_value(), 0)),
        ]
        for i, events in enumerate(self.apic):
            m.d.comb += events.sipi_ack.eq(launch_take & via_sipi & target_1h[i])
        # an INIT taken in the cycle a record is taken comes after it
        m.d.sync += [running.eq((running | start_running) & ~init_taken),
                     armed.eq((armed | arm) & ~disarm)]
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~done & ~call.valid & ~sipi.any() &
                                 ~init_taken.any())
        # the vCPU a record waits for the sink is about: its CPU must not take an INIT before it
        m.d.comb += self.holding.eq(Mux(fsm.ongoing("LAUNCH"), target_1h, 0))
        return m
