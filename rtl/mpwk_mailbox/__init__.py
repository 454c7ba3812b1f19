"""The ACPI MADT multiprocessor wakeup mailbox (``docs/spec/mpwk.md``)."""

from .mailbox import ApPortSignature, MpwkMailbox

__all__ = ["MpwkMailbox", "ApPortSignature"]
