"""Base errors (CONVENTIONS.md, 4): one base per package; each protocol maps them once."""

from __future__ import annotations


class MssError(Exception):
    """Base of every error mss raises on purpose.

    ``message`` is the human text (French first, shown to users); ``code`` a stable
    machine identifier used by the SMTP/IMAP/HTTP/CLI mappers.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(MssError):
    """A setting is missing or invalid."""

    code = "config"


class NotFound(MssError):
    """The thing asked for does not exist."""

    code = "not_found"


class AuditChainBroken(MssError):
    """The audit trail's hash chain does not verify."""

    code = "audit_chain"
