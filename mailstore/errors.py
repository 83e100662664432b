"""Errors of the mail store (CONVENTIONS.md, 4): one base, each knowing its SMTP-style reply.

The gateway maps a delivery error to the reply it gives (or to a DSN) in one place, reading
``smtp_code`` / ``enhanced`` for the machine side and ``message`` for the human side.
"""

from __future__ import annotations

from core.errors import MssError


class MailstoreError(MssError):
    """Base of every error raised on purpose by ``mailstore``."""

    code = "mailstore"
    smtp_code = 451
    enhanced = "4.3.0"
    permanent = False


class DovecotUnavailable(MailstoreError):
    """Dovecot is missing, cannot start, or does not answer."""

    code = "dovecot_unavailable"


class DeliveryError(MailstoreError):
    """A delivery to one recipient failed; ``reply`` is what the LMTP server said."""

    code = "delivery_failed"

    def __init__(self, message: str, *, smtp_code: int | None = None,
                 enhanced: str | None = None, reply: str = "") -> None:
        super().__init__(message)
        if smtp_code is not None:
            self.smtp_code = smtp_code
            self.permanent = 500 <= smtp_code < 600
        if enhanced is not None:
            self.enhanced = enhanced
        self.reply = reply


class UnknownMailbox(DeliveryError):
    """No such mailbox in the store (LMTP 550 5.1.1)."""

    code = "unknown_mailbox"
    smtp_code = 550
    enhanced = "5.1.1"
    permanent = True


class OverQuota(DeliveryError):
    """The mailbox is full (552 5.2.2, permanent) or temporarily over quota (452 4.2.2)."""

    code = "over_quota"
    smtp_code = 552
    enhanced = "5.2.2"
    permanent = True


class TemporaryFailure(DeliveryError):
    """Try again later: 4xx reply, Dovecot not reachable, connection lost."""

    code = "temporary_failure"
    smtp_code = 451
    enhanced = "4.3.0"
    permanent = False


class PermanentFailure(DeliveryError):
    """Any other 5xx reply from the store."""

    code = "permanent_failure"
    smtp_code = 554
    enhanced = "5.3.0"
    permanent = True


class ImapError(MailstoreError):
    """An IMAP command of the webmail client layer failed (``message`` says which)."""

    code = "imap"


class ImapAuthFailed(ImapError):
    """The store refused the login (wrong master secret, account locked or suspended…)."""

    code = "imap_auth"


class MailboxNotFound(ImapError):
    """No folder, or no message, with that name or UID."""

    code = "imap_not_found"
