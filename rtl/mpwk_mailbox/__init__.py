"""The ACPI MADT multiprocessor wakeup mailbox (``../shared/spec/mpwk.md``)."""

from .mailbox import ApPortSignature, MpwkMailbox

__all__ = ["MpwkMailbox", "ApPortSignature"]
