"""MP wakeup mailbox block tests on versions 0 and 1 and both acknowledge widths."""

from apwake.sim.vip.mpwk_mailbox.design import MailboxConfig, MailboxDesign
from apwake.sim.harness.pytest_plugin import cocotb_tests

CONFIGS = [
    MailboxConfig(version=1, ack_bytes=8, ack_latency=20),
    MailboxConfig(version=1, ack_bytes=2, ack_latency=20),
    MailboxConfig(version=0, reset_vector=0, ack_latency=20, apic_ids=(4, 9, 17, 200)),
]

test_mailbox = cocotb_tests("cocotb_tests.mpwk_mailbox.tb_mailbox", CONFIGS, design=MailboxDesign, jitter=True)
