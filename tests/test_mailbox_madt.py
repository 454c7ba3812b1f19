"""MADT multiprocessor-wakeup entries from the mailbox's configuration, parsed as Linux does
(docs/spec/mpwk.md §1, §4, §7 #9, #11, #12, #17); mailbox parameter errors."""

import gc
import warnings

import pytest

from apwake.rtl.mpwk_mailbox import MpwkMailbox
from apwake.sim.models.madt import MadtError, parse_mp_wake

LAPIC_ENTRY = bytes([0x00, 8, 0, 1, 1, 0, 0, 0])        # a local APIC structure before it


@pytest.fixture(autouse=True)
def _rejected_objects_are_not_unused():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*created but never used")
        yield
        gc.collect()


def mailbox(**kwargs):
    m = MpwkMailbox(**{"base": 0x7FFF_D000, "apic_ids": [1, 2], **kwargs})
    return m


def test_version1_entry_round_trips():
    entry = mailbox(version=1, reset_vector=0x7FFF_E068).madt_entry()
    assert len(entry) == 24 and entry[:2] == bytes([0x10, 24])
    parsed = parse_mp_wake(LAPIC_ENTRY + entry)
    assert (parsed.version, parsed.mailbox_address, parsed.reset_vector) == (1, 0x7FFF_D000, 0x7FFF_E068)
    assert parsed.can_reset


def test_version0_entry_is_single_use():
    entry = mailbox(version=0).madt_entry()
    assert len(entry) == 16
    parsed = parse_mp_wake(entry)
    assert parsed.version == 0 and parsed.reset_vector is None and not parsed.can_reset


def test_linux_checks_version_and_length_together():
    v1 = mailbox(version=1, reset_vector=0x1000).madt_entry()
    short = bytes([0x10, 16]) + v1[2:16]                  # claims version 1, 16 bytes long
    assert not parse_mp_wake(short).can_reset
    zero_reset = v1[:16] + bytes(8)                       # version 1, ResetVector 0 (§7 #11)
    assert not parse_mp_wake(zero_reset).can_reset
    with pytest.raises(MadtError, match="at least 16 bytes"):
        parse_mp_wake(bytes([0x10, 12]) + bytes(10))
    second = mailbox(version=0, base=0x1000).madt_entry()
    assert parse_mp_wake(v1 + second).mailbox_address == 0x7FFF_D000, "only the first entry counts"
    assert parse_mp_wake(LAPIC_ENTRY) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(base=0x7FFF_D800), r"base must be a non-zero 4 KiB-aligned address"),
    (dict(base=0), r"base must be a non-zero"),
    (dict(apic_ids=[1, 1]), r"apic_ids repeat an ID"),
    (dict(apic_ids=[0xFFFF_FFFE]), r"apic_ids\[0\] = 4294967294 is not a usable x2APIC ID"),
    (dict(version=2), r"version must be 0 or 1, not 2"),
    (dict(version=1, reset_vector=0), r"needs a non-zero reset_vector"),
    (dict(version=0, ack_bytes=4), r"ack_bytes must be 8 \(TDVF\) or 2, not 4"),
    (dict(version=0, ack_clears="apic_id"),
     r"ack_clears must be 'command' or 'wakeup_vector' \(the edk2 bug\), not 'apic_id'"),
    (dict(version=0, apic_ids=range(4096)), r"apic_ids must list 0 to 4095 APs, not 4096"),
    (dict(version=0, no_target_timeout=0), r"no_target_timeout must be 1 to"),
    (dict(version=0, status_base=0x7FFF_D100), r"status_base must be 16-byte aligned outside the page"),
])
def test_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mailbox(**kwargs)
