"""The notice sent to a recipient's usual (non-secure) address after a local delivery.

It leaves the trust space, so it says only that a message arrived, and where to read it: a
fixed French text (and a short English one) with the webmail link, and at most the time of
arrival. Never the subject, the sender, the recipient's secure address or anything of the
content (DESIGN.md, life of a message, 7). It is marked ``Auto-Submitted: auto-generated``
(RFC 3834 §5) so that vacation responders stay quiet.

Sending goes through a ``Notifier``, the transports of ``core.mailer`` that every e-mail to a
usual address uses: ``SmtpNotifier`` hands the notice to the smarthost (``MSS_SMARTHOST``);
without one, ``SpoolNotifier`` writes it where the webmail's one-time codes go
(``DATA_DIR/spool/mail``), so that the embedded default behaves as production will. A failure
raises ``NotifyError``: the caller retries and counts it, and it never blocks or undoes the
secure delivery.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from core.errors import MssError
from core.localtime import paris
from core.mailer import SENDER_NAME, Mailer, SmtpMailer, SpoolMailer, mail_spool
from gateway.accept.protection import is_address
from gateway.errors import NotifyError

SUBJECT = "Nouveau message sécurisé"

_URL = re.compile(r"https?://[\x21-\x7e]+")


def build_notice(*, to: str, from_addr: str, webmail_url: str,
                 message_date: datetime | None = None, now: datetime | None = None) -> bytes:
    """The notice for ``to`` (the usual address), from ``from_addr`` (a no-reply address of
    the operator). ``message_date``: when the message arrived, shown in Paris time.

    Raises:
        ValueError: an address or the URL is malformed (or would inject a header field).
    """
    if not (is_address(to) and is_address(from_addr) and _URL.fullmatch(webmail_url)):
        raise ValueError("avis : adresse ou lien invalide")
    notice = EmailMessage(policy=email.policy.SMTP)
    local, domain = from_addr.rsplit("@", 1)
    notice["From"] = Address(SENDER_NAME, local, domain)
    notice["To"] = to
    notice["Subject"] = SUBJECT
    notice["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    notice["Message-ID"] = email.utils.make_msgid("avis", domain=domain)
    notice["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
    notice["X-Auto-Response-Suppress"] = "All"  # the same, for Exchange
    notice.set_content(_text(webmail_url, message_date), charset="utf-8",
                       cte="quoted-printable")
    return notice.as_bytes()


def _text(webmail_url: str, message_date: datetime | None) -> str:
    when_fr = when_en = ""
    if message_date is not None:
        local = paris(message_date)
        when_fr = f" le {local:%d/%m/%Y à %H:%M}"
        when_en = f" on {local:%Y-%m-%d at %H:%M} (Paris time)"
    return (
        "Bonjour,\n\n"
        "Vous avez reçu un nouveau message dans votre messagerie sécurisée de santé"
        f"{when_fr}.\n\nPour le lire, connectez-vous à votre messagerie :\n{webmail_url}\n\n"
        "Ce courriel n'est qu'un avis : il ne contient pas le message, qui reste dans votre "
        "messagerie sécurisée. Merci de ne pas y répondre.\n\n"
        f"(EN) You have a new message in your secure health mailbox{when_en}; sign in to "
        "read it.\n"
    )


class Notifier(Mailer, Protocol):
    """A ``core.mailer.Mailer`` for notices (CONVENTIONS.md, 3).

    ``send(to, message)`` raises ``NotifyError`` (451 4.4.1): the notice was not accepted;
    temporary, the caller retries.
    """


class _Notices:
    """What the notice transports change in ``core.mailer``'s: failures are ``NotifyError``,
    which the delivery worker records like any ``GatewayError``; they speak of a notice; the
    recipient is the plain ASCII address the notice was built for."""

    failure: type[MssError] = NotifyError
    what: tuple[str, str] = ("Avis", "notice")

    def accepts(self, to: str) -> bool:
        return is_address(to)


class SmtpNotifier(_Notices, SmtpMailer):
    """A ``Notifier`` over SMTP to the smarthost ``"host:port"`` (``core.mailer.SmtpMailer``:
    STARTTLS when offered, null envelope sender by default)."""


class SpoolNotifier(_Notices, SpoolMailer):
    """A ``Notifier`` writing notices as files (``core.mailer.SpoolMailer``): the local
    stand-in of the smarthost, for the demo and the embedded default."""


def notifier_for(smarthost: str, hostname: str, data_dir: Path) -> Notifier:
    """The smarthost when one is set, else the spool of ``data_dir``."""
    if smarthost:
        return SmtpNotifier(smarthost, local_hostname=hostname)
    return SpoolNotifier(mail_spool(data_dir))

