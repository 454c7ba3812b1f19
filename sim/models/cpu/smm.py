"""SMM firmware for the CPU models: the SMI handler, the firmware's AP hlt loop, and the SMI the
firmware raises before it hands over to the kernel.

The scenarios about SMM (``init-sipi-smm``, ``--unresponsive``) need an AP that is *running*
when its SMI arrives: a CPU in wait-for-SIPI takes no SMI (:mod:`apwake.sim.models.cpu.model`).  On real
machines that is the normal case: the firmware has already woken every AP once (edk2 UefiCpuPkg
MpInitLib, for SMBASE relocation and CPU feature set-up) and left it in a hlt loop until the
OS sends INIT-SIPI-SIPI.  :func:`setup_smm` puts the chosen APs in that loop from reset, loads
the SMI handler at SMBASE + 0x8000 (SDM vol. 3, "SMRAM"; :data:`apwake.sim.models.cpu.model.SMM_ENTRY`) and
has the BSP's firmware send each of them an SMI IPI right before it jumps to the kernel (an SMI
IPI stands for the chipset's SMI#; both reach the CPU as the APIC's pending ``smi``).

The handler holds a CPU in SMM for a set guest time (``udelay``, scaled as every guest delay),
or, with ``None``, until :meth:`SmmHandler.release` (never, for an AP stuck in SMM).
"""

import cocotb
from cocotb.triggers import Event

from apwake.rtl.lapic.layouts import DeliveryMode
from apwake.sim.vip.lapic.bfm import make_icr
from apwake.sim.vip.memory import Owner
from .model import SMM_ENTRY

__all__ = ["SmmHandler", "FIRMWARE_AP_LOOP", "setup_smm"]

#: the firmware's AP hlt loop (edk2 keeps it in reserved memory below 1 MiB for a legacy OS)
FIRMWARE_AP_LOOP = 0x0008_0000


class SmmHandler:
    """The firmware's SMI handler, loaded at :data:`apwake.sim.models.cpu.model.SMM_ENTRY`.

    Parameters
    ----------
    memory : apwake.sim.vip.memory.Memory
    duration_us : float or None
        Guest time a CPU spends in the handler unless :meth:`hold` says otherwise; ``None``:
        until :meth:`release`.

    Attributes
    ----------
    entries : list of (int, float)
        ``(port index, simulated ns)`` of each handler entry.
    """

    def __init__(self, memory, *, duration_us=1.0):
        if duration_us is not None and not duration_us >= 0:
            raise ValueError(f"SMM duration_us must be >= 0 or None, not {duration_us!r}")
        self.default_us = duration_us
        self.durations = {}          # port index -> guest us, or None: until released
        self.entries = []
        self._released = {}          # port index -> Event
        memory.load_program(SMM_ENTRY, self.handler, owner=Owner.FIRMWARE, name="firmware SMI handler")

    def hold(self, cpu, duration_us):
        """Keep ``cpu`` in SMM ``duration_us`` guest microseconds per SMI (None: until
        :meth:`release`)."""
        if duration_us is not None and not duration_us >= 0:
            raise ValueError(f"SMM duration_us must be >= 0 or None, not {duration_us!r}")
        self.durations[cpu.index] = duration_us

    def release(self, cpu):
        """End the open-ended SMI ``cpu`` is in (or its next one)."""
        self._released.setdefault(cpu.index, Event()).set()

    async def handler(self, cpu):
        """The SMI handler program; returning from it is RSM."""
        self.entries.append((cpu.index, cocotb.utils.get_sim_time("ns")))
        duration = self.durations.get(cpu.index, self.default_us)
        if duration is None:
            cpu.where = "SMM: firmware SMI handler (until released)"
            released = self._released.setdefault(cpu.index, Event())
            await released.wait()
            released.clear()
        else:
            cpu.where = f"SMM: firmware SMI handler ({duration:g} us)"
            await cpu.udelay(duration)


async def ap_hlt_loop(cpu):
    """The firmware's AP loop: cli; hlt, for ever (an NMI or SMI wakes it, it halts again)."""
    cpu.cli()
    cpu.where = "firmware: AP hlt loop"
    while True:
        await cpu.hlt()


def setup_smm(machine, ports, duration_us):
    """Each AP at a port in ``ports`` starts in the firmware's AP hlt loop and gets an SMI from
    the BSP's firmware just before it jumps to the kernel; the SMI handler holds it
    ``duration_us`` guest microseconds (None: for ever).  Returns the :class:`SmmHandler`.

    Raises
    ------
    ValueError
        A port that does not exist, or the BSP's (its firmware raises the SMIs).
    """
    if machine.smm is None:
        machine.smm = SmmHandler(machine.memory)
        machine.memory.load_program(FIRMWARE_AP_LOOP, ap_hlt_loop, owner=Owner.FIRMWARE,
                                     name="firmware: AP hlt loop")
    targets = []
    for index in ports:
        if not 0 <= index < len(machine.cpus):
            raise ValueError(f"SMM CPU port {index} does not exist (0 to {len(machine.cpus) - 1})")
        cpu = machine.cpus[index]
        if cpu.is_bsp:
            raise ValueError(f"SMM CPU port {index} is the BSP; an SMM CPU must be an AP")
        cpu.start_parked(FIRMWARE_AP_LOOP, "firmware: AP hlt loop")
        machine.smm.hold(cpu, duration_us)
        targets.append(cpu)

    async def raise_smis(bsp):
        for cpu in targets:
            # the firmware's own ICR format: whichever mode the BSP's APIC is in
            x2apic = bsp.apic.x2apic
            await bsp.apic.send_ipi(make_icr(0, DeliveryMode.SMI, dest=cpu.apic_id, x2apic=x2apic))
            if not x2apic:              # x2APIC has no delivery-status bit
                await bsp.apic.wait_idle()
            bsp.note(f"firmware: SMI to APIC ID {cpu.apic_id:#x}")

    machine.handoff.append(raise_smis)
    return machine.smm
