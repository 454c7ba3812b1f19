"""The CPU hotplug lock around TDX enabling, on a machine with at least three CPUs (the offline
is started from a CPU other than the BSP, which enables TDX, and other than its target)."""

import cocotb

from apwake.sim.scenarios.options import ScenarioOptions
from apwake.sim.scenarios.registry import start_machine
from apwake.sim.scenarios.tdx_host import boot_host

TIMEOUT = dict(timeout_time=100, timeout_unit="ms")


@cocotb.test(**TIMEOUT)
async def test_hotplug_lock_holds_cpu_down(dut):
    """A cpu_down started while KVM enables TDX (which holds cpus_read_lock) waits for it: the CPU
    goes offline only after the module is initialised, and had run TDH.SYS.LP.INIT."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    kernel, host, _, _ = await boot_host(machine, options)
    host.register_hotplug("tdx-first")
    bringup = cocotb.start_soon(host.bringup(machine.bsp))
    down = cocotb.start_soon(kernel.cpu_down(machine.cpus[1], 2))
    assert await bringup == 0
    assert not down.done()
    assert await down is None
    module = machine.seam.module
    assert module.ready and 2 in module.lp_initialized
    assert kernel.hotplug_log[-1]["op"] == "cpu_down" and kernel.hotplug_log[-1]["result"] == "ok"
    assert machine.cpus[2].status == "HALTED" and not machine.cpus[2].vmx.root


@cocotb.test(**TIMEOUT)
async def test_cpu_down_first_holds_tdx_enabling(dut):
    """The other order: a cpu_down holding the lock makes tdx_enable's cpus_read_lock() wait, so
    TDX is enabled only after the CPU is gone (no SEAMCALL before), without it."""
    options = ScenarioOptions()
    machine = await start_machine(dut, options)
    kernel, host, _, _ = await boot_host(machine, options)
    host.register_hotplug("tdx-first")
    down = cocotb.start_soon(kernel.cpu_down(machine.cpus[1], 2))
    bringup = cocotb.start_soon(host.bringup(machine.bsp))
    assert await down is None
    assert host.seamcalls == [] and not bringup.done()
    assert await bringup == 0
    module = machine.seam.module
    assert module.ready and 2 not in module.lp_initialized and 2 not in kernel.online_cpus()
