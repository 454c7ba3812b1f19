"""Guest physical memory for the CPU models: sparse, byte-addressable, little-endian.

Every 4 KiB page can carry an *owner* (firmware, kernel 1, kernel 2, hypervisor-shared, ...).
A write by one party into a page another party owns is recorded as a corruption
(address, page owner, writer), so kexec scenarios can show a firmware or a hypervisor writing
into memory that now belongs to the next kernel.  Pages without an owner, pages marked
``Owner.SHARED`` (shared with the hypervisor) and ``Owner.RESERVED`` (set aside by one kernel
for a protocol with the next, such as a parking-loop mailbox) take writes from anyone.

Code is modelled too: a Python coroutine function is *loaded* at an address, and a CPU that
jumps there runs it.  A jump to an address where nothing is loaded is a bring-up failure the
CPU model reports.

Waiting on memory is event-driven: :meth:`Memory.wait_until` sleeps until a write touches the
watched range, as a CPU spinning on a flag would, without polling every clock.  :meth:`Memory.watch`
lends the same wake-up to other waits (a CPU model's ``wait_until`` on a flag and on other CPUs).
"""

import contextlib
import enum
import itertools
from typing import Any, NamedTuple

from cocotb.triggers import Event

from apwake.sim.harness.deadline import Deadline

__all__ = ["Owner", "Memory", "Corruption", "LoadedProgram", "PAGE_SIZE", "MemoryError_"]

PAGE_SIZE = 4096


class Owner(str, enum.Enum):
    FIRMWARE = "firmware"
    KERNEL1 = "kernel 1"
    KERNEL2 = "kernel 2"
    HYPERVISOR = "hypervisor"
    SHARED = "hypervisor-shared"
    RESERVED = "reserved for the hand-over"

#: owners whose pages anyone may write
_OPEN = (None, Owner.SHARED, Owner.RESERVED)


class MemoryError_(ValueError):
    """Bad memory request (misaligned size, negative address, code over code)."""


class Corruption(tuple):
    """``(address, page owner, writer)`` of a write into someone else's page."""

    __slots__ = ()

    def as_dict(self):
        address, owner, writer = self
        return {"address": address, "owner": owner.value if isinstance(owner, Owner) else owner,
                "writer": writer.value if isinstance(writer, Owner) else writer}


class LoadedProgram(NamedTuple):
    """What :meth:`Memory.program_at` finds: the coroutine function, its name, the owner of its
    page, and ``entry``, the state it needs on entry (an
    :class:`apwake.sim.models.cpu.state.EntryRequirement`, or None: not checked)."""

    program: Any
    name: str
    owner: Any
    entry: Any = None


class Memory:
    def __init__(self):
        self._bytes = {}
        self._owners = {}
        self._programs = {}
        self._watchers = []          # (start, end, Event)
        self.corruptions = []

    # --- ownership ---------------------------------------------------------------------------
    def set_owner(self, base, size, owner):
        """Give the pages covering ``[base, base + size)`` to ``owner`` (None: nobody)."""
        if base < 0 or size <= 0:
            raise MemoryError_(f"set_owner: bad range base={base:#x} size={size:#x}")
        for page in range(base // PAGE_SIZE, (base + size - 1) // PAGE_SIZE + 1):
            if owner is None:
                self._owners.pop(page, None)
            else:
                self._owners[page] = owner

    def owner(self, address):
        return self._owners.get(address // PAGE_SIZE)

    # --- data --------------------------------------------------------------------------------
    def write(self, address, data, *, writer):
        """Store ``data`` (bytes) at ``address`` on behalf of ``writer``."""
        if address < 0:
            raise MemoryError_(f"write at negative address {address:#x}")
        data = bytes(data)
        if not data:
            return
        end = address + len(data)
        # one record per write and foreign page, at the first byte written there
        for page in range(address // PAGE_SIZE, (end - 1) // PAGE_SIZE + 1):
            owner = self._owners.get(page)
            if owner not in _OPEN and owner != writer:
                self.corruptions.append(Corruption((max(address, page * PAGE_SIZE), owner, writer)))
        self._bytes.update(zip(range(address, end), data))
        for start, stop, event in self._watchers:
            if address < stop and start < end:
                event.set()

    def read(self, address, size):
        return bytes(map(self._bytes.get, range(address, address + size), itertools.repeat(0, size)))

    def write_int(self, address, value, size, *, writer):
        if size not in (1, 2, 4, 8):
            raise MemoryError_(f"integer size must be 1, 2, 4 or 8 bytes, not {size}")
        self.write(address, int(value).to_bytes(size, "little"), writer=writer)

    def read_int(self, address, size):
        if size not in (1, 2, 4, 8):
            raise MemoryError_(f"integer size must be 1, 2, 4 or 8 bytes, not {size}")
        return int.from_bytes(self.read(address, size), "little")

    @contextlib.contextmanager
    def watch(self, address, size, event):
        """Within the ``with`` block, set ``event`` (a :class:`cocotb.triggers.Event`) whenever a
        write touches ``[address, address + size)``."""
        if address < 0 or size <= 0:
            raise MemoryError_(f"watch: bad range address={address:#x} size={size:#x}")
        watcher = (address, address + size, event)
        self._watchers.append(watcher)
        try:
            yield event
        finally:
            self._watchers.remove(watcher)

    async def wait_until(self, address, size, predicate, *, timeout_ns):
        """Sleep until ``predicate(read_int(address, size))`` holds; False on timeout.
        ``timeout_ns=None`` waits for ever: only for code that spins for ever on real hardware
        too (a parking loop), under a scenario watchdog."""
        if predicate(self.read_int(address, size)):
            return True             # (a flag already set needs no watch)
        if timeout_ns is not None and not timeout_ns > 0:
            return False
        with self.watch(address, size, Event()) as event:
            deadline = None if timeout_ns is None else Deadline(timeout_ns)
            while not predicate(self.read_int(address, size)):
                event.clear()
                if deadline is None:
                    await event.wait()
                elif not await deadline.wait(event.wait()):
                    return predicate(self.read_int(address, size))
            return True

    # --- code --------------------------------------------------------------------------------
    def load_program(self, address, program, *, owner, name=None, entry=None):
        """Place ``program`` (``async def program(cpu)``) at ``address`` in a page of ``owner``;
        ``entry``: the state it needs on entry (checked by the CPU that enters it), or None."""
        self.set_owner(address, 1, owner)
        self._programs[address] = LoadedProgram(program, name or program.__name__, owner, entry)

    def program_at(self, address):
        """The :class:`LoadedProgram` at ``address``, or None."""
        return self._programs.get(address)
