"""The TDX module model and the SEAMCALL ABI digest (no simulator): each rule and status the host
scenarios rely on, checked leaf by leaf."""

import pytest

from apwake.sim.models.tdx.abi import (TDX_SEAMCALL_GP, TDX_SEAMCALL_UD, TDX_SEAMCALL_VMFAILINVALID,
                                       Errno, Leaf, Status, errno_of, seamcall_error_message,
                                       status_name)
from apwake.sim.models.tdx.module import (FEATURES0_NO_RBP_MOD, TDMR_INIT_CHUNK, Rule, SysState,
                                          Tdmr, TdxModule)
from apwake.sim.models.cpu.state import CR4, ArchState
from apwake.sim.models.cpu.vmx import (FEATURE_CONTROL_LOCKED, VMCS_REVISION_ID, VMXON_IN_VMX_ROOT, Vmx,
                                       VmFail, VmxFault)
from apwake.sim.scenarios.tdx_host import host_topology
from apwake.sim.vip.memory import Memory

GIB = 1 << 30
#: two packages of two CPUs: APIC IDs 0, 1 in package 0, 2, 3 in package 1
LPS = {0: 0, 1: 0, 2: 1, 3: 1}
TDMRS = (Tdmr(0, GIB),)


def test_software_statuses_are_linux_values():
    """asm/tdx.h: TDX_SW_ERROR = TDX_ERROR | GENMASK(47, 40), then the trap number or 0xFFFF0000."""
    assert TDX_SEAMCALL_UD == 0x8000_FF00_0000_0006
    assert TDX_SEAMCALL_GP == 0x8000_FF00_0000_000D
    assert TDX_SEAMCALL_VMFAILINVALID == 0x8000_FF00_FFFF_0000


@pytest.mark.parametrize("status, errno", [
    (Status.TDX_SUCCESS, 0), (TDX_SEAMCALL_VMFAILINVALID, -Errno.ENODEV),
    (TDX_SEAMCALL_GP, -Errno.EOPNOTSUPP), (TDX_SEAMCALL_UD, -Errno.EACCES),
    (Status.TDX_SYS_LP_INIT_NOT_DONE, -Errno.EIO), (Status.TDX_OPERAND_INVALID | 2, -Errno.EIO)])
def test_errno_mapping(status, errno):
    assert errno_of(status) == errno


def test_status_names_and_message():
    assert status_name(Status.TDX_OPERAND_INVALID | 8) == "TDX_OPERAND_INVALID+operand 8"
    assert status_name(TDX_SEAMCALL_UD) == "TDX_SEAMCALL_UD"
    assert status_name(0xC000_0999_0000_0000) == "0xc000099900000000"
    assert (seamcall_error_message(Leaf.TDH_SYS_CONFIG, Status.TDX_SYS_CONFIG_NOT_PENDING)
            == "SEAMCALL (0x000000000000002d) failed: 0xc000050c00000000")


def configure(module, lp=0):
    return module.call(lp, Leaf.TDH_SYS_CONFIG, rdx=len(TDMRS), r8=module.tdx_keyids.start, tdmrs=TDMRS)[0]


def initialised(rule, lps=(0, 1, 2, 3)):
    module = TdxModule(LPS, rule=rule)
    assert module.call(0, Leaf.TDH_SYS_INIT)[0] == Status.TDX_SUCCESS
    for lp in lps:
        assert module.call(lp, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SUCCESS
    return module


@pytest.mark.parametrize("rule", list(Rule))
def test_the_whole_sequence(rule):
    """INIT, LP.INIT everywhere, RD, CONFIG, KEY.CONFIG per package, TDMR.INIT in 4 MiB steps
    with RDX rounded down to 1 GiB: ready."""
    module = initialised(rule)
    status, out = module.call(0, Leaf.TDH_SYS_RD)
    assert status == Status.TDX_SUCCESS and out["r8"] & FEATURES0_NO_RBP_MOD
    assert configure(module) == Status.TDX_SUCCESS and module.state is SysState.SYSCONFIG_DONE
    assert module.call(0, Leaf.TDH_SYS_KEY_CONFIG)[0] == Status.TDX_SUCCESS
    assert module.call(1, Leaf.TDH_SYS_KEY_CONFIG)[0] == Status.TDX_KEY_CONFIGURED   # same package
    assert module.state is SysState.SYSCONFIG_DONE
    assert module.call(2, Leaf.TDH_SYS_KEY_CONFIG)[0] == Status.TDX_SUCCESS
    assert module.state is SysState.SYS_READY and not module.ready
    steps = []
    while True:
        status, out = module.call(0, Leaf.TDH_SYS_TDMR_INIT, rcx=0)
        if status != Status.TDX_SUCCESS:
            break
        steps.append(out["rdx"])
    assert status == Status.TDX_TDMR_ALREADY_INITIALIZED
    assert len(steps) == GIB // TDMR_INIT_CHUNK and set(steps[:-1]) == {0} and steps[-1] == GIB
    assert module.ready


def test_init_once_and_lp_init_after_it():
    module = TdxModule(LPS)
    assert module.call(1, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SYS_LP_INIT_NOT_PENDING
    assert module.call(0, Leaf.TDH_SYS_INIT, rcx=1)[0] == Status.TDX_OPERAND_INVALID | 1
    assert module.call(0, Leaf.TDH_SYS_INIT)[0] == Status.TDX_SUCCESS
    assert module.call(3, Leaf.TDH_SYS_INIT)[0] == Status.TDX_SYS_INIT_NOT_PENDING
    assert module.call(1, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SUCCESS
    assert module.call(1, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SYS_LP_INIT_DONE


def test_per_lp_rule():
    """A leaf other than INIT and LP.INIT on an LP that did not run LP.INIT: LP_INIT_NOT_DONE;
    before the module is ready a later leaf gets NOT_READY first (the dispatcher's check)."""
    module = initialised(Rule.RELAXED, lps=(0,))
    assert module.call(1, Leaf.TDH_SYS_RD)[0] == Status.TDX_SYS_LP_INIT_NOT_DONE
    assert module.call(1, Leaf.TDH_SYS_TDMR_INIT)[0] == Status.TDX_SYS_NOT_READY


def test_strict_rule_counts_every_present_lp():
    """strict: CONFIG refused while an LP (online or not) never ran LP.INIT; after CONFIG no
    LP.INIT at all.  relaxed: CONFIG goes, and LP.INIT still works afterwards."""
    strict = initialised(Rule.STRICT, lps=(0, 1, 2))
    assert configure(strict) == Status.TDX_SYS_CONFIG_NOT_PENDING
    assert strict.uninitialized_lps() == [3]
    assert strict.call(3, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SUCCESS
    assert configure(strict) == Status.TDX_SUCCESS
    relaxed = initialised(Rule.RELAXED, lps=(0, 1, 2))
    assert configure(relaxed) == Status.TDX_SUCCESS
    assert relaxed.call(3, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SUCCESS
    fresh = TdxModule(LPS, rule=Rule.STRICT)
    fresh.call(0, Leaf.TDH_SYS_INIT)
    for lp in LPS:
        fresh.call(lp, Leaf.TDH_SYS_LP_INIT)
    configure(fresh)
    fresh.lp_initialized.discard(3)      # as if LP 3 came back from a reset
    assert fresh.call(3, Leaf.TDH_SYS_LP_INIT)[0] == Status.TDX_SYS_LP_INIT_NOT_PENDING


def test_config_operands():
    module = initialised(Rule.RELAXED)
    assert module.call(0, Leaf.TDH_SYS_CONFIG, rdx=0, r8=32, tdmrs=())[0] == Status.TDX_OPERAND_INVALID | 2
    assert module.call(0, Leaf.TDH_SYS_CONFIG, rdx=1, r8=5, tdmrs=TDMRS)[0] == Status.TDX_OPERAND_INVALID | 8
    assert module.call(0, Leaf.TDH_SYS_KEY_CONFIG)[0] == Status.TDX_SYS_KEY_CONFIG_NOT_PENDING
    assert configure(module) == Status.TDX_SUCCESS
    assert configure(module) == Status.TDX_SYS_CONFIG_NOT_PENDING


def test_a_package_without_key_config_keeps_the_module_not_ready():
    module = initialised(Rule.RELAXED, lps=(0, 1))
    configure(module)
    module.call(0, Leaf.TDH_SYS_KEY_CONFIG)
    assert module.state is SysState.SYSCONFIG_DONE
    assert module.call(0, Leaf.TDH_SYS_TDMR_INIT, rcx=0)[0] == Status.TDX_SYS_NOT_READY


def test_tdmr_init_operand():
    module = initialised(Rule.RELAXED)
    configure(module)
    module.call(0, Leaf.TDH_SYS_KEY_CONFIG)
    module.call(2, Leaf.TDH_SYS_KEY_CONFIG)
    assert module.call(0, Leaf.TDH_SYS_TDMR_INIT, rcx=GIB)[0] == Status.TDX_OPERAND_INVALID | 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one logical processor"):
        TdxModule({})
    with pytest.raises(ValueError, match="'lenient' is not a valid Rule"):
        TdxModule(LPS, rule="lenient")
    with pytest.raises(ValueError, match="APIC ID 0x9 is not a logical processor"):
        TdxModule(LPS).call(9, Leaf.TDH_SYS_INIT)
    with pytest.raises(ValueError, match="1 GiB aligned"):
        Tdmr(4096, GIB)


@pytest.mark.parametrize("ids, text, shape", [
    ([0], None, (1, 1, 1)), ([0, 1], None, (2, 1, 1)), (list(range(8)), None, (2, 2, 2)),
    (list(range(6)), None, (2, 3, 1)), (None, "2x6x2", (2, 6, 2))])
def test_host_topology(ids, text, shape):
    topology = host_topology(ids or [], text)
    assert (topology.packages, topology.cores, topology.threads) == shape


def test_default_topology_packages():
    """8 contiguous IDs: 0-3 in package 0, 4-7 in package 1, odd IDs SMT siblings."""
    topology = host_topology(list(range(8)))
    assert [topology.split(a)[0] for a in range(8)] == [0] * 4 + [1] * 4
    assert [topology.split(a)[2] for a in range(8)] == [0, 1] * 4


class _Cpu:
    """What VMXON and VMXOFF touch of a CPU model: its state, memory, timeline."""

    def __init__(self):
        self.arch = ArchState.long_mode_entry(0x1000, cr3=0x8000, rsp=0x2000)
        self.machine = type("Machine", (), {"memory": Memory()})()
        self.notes, self.left = [], 0
        self.vmx = Vmx(self)

    def note(self, text):
        self.notes.append(text)

    def vmx_left(self):
        self.left += 1


def test_vmxon_and_vmxoff_checks():
    """SDM vol. 3C, VMXON/VMXOFF: #UD without CR4.VMXE, #GP without the firmware's
    IA32_FEATURE_CONTROL, VMfailInvalid for a bad region, VMfailValid(15) when on; VMXOFF #UD when
    off, and it lets a held INIT through (vmx_left)."""
    cpu = _Cpu()
    memory = cpu.machine.memory
    memory.write_int(0x10_0000, VMCS_REVISION_ID, 4, writer=None)
    memory.write_int(0x10_1000, VMCS_REVISION_ID | 1 << 31, 4, writer=None)
    memory.write_int(0x10_2000, VMCS_REVISION_ID + 1, 4, writer=None)
    with pytest.raises(VmxFault, match="CR4.VMXE clear") as fault:
        cpu.vmx.vmxon(0x10_0000)
    assert fault.value.vector == 6
    cpu.arch.cr4 |= CR4["VMXE"]
    cpu.vmx.feature_control = FEATURE_CONTROL_LOCKED
    with pytest.raises(VmxFault, match="IA32_FEATURE_CONTROL = 0x1") as fault:
        cpu.vmx.vmxon(0x10_0000)
    assert fault.value.vector == 13
    cpu.vmx.feature_control = Vmx(cpu).feature_control
    for region, why in ((0x10_0010, "not 4-KiB aligned"), (0x10_1000, "bit 31 clear"),
                        (0x10_2000, "not the revision")):
        with pytest.raises(VmFail, match=why) as fail:
            cpu.vmx.vmxon(region)
        assert fail.value.error is None and not cpu.vmx.root
    cpu.vmx.vmxon(0x10_0000)
    assert cpu.vmx.root and cpu.vmx.region == 0x10_0000 and cpu.notes == ["VMXON"]
    with pytest.raises(VmFail) as fail:
        cpu.vmx.vmxon(0x10_0000)
    assert fail.value.error == VMXON_IN_VMX_ROOT == 15
    cpu.vmx.vmxoff()
    assert not cpu.vmx.root and cpu.left == 1
    with pytest.raises(VmxFault, match="VMXOFF outside VMX operation"):
        cpu.vmx.vmxoff()
