"""The VMSA codec (sim/models/cpu/vmsa.py) against Linux's ``struct sev_es_save_area``, and the VMSA
an SNP kernel fills for an AP (``wakeup_cpu_via_vmgexit``), without Verilator."""

import pytest

from apwake.rtl.ghcb_msr.layouts import DEFAULT_VMSA_FEATURES
from apwake.sim.models.cpu.sev import snp_ap_vmsa
from apwake.sim.models.cpu.state import ArchState, DescriptorTable, Segment
from apwake.sim.models.cpu.vmsa import VMSA_OFFSETS, VMSA_SIZE, decode_vmsa, encode_vmsa

#: struct sev_es_save_area (arch/x86/include/asm/svm.h) as (field, bytes), in order; reserved
#: fields by their size only
_SAVE_AREA = (
    [(name, 16) for name in ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")]
    + [("pl0_ssp", 8), ("pl1_ssp", 8), ("pl2_ssp", 8), ("pl3_ssp", 8), ("u_cet", 8), (None, 2),
       ("vmpl", 1), ("cpl", 1), (None, 4), ("efer", 8), (None, 104), ("xss", 8), ("cr4", 8),
       ("cr3", 8), ("cr0", 8), ("dr7", 8), ("dr6", 8), ("rflags", 8), ("rip", 8)]
    + [(f"dr{k}", 8) for k in range(4)] + [(f"dr{k}_addr_mask", 8) for k in range(4)]
    + [(None, 24), ("rsp", 8), ("s_cet", 8), ("ssp", 8), ("isst_addr", 8), ("rax", 8),
       ("star", 8), ("lstar", 8), ("cstar", 8), ("sfmask", 8), ("kernel_gs_base", 8),
       ("sysenter_cs", 8), ("sysenter_esp", 8), ("sysenter_eip", 8), ("cr2", 8), (None, 32),
       ("g_pat", 8), ("dbgctl", 8), ("br_from", 8), ("br_to", 8), ("last_excp_from", 8),
       ("last_excp_to", 8), (None, 80), ("pkru", 4), ("tsc_aux", 4), (None, 24), ("rcx", 8),
       ("rdx", 8), ("rbx", 8), (None, 8), ("rbp", 8), ("rsi", 8), ("rdi", 8)]
    + [(f"r{k}", 8) for k in range(8, 16)]
    + [(None, 16), ("guest_exit_info_1", 8), ("guest_exit_info_2", 8), ("guest_exit_int_info", 8),
       ("guest_nrip", 8), ("sev_features", 8), ("vintr_ctrl", 8), ("guest_exit_code", 8),
       ("virtual_tom", 8), ("tlb_id", 8), ("pcpu_id", 8), ("event_inj", 8), ("xcr0", 8),
       (None, 16), ("x87_dp", 8), ("mxcsr", 4), ("x87_ftw", 2), ("x87_fsw", 2), ("x87_fcw", 2),
       ("x87_fop", 2), ("x87_ds", 2), ("x87_cs", 2), ("x87_rip", 8), ("fpreg_x87", 80),
       ("fpreg_xmm", 256), ("fpreg_ymm", 256)])


def _layout():
    offsets, offset = {}, 0
    for name, size in _SAVE_AREA:
        if name is not None:
            offsets[name] = (offset, size)
        offset += size
    return offsets, offset


def test_offsets_are_the_c_structs():
    offsets, size = _layout()
    assert size == VMSA_SIZE == 1648                 # EXPECTED_SEV_ES_SAVE_AREA_SIZE
    for name, (offset, width) in VMSA_OFFSETS.items():
        assert offsets[name] == (offset, width), name
    # the offsets the issue names
    assert [VMSA_OFFSETS[n][0] for n in ("efer", "cr4", "cr3", "cr0", "rflags", "rip", "rsp",
                                         "sev_features")] == [0xD0, 0x148, 0x150, 0x158, 0x170,
                                                              0x178, 0x1D8, 0x3B0]


def test_round_trip():
    state = ArchState.long_mode_entry(0xFFFF_8000_0100_0000, cr3=0x3000, rsp=0x8000)
    state.gs = Segment(selector=0, base=0xFFFF_8880_0000_0000, limit=0xFFFF_FFFF, attrib=0xC93)
    state.idtr = DescriptorTable(base=0x1234_5000, limit=0xFFF)
    page = encode_vmsa(state, sev_features=0x21, vmpl=2, tr={"limit": 0x67, "attrib": 0x8B})
    decoded, extra = decode_vmsa(page)
    assert decoded == state
    assert extra["sev_features"] == 0x21 and extra["vmpl"] == 2
    assert extra["tr"] == {"selector": 0, "attrib": 0x8B, "limit": 0x67, "base": 0}


def test_encode_refuses_what_is_no_field():
    with pytest.raises(KeyError, match="'rip' is not a VMSA field encode_vmsa takes in extra"):
        encode_vmsa(ArchState(), rip=1)
    with pytest.raises(KeyError, match="'nonsense' is not a VMSA field"):
        encode_vmsa(ArchState(), nonsense=1)
    with pytest.raises(ValueError, match="VMSA field vmpl is 1 bytes: 0x100 does not fit"):
        encode_vmsa(ArchState(), vmpl=0x100)
    with pytest.raises(ValueError, match="a VMSA is 1648 bytes; 16 given"):
        decode_vmsa(bytes(16))


def test_linux_ap_vmsa():
    """wakeup_cpu_via_vmgexit's VMSA for start_ip 0x9A000: real mode, CS 0x9A00 base 0x9A000,
    RIP 0, the APM's INIT values, EFER.SVME, CR4 only the BSP's MCE bit, the VM's features."""
    page = snp_ap_vmsa(0x9A000, cr4=0x6F0 | (1 << 5), sev_features=DEFAULT_VMSA_FEATURES)
    state, extra = decode_vmsa(page)
    assert state.mode == "real" and state.linear_ip == 0x9A000
    assert state.cs == Segment(selector=0x9A00, base=0x9A000, limit=0xFFFF, attrib=0x9A)
    assert state.ds == state.ss == Segment(selector=0, base=0, limit=0xFFFF, attrib=0x92)
    assert (state.cr0, state.cr4, state.efer, state.rflags) == (0x6000_0010, 1 << 6, 1 << 12, 2)
    assert state.gdtr == state.idtr == DescriptorTable(base=0, limit=0xFFFF)
    assert extra["ldtr"]["attrib"] == 0x82 and extra["tr"]["attrib"] == 0x83
    assert (extra["dr7"], extra["dr6"], extra["g_pat"], extra["xcr0"]) == (
        0x400, 0xFFFF_0FF0, 0x0007_0406_0007_0406, 1)
    assert (extra["mxcsr"], extra["x87_ftw"], extra["x87_fcw"]) == (0x1F80, 0x5555, 0x40)
    assert (extra["sev_features"], extra["vmpl"]) == (DEFAULT_VMSA_FEATURES, 0)
