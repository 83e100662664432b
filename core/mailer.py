"""E-mails to a person's usual (non-secure) address, and the one way they leave: the gateway's
notices of new messages, the webmail's one-time codes and registration news, the decisions
``mss registration`` mails. They leave the trust space: no patient data, ever.

Sending goes through a ``Mailer`` (CONVENTIONS.md, 3). ``SmtpMailer`` hands the message to the
smarthost (``MSS_SMARTHOST``); without one, ``SpoolMailer`` writes it as a file,
``DATA_DIR/spool/mail/<time>-<random>.eml`` (mode 0600), where the demo and the tests read
it, so that nothing that would go out in production fails silently on the embedded default.
``outbound_mailer`` picks one for the settings. A failure raises ``MailNotSent`` (the gateway's
notice transports raise its ``NotifyError`` instead: ``gateway.deliver.notify``).
"""

from __future__ import annotations

import email.policy
import email.utils
import os
import re
import secrets
import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from core.errors import MssError
from core.settings import Settings

SENDER_NAME = "Messagerie sécurisée de santé"
SIGNATURE = ("\n\nCe courriel est envoyé automatiquement par votre messagerie sécurisée de santé ; "
             "merci de ne pas y répondre.\n")
TIMEOUT = 10.0  # seconds, per socket operation

# What an envelope recipient may hold here: one "@" between two parts without white space,
# control characters, angle brackets (the Path of RFC 5321 §4.1.2 ends at ">") or the
# characters of comments, quoting and lists that smtplib's quoting (``email.utils.parseaddr``)
# would read as syntax and rewrite: the guard that keeps the envelope what the caller asked.
# The address grammar itself is the callers' (the webmail's forms, the notice's builder).
_RECIPIENT = re.compile(r'[^\x00-\x20\x7f@<>()\[\]\\,;:"]+@[^\x00-\x20\x7f@<>()\[\]\\,;:"]+')


class MailNotSent(MssError):
    """The message was not accepted by the transport (temporary: the caller retries, or tells
    the person to)."""

    code = "mail_not_sent"


class Mailer(Protocol):
    """Hands an e-mail to a transport."""

    def send(self, to: str, message: bytes) -> None:
        """Send ``message`` (RFC 5322 bytes) to ``to``.

        Raises:
            MailNotSent: the message was not accepted (or the transport's own subclass of
                ``MssError``, see ``SmtpMailer.failure``).
        """
        ...


class _Transport:
    """What both transports share: the error their failures raise, how those name what was
    not sent (French, English), and the recipient check; ``gateway.deliver.notify`` overrides all
    three for its notices."""

    failure: type[MssError] = MailNotSent
    what: tuple[str, str] = ("Courriel", "message")

    def accepts(self, to: str) -> bool:
        """Whether ``to`` may be written into the envelope (``_RECIPIENT``)."""
        return bool(_RECIPIENT.fullmatch(to))

    def _check(self, to: str) -> None:
        if not self.accepts(to):  # smtplib would raise ValueError on a CR LF: one error type
            raise self.failure("Adresse du destinataire invalide / invalid recipient address",
                               code=f"{self.failure.code}_address")


class SmtpMailer(_Transport):
    """A ``Mailer`` over SMTP to the smarthost ``"host:port"`` (``Settings.smarthost``).

    STARTTLS whenever the smarthost offers it (certificate checked with ``ssl_context``,
    default: the system's CAs); ``require_tls`` refuses to send in the clear. The envelope
    sender is ``envelope_from``, by default null (``MAIL FROM:<>``, RFC 5321 §4.5.5) so a
    bounce of an automatic message cannot loop back.
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
        return f"{type(self).__name__}({self.host}:{self.port})"

    def send(self, to: str, message: bytes) -> None:
        """Send one message (see ``Mailer.send``)."""
        self._check(to)
        fr, en = self.what
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                              local_hostname=self.local_hostname) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                elif self.require_tls:
                    raise self.failure(f"Relais {self.host}:{self.port} sans STARTTLS / "
                                       "smarthost offers no STARTTLS")
                smtp.sendmail(self.envelope_from, [to], message)
        except (OSError, smtplib.SMTPException, UnicodeEncodeError) as exc:
            # UnicodeEncodeError: a non-ASCII address, which smtplib cannot write without
            # SMTPUTF8 (RFC 6531); the gateway's notices never get here (ASCII only).
            raise self.failure(
                f"{fr} non transmis au relais {self.host}:{self.port} "
                f"({_describe(exc)}) / {en} not handed to the smarthost") from exc


class SpoolMailer(_Transport):
    """A ``Mailer`` writing each message to its own file in ``spool`` (created on first use):
    the local stand-in of the smarthost, for the demo and the embedded default."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spool})"

    def send(self, to: str, message: bytes) -> None:
        """Write ``message`` (see ``Mailer.send``); ``to`` is in the message itself.

        Raises:
            MailNotSent: the spool cannot be written (disk full, permissions).
        """
        self._check(to)
        fr, en = self.what
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}.eml"
            fd = os.open(self.spool / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(message)
        except OSError as exc:
            raise self.failure(f"{fr} non écrit dans le spool ({type(exc).__name__}) / {en} "
                               "not written to the spool") from exc


def mail_spool(data_dir: Path) -> Path:
    """Where ``SpoolMailer`` writes for the data directory ``data_dir``."""
    return data_dir / "spool" / "mail"


def outbound_mailer(settings: Settings) -> Mailer:
    """The smarthost when ``MSS_SMARTHOST`` is set, else the spool of the data directory."""
    if settings.smarthost:
        return SmtpMailer(settings.smarthost, local_hostname=settings.hostname)
    return SpoolMailer(mail_spool(settings.data_dir))


def build_mail(*, to: str, sender: str, subject: str, text: str) -> bytes:
    """A plain-text UTF-8 message, marked auto-generated (RFC 3834 §5)."""
    message = EmailMessage(policy=email.policy.SMTP)
    local, _, domain = sender.rpartition("@")
    message["From"] = Address(SENDER_NAME, local, domain)
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = email.utils.make_msgid("mss", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


def _describe(exc: Exception) -> str:
    """The error class and SMTP code: never the message, whose text the server may echo."""
    code = getattr(exc, "smtp_code", None)
    if code is None and isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0]
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
