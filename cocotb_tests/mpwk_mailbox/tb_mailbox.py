"""MP wakeup mailbox block tests: Linux's wakeup sequence, Test, return through ResetVector, and
every refused or flagged input of docs/spec/mpwk.md §7 that the peripheral sees."""

import itertools

import cocotb

from apwake.rtl.mpwk_mailbox.layouts import (APIC_ID_BROADCAST, APIC_ID_INVALID, OFFSETS, PAGE_SIZE, ApState,
                                      Command, FIRMWARE_HALF)
from apwake.rtl.mpwk_mailbox.mailbox import STATUS_WORDS
from apwake.sim.vip.mpwk_mailbox.bfm import MailboxEnv
from apwake.sim.vip.mpwk_mailbox.design import MailboxConfig
from apwake.sim.harness.pytest_plugin import applies_to

TIMEOUT = dict(timeout_time=1, timeout_unit="ms")
VECTOR = 0x0000_0000_0009_A000
v1 = applies_to(lambda c: c.version == 1)
v0 = applies_to(lambda c: c.version == 0)


async def start(dut):
    return await MailboxEnv.start(dut, MailboxConfig.from_env())


def addr(env, field):
    return env.base + OFFSETS[field]


async def post(env, apic_id, command, vector=VECTOR):
    """acpi_wakeup_cpu: ApicId, WakeupVector, then Command (a 16-bit release store)."""
    await env.os.write32(addr(env, "apic_id"), apic_id)
    await env.os.write64(addr(env, "wakeup_vector"), vector)
    await env.os.write16(addr(env, "command"), command)


async def wait_acknowledged(env, *, polls=200):
    """Spin on Command as Linux does, but with a watchdog."""
    for _ in range(polls):
        if await env.os.read32(addr(env, "command")) & 0xFFFF == 0:
            return True
    return False


def status_register(env, name):
    """Address of a status-window register (the window sits right after the page by default)."""
    return env.base + PAGE_SIZE + 4 * STATUS_WORDS.index(name)


def flags(env):
    return {k for k, v in env.status().items() if v and k != "rsvd"}


@cocotb.test(**TIMEOUT)
async def test_reset_state(dut):
    env = await start(dut)
    assert await env.os.read32(addr(env, "command")) == 0
    assert await env.os.read32(addr(env, "apic_id")) == APIC_ID_INVALID
    assert await env.os.read64(addr(env, "wakeup_vector")) == 0
    assert all(ap.state is ApState.POLL for ap in env.aps) and not flags(env)


@cocotb.test(**TIMEOUT)
async def test_wakeup_each_ap(dut):
    """Each AP is woken exactly once with the vector the OS wrote; the mailbox is cleared as
    configured (8 bytes: Command, Reserved, ApicId; 2 bytes: Command only)."""
    env = await start(dut)
    for k, ap in enumerate(env.aps):
        vector = VECTOR + 0x1000 * k
        await post(env, ap.apic_id, Command.WAKEUP.value, vector)
        assert await ap.wait_wake(timeout_cycles=200) == vector
        assert await wait_acknowledged(env), f"AP {k}: Command never cleared"
        assert ap.state is ApState.OS_RUNNING
        apic_id = await env.os.read32(addr(env, "apic_id"))
        assert apic_id == (0 if env.config.ack_bytes == 8 else ap.apic_id)
        assert await env.os.read64(addr(env, "wakeup_vector")) == vector, "vector must survive the ack"
        assert sum(bool(a.wake.value) for a in env.aps) == 0, "a second AP saw the wakeup"
    assert not flags(env)


@cocotb.test(**TIMEOUT)
async def test_slow_os_and_late_acknowledges(dut):
    """An OS whose stores come late (two cycles stalled of three) and APs that take their wakeup
    only after the next AP's request is answered (each acknowledge 7 cycles late as well): every
    wakeup stays raised until taken and is taken exactly once, with its own vector; the mailbox
    answers each request without waiting for the previous AP."""
    env = await start(dut)
    env.os.set_pause_generator(itertools.cycle([True, True, False]))
    for ap in env.aps:
        ap.set_pause_generator(itertools.cycle([True] * 7 + [False]))
    vectors = [VECTOR + 0x1000 * k for k in range(len(env.aps))]
    for k, ap in enumerate(env.aps):
        await post(env, ap.apic_id, Command.WAKEUP.value, vectors[k])
        assert await wait_acknowledged(env), f"AP {k}: Command never cleared"
        assert ap.wake.value and ap.state is ApState.OS_RUNNING, f"AP {k}: wakeup not raised"
        if k:
            previous = env.aps[k - 1]
            assert previous.wake.value, f"AP {k - 1}: wakeup dropped before it was taken"
            assert await previous.wait_wake() == vectors[k - 1]
    assert await env.aps[-1].wait_wake() == vectors[-1]
    assert [len(ap.wakeups) for ap in env.aps] == [1] * len(env.aps)
    assert not any(ap.wake.value for ap in env.aps) and not flags(env)


@cocotb.test(**TIMEOUT)
@v1
async def test_offline_and_online_again(dut):
    """Version 1: the AP jumps to ResetVector, is parked again (Test answered), and can be
    woken again (docs/spec/mpwk.md §7 #2, #13)."""
    env = await start(dut)
    ap = env.aps[-1]
    await post(env, ap.apic_id, Command.WAKEUP.value)
    await ap.wait_wake()
    assert await wait_acknowledged(env)
    await ap.return_to_firmware()
    assert ap.state is ApState.RETURNING
    await post(env, ap.apic_id, Command.TEST.value)     # Linux's acpi_mp_cpu_die
    assert await wait_acknowledged(env), "Test to a returning AP was never answered"
    assert ap.state is ApState.POLL and not ap.wake.value, "Test woke the AP"
    await post(env, ap.apic_id, Command.WAKEUP.value, VECTOR + 0x2000)
    assert await ap.wait_wake() == VECTOR + 0x2000
    assert not flags(env)


@cocotb.test(**TIMEOUT)
@v0
async def test_version0_has_no_way_back(dut):
    """Version 0: Test is an unknown command, never acknowledged; an AP that jumps to a reset
    vector is flagged and stays lost."""
    env = await start(dut)
    ap = env.aps[0]
    await post(env, ap.apic_id, Command.WAKEUP.value)
    await ap.wait_wake()
    assert await wait_acknowledged(env)
    await ap.return_to_firmware()
    assert ap.state is ApState.OS_RUNNING and flags(env) == {"reset_unsupported"}
    await post(env, env.aps[1].apic_id, Command.TEST.value)
    assert not await wait_acknowledged(env, polls=20)
    assert "unknown_command" in flags(env)


@cocotb.test(**TIMEOUT)
async def test_no_polling_target(dut):
    """Wakeup for an ID nobody polls (unknown, or an AP already running): never acknowledged,
    ``no_target`` after the timeout; the OS can withdraw it (docs/spec/mpwk.md §7 #1)."""
    env = await start(dut)
    running = env.aps[0]
    await post(env, running.apic_id, Command.WAKEUP.value)
    await running.wait_wake()
    assert await wait_acknowledged(env)
    for apic_id in (0x77, running.apic_id):
        await post(env, apic_id, Command.WAKEUP.value)
        await env.cycles(env.config.no_target_timeout + 10)
        assert await env.os.read32(addr(env, "command")) == Command.WAKEUP.value, "acknowledged on nobody's behalf"
        assert "no_target" in flags(env)
        assert await env.os.read32(status_register(env, "LAST_APIC_ID")) == apic_id
        await env.os.write32(status_register(env, "STATUS"), 0xFFFF_FFFF)   # write 1 to clear
        await env.os.write16(addr(env, "command"), 0)                      # withdraw
        assert not flags(env)
    assert not any(a.wake.value for a in env.aps)


@cocotb.test(**TIMEOUT)
async def test_descheduled_vcpu(dut):
    """The VMM stops running a parked AP's vCPU (docs/spec/mpwk.md §7 #16): its loop answers nothing, so
    the Wakeup stays pending (``no_target`` after the timeout, never acknowledged for it) and is
    answered, with the latched vector, as soon as the vCPU runs again."""
    env = await start(dut)
    ap = env.aps[-1]
    ap.deschedule()
    await post(env, ap.apic_id, Command.WAKEUP.value)
    await env.cycles(env.config.no_target_timeout + 10)
    assert await env.os.read32(addr(env, "command")) == Command.WAKEUP.value
    assert not ap.wake.value and ap.state is ApState.POLL
    assert flags(env) == {"no_target"}
    ap.deschedule(False)
    assert await ap.wait_wake() == VECTOR
    assert await wait_acknowledged(env) and ap.state is ApState.OS_RUNNING


@cocotb.test(**TIMEOUT)
async def test_command_before_fields(dut):
    """An OS that stores Command before ApicId and WakeupVector (no release ordering, docs/spec/mpwk.md
    §7 #15): the request is latched with the fields as they were at the Command store (here a
    stale ApicId no AP polls for, so ``no_target``), the late stores are flagged, and the AP they
    name is not woken."""
    env = await start(dut)
    ap, other = env.aps[0], env.aps[-1]
    await post(env, ap.apic_id, Command.WAKEUP.value, vector=VECTOR)
    assert await ap.wait_wake() == VECTOR and await wait_acknowledged(env)
    # the ApicId the acknowledge left: 0 after the 8-byte clear, the running AP's after the 2-byte one
    stale_id = await env.os.read32(addr(env, "apic_id"))
    assert stale_id == (0 if env.config.ack_bytes == 8 else ap.apic_id)
    await env.os.write16(addr(env, "command"), Command.WAKEUP.value)
    await env.os.write32(addr(env, "apic_id"), other.apic_id)
    await env.os.write64(addr(env, "wakeup_vector"), 0x1234_5000)
    assert "field_changed_while_pending" in flags(env)
    await env.cycles(env.config.no_target_timeout + 10)
    assert "no_target" in flags(env), "the request was not latched with the stale ApicId"
    assert await env.os.read32(status_register(env, "LAST_APIC_ID")) == other.apic_id
    assert not other.wake.value, "the AP named by the late ApicId store was woken"


@cocotb.test(**TIMEOUT)
async def test_refused_requests(dut):
    """Unknown command, Reserved != 0 (TDVF's 32-bit compare) and the broadcast ID are flagged
    and never acknowledged (docs/spec/mpwk.md §7 #5, #6, #8)."""
    env = await start(dut)
    ap = env.aps[0]
    cases = [
        ("unknown_command", lambda: post(env, ap.apic_id, 3)),
        ("reserved_nonzero", lambda: env.os.write32(addr(env, "command"), 0x0001_0001)),
        ("broadcast_refused", lambda: post(env, APIC_ID_BROADCAST, Command.WAKEUP.value)),
    ]
    for flag, request in cases:
        if flag == "reserved_nonzero":
            await env.os.write32(addr(env, "apic_id"), ap.apic_id)
        await request()
        assert not await wait_acknowledged(env, polls=20), f"{flag}: acknowledged"
        assert flags(env) == {flag}, f"expected {flag}, got {flags(env)}"
        assert not any(a.wake.value for a in env.aps)
        await env.os.write32(addr(env, "command"), 0)
        await env.os.write32(status_register(env, "STATUS"), 0xFFFF_FFFF)


@cocotb.test(**TIMEOUT)
async def test_writes_while_pending_are_flagged_and_latched(dut):
    """ApicId/vector latch at the Command edge: rewriting them, or Command, while the request
    is pending is flagged and does not change what the AP gets (docs/spec/mpwk.md §7 #3, #4)."""
    env = await start(dut)
    ap = env.aps[1]
    await post(env, ap.apic_id, Command.WAKEUP.value, VECTOR)
    await env.os.write64(addr(env, "wakeup_vector"), 0xBAD000)
    await env.os.write16(addr(env, "command"), Command.WAKEUP.value)
    assert await ap.wait_wake() == VECTOR, "the AP took a vector written after the command"
    assert await wait_acknowledged(env)
    assert flags(env) == {"field_changed_while_pending", "command_while_busy"}


@cocotb.test(**TIMEOUT)
async def test_page_halves(dut):
    """ReservedForOs is ordinary memory for the OS; the firmware half is read-only to it
    (docs/spec/mpwk.md §7 #18) and reads 0, also where the OS half beneath it was written (the
    mailbox stores only the OS half); byte strobes select lanes."""
    env = await start(dut)
    os_area, fw_area = addr(env, "reserved_for_os"), addr(env, "reserved_for_firmware")
    await env.os.write32(os_area + 0x20, 0x1122_3344)
    await env.os.write32(os_area + 0x20, 0xAA00_0000, strobe=0b1000)
    assert await env.os.read32(os_area + 0x20) == 0xAA22_3344
    assert not flags(env)
    await env.os.write32(fw_area + 0x100, 0xDEAD_BEEF)
    assert await env.os.read32(fw_area + 0x100) == 0
    assert flags(env) == {"firmware_half_write"}
    # the OS half's word FIRMWARE_HALF below: written, read back, and the firmware half still reads 0
    await env.os.write32(fw_area - FIRMWARE_HALF + 0x100, 0x5566_7788)
    assert await env.os.read32(fw_area - FIRMWARE_HALF + 0x100) == 0x5566_7788
    assert await env.os.read32(fw_area + 0x100) == 0
