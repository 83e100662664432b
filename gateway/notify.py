"""The notice sent to a recipient's usual (non-secure) address after a local delivery.

It leaves the trust space, so it says only that a message arrived, and where to read it: a
fixed French text (and a short English one) with the webmail link, and at most the time of
arrival. Never the subject, the sender, the recipient's secure address or anything of the
content (DESIGN.md, life of a message, 7). It is marked ``Auto-Submitted: auto-generated``
(RFC 3834 §5) so that vacation responders stay quiet.

Sending goes through a ``Notifier``; ``SmtpNotifier`` hands the notice to the smarthost
(``MSS_SMARTHOST``); without one, ``SpoolNotifier`` writes it where the webmail's one-time
codes go (``core.spool``, ``DATA_DIR/spool/mail``), so that the embedded default behaves as
production will. A failure raises ``NotifyError``: the caller retries and counts it, and it
never blocks or undoes the secure delivery.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from core.localtime import paris
from core.spool import FileSpool, mail_spool
from gateway.errors import NotifyError
from gateway.security import is_address

SUBJECT = "Nouveau message sécurisé"
TIMEOUT = 10.0  # seconds, per socket operation
SENDER_NAME = "Messagerie sécurisée de santé"

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


class Notifier(Protocol):
    """Hands a notice to a transport (CONVENTIONS.md, 3)."""

    def send(self, to: str, message: bytes) -> None:
        """Send ``message`` (from ``build_notice``) to ``to``.

        Raises:
            NotifyError: the notice was not accepted; temporary, the caller retries.
        """
        ...


class SmtpNotifier:
    """A ``Notifier`` over SMTP to the smarthost ``"host:port"`` (``Settings.smarthost``).

    STARTTLS whenever the smarthost offers it (certificate checked with ``ssl_context``,
    default: the system's CAs); ``require_tls`` refuses to send in the clear. The envelope
    sender is ``envelope_from``, by default null (``MAIL FROM:<>``, RFC 5321 §4.5.5) so a
    bounce of a notice cannot loop back.
    """

    def __init__(self, smarthost: str, *, envelope_from: str = "", timeout: float = TIMEOUT,
                 local_hostname: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 require_tls: bool = False) -> None:
        host, _, port = smarthost.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("smarthost : « hôte:port » attendu")
        self.host, self.port = host.strip("[]"), int(port)
        self.envelope_from = envelope_from
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self.require_tls = require_tls

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.host}:{self.port})"

    def send(self, to: str, message: bytes) -> None:
        """Send one notice (see ``Notifier.send``)."""
        if not is_address(to):  # smtplib would raise ValueError on a CR LF: one error type
            raise NotifyError("Adresse de notification invalide / invalid notice address",
                              code="notify_address")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                              local_hostname=self.local_hostname) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                elif self.require_tls:
                    raise NotifyError(f"Relais {self.host}:{self.port} sans STARTTLS / "
                                      "smarthost offers no STARTTLS")
                smtp.sendmail(self.envelope_from, [to], message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(
                f"Avis non transmis au relais {self.host}:{self.port} "
                f"({_describe(exc)}) / notice not handed to the smarthost") from exc


class SpoolNotifier:
    """A ``Notifier`` writing notices as files (``core.spool.FileSpool``): the local
    stand-in of the smarthost, for the demo and the embedded default."""

    def __init__(self, spool: Path) -> None:
        self.files = FileSpool(spool)

    def __repr__(self) -> str:
        return f"SpoolNotifier({self.files.spool})"

    def send(self, to: str, message: bytes) -> None:
        """Write one notice (see ``Notifier.send``)."""
        if not is_address(to):
            raise NotifyError("Adresse de notification invalide / invalid notice address",
                              code="notify_address")
        try:
            self.files.send(to, message)
        except OSError as exc:
            raise NotifyError(f"Avis non écrit dans le spool ({type(exc).__name__}) / notice "
                              "not written to the spool") from exc


def notifier_for(smarthost: str, hostname: str, data_dir: Path) -> Notifier:
    """The smarthost when one is set, else the spool of ``data_dir``."""
    if smarthost:
        return SmtpNotifier(smarthost, local_hostname=hostname)
    return SpoolNotifier(mail_spool(data_dir))


def _describe(exc: Exception) -> str:
    """The error class and SMTP code: never the message, whose text the server may echo."""
    code = getattr(exc, "smtp_code", None)
    if code is None and isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0]
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
