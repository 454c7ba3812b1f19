"""Plan B for kexec on a version-0 MP wakeup mailbox: the first kernel parks its APs in a loop
of its own instead of halting them (Feb 2023; docs/spec/mpwk.md §4, §5, §7 #19, #20).

The thread weighed two placements, both modelled here (``ScenarioOptions.parking_page``):

* ``"kernel"`` (Kirill Shutemov's third point): kernel 1 reserves a page, puts a mailbox with
  the ACPI layout and its loop there, and patches the MADT entry to point at it.  Kernel 2 wakes
  the APs kernel 1 parked; an AP kernel 1 never woke (``nr_cpus=``, ``CONFIG_SMP=n``) still
  polls the firmware's page, which no MADT names any more, so kernel 2 cannot reach it.
* ``"firmware"`` (Dave Hansen's question): the loop polls the firmware's own mailbox address,
  "indistinguishable from what the BIOS did"; the MADT stays as it is.  Every AP is reachable,
  but the firmware owns that page and may reuse it once the last AP has left its loop (Kirill's
  second point): kernel 1's and kernel 2's mailbox writes then land in firmware data, which the
  memory model records as corruptions.

Modelling note: apwake's firmware mailbox is the MMIO peripheral of ``rtl/mpwk_mailbox``; the
parking loop's mailbox is RAM in :class:`apwake.sim.vip.memory.Memory`.  With the firmware placement both
sit at the same address, as on a TDX guest where the firmware's loop and the kernel's loop read
the same page; :meth:`ParkingLoop.holds` lets the machine send each request to the loop that
holds that APIC ID (:meth:`apwake.sim.models.cpu.machine.Machine.mailbox_port`).
"""

from apwake.rtl.mpwk_mailbox.layouts import APIC_ID_INVALID, Command, FIRMWARE_HALF, OFFSETS, PAGE_SIZE

from apwake.sim.vip.memory import Owner

__all__ = ["ParkingLoop", "RamMailbox", "PARKING_PAGE", "PLACEMENTS"]

#: kernel 1's reserved page for the loop's code (and, placed "kernel", its mailbox)
PARKING_PAGE = 0x0030_0000
PLACEMENTS = ("kernel", "firmware")


class RamMailbox:
    """A mailbox page in RAM, with the access methods of :class:`apwake.sim.vip.mpwk_mailbox.bfm.MemoryBusDriver` so
    the kernel's ``acpi_wakeup_cpu`` drives it the same way; writes carry the writer's identity
    for the page-ownership check."""

    def __init__(self, memory, writer):
        self.memory, self.writer = memory, writer

    async def read32(self, addr):
        return self.memory.read_int(addr, 4)

    async def write16(self, addr, value):
        self.memory.write_int(addr, value, 2, writer=self.writer)

    async def write32(self, addr, value):
        self.memory.write_int(addr, value, 4, writer=self.writer)

    async def write64(self, addr, value):
        self.memory.write_int(addr, value, 8, writer=self.writer)

    async def wait_command_clear(self, base, timeout_ns):
        """The OS's spin on Command, event-driven: True once it reads 0."""
        return await self.memory.wait_until(base + OFFSETS["command"], 2, lambda v: v == 0,
                                            timeout_ns=timeout_ns)


class ParkingLoop:
    """Kernel 1's loop and the mailbox it polls.

    Parameters
    ----------
    memory : apwake.sim.vip.memory.Memory
    mailbox_address : int
        Where the loop's mailbox is (a page of its own, or the firmware's).
    owner : apwake.sim.vip.memory.Owner
        The kernel whose code the loop is; its acknowledgements are written as that owner.
    """

    def __init__(self, memory, mailbox_address, *, owner):
        self.memory, self.mailbox_address, self.owner = memory, mailbox_address, owner
        self.code = PARKING_PAGE + FIRMWARE_HALF
        self.parked = set()          # APIC IDs in the loop now
        self.woken = []              # (APIC ID, vector) in order

    def install(self):
        """Reserve the code page, load the loop, and put the mailbox into its idle state (these
        stores are the ones that hit a reused firmware page)."""
        self.memory.set_owner(PARKING_PAGE, PAGE_SIZE, Owner.RESERVED)
        self.memory.load_program(self.code, self.run, owner=Owner.RESERVED,
                                 name=f"{self.owner.value}: parking loop")
        base = self.mailbox_address
        self.memory.write_int(base + OFFSETS["command"], 0, 4, writer=self.owner)
        self.memory.write_int(base + OFFSETS["apic_id"], APIC_ID_INVALID, 4, writer=self.owner)
        self.memory.write_int(base + OFFSETS["wakeup_vector"], 0, 8, writer=self.owner)
        return self

    def holds(self, apic_id):
        return apic_id in self.parked

    async def run(self, cpu):
        """The AP's side: wait for Wakeup or Test with its own APIC ID (TDVF's loop, in kernel 1's
        code); acknowledge with the 8-byte clear; Wakeup jumps to the vector."""
        base = self.mailbox_address
        self.parked.add(cpu.apic_id)
        cpu.note(f"parked in {self.owner.value}'s loop on mailbox {base:#x}")
        cpu.where = f"{self.owner.value}'s parking loop (mailbox {base:#x})"
        requests = (Command.WAKEUP.value, Command.TEST.value)
        mine = lambda v: (v & 0xFFFF) in requests and v >> 32 == cpu.apic_id
        while True:
            await self.memory.wait_until(base, 8, mine, timeout_ns=None)
            command = self.memory.read_int(base + OFFSETS["command"], 2)
            vector = self.memory.read_int(base + OFFSETS["wakeup_vector"], 8)
            self.memory.write_int(base, 0, 8, writer=self.owner)
            if command == Command.WAKEUP.value:
                self.parked.discard(cpu.apic_id)
                self.woken.append((cpu.apic_id, vector))
                cpu.wakeup_vector = vector
                cpu.note(f"parking loop Wakeup: 64-bit entry at {vector:#x}")
                cpu.jump(vector)
            cpu.note("parking loop: Test acknowledged")
