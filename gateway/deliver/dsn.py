"""Delivery status notifications (RFC 3464) to the sender of a message that could not be
delivered, or not yet.

A DSN is a ``multipart/report; report-type=delivery-status`` (RFC 6522) of three parts:

1. a human text in French (Paris time), listing each recipient with the remote reply,
   then one English line for foreign software;
2. ``message/delivery-status``: the per-message fields (``Reporting-MTA``, ``Arrival-Date``)
   then, per recipient, ``Final-Recipient``, ``Action``, ``Status``, ``Remote-MTA`` (when
   known) and ``Diagnostic-Code``;
3. the original's header section only, as ``text/rfc822-headers``: never its body, which holds
   medical data (``RET=FULL`` is not honoured).

The same building blocks serve the MDNs of ``gateway.deliver.mdn``.
"""

from __future__ import annotations

import email.header
import email.utils
import quopri
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.localtime import french_datetime
from gateway.accept.protection import is_address
from gateway.errors import ascii_text
from mailformat.headers import Head, split_head
from mailformat.replies import is_enhanced

ACTIONS = {"failed": "5", "delayed": "4", "delivered": "2", "relayed": "2", "expanded": "2"}
MAX_DIAGNOSTIC = 300

_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Failure:
    """One recipient the report is about."""

    recipient: str
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    diagnostic: str  # the remote (SMTP/LMTP) reply; made one ASCII line here
    action: str = "failed"  # or "delayed"
    remote_mta: str | None = None  # host name of the peer relay that replied, when known


def build_dsn(*, original: bytes, envelope_from: str, failures: Sequence[Failure],
              reporting_mta: str, queue_id: str, arrival: datetime,
              return_content: str = "headers", from_domain: str | None = None,
              now: datetime | None = None) -> bytes:
    """The DSN for ``failures`` of ``original`` (queued as ``queue_id``), addressed to
    ``envelope_from``, the original's envelope sender.

    The caller MUST send it with a null envelope sender, ``MAIL FROM:<>`` (RFC 5321 §4.5.5,
    RFC 3464 §2): nobody reports on a report. Never build one for a message whose own
    envelope sender was null. ``From`` is ``MAILER-DAEMON@`` ``from_domain`` (default
    ``reporting_mta``). ``return_content``: ``"headers"`` or ``"none"``.

    Raises:
        ValueError: no failures, a null or malformed ``envelope_from``, an action or status
            RFC 3464 does not allow, or ``return_content="full"``.
    """
    if return_content not in ("headers", "none"):
        raise ValueError("return_content : « headers » ou « none » (jamais le corps)")
    domain = from_domain or reporting_mta
    if not (is_address(envelope_from, ascii_only=False) and _HOST.fullmatch(domain)
            and _HOST.fullmatch(reporting_mta) and failures):
        raise ValueError("DSN : expéditeur, MTA ou échecs invalides")
    for failure in failures:
        _check(failure)
    failed = any(f.action == "failed" for f in failures)
    subject = ("Échec de remise / Delivery failure" if failed
               else "Remise retardée / Delivery delayed")
    headers = [("From", f"MAILER-DAEMON@{domain}"),
               ("To", envelope_from), ("Subject", encode_header(subject)),
               *envelope_headers(original, reporting_mta, now)]
    parts = [text_part(_human_text(failures, reporting_mta, ascii_text(queue_id), arrival)),
             _status_part(failures, reporting_mta, arrival)]
    if return_content == "headers":
        parts.append(headers_part(original))
    return report_message(headers, "delivery-status", parts)


def _check(failure: Failure) -> None:
    expected = ACTIONS.get(failure.action)
    if expected is None or not is_enhanced(failure.status) or failure.status[0] != expected:
        raise ValueError(f"DSN : action « {failure.action} » et statut « {failure.status} » "
                         "incompatibles (RFC 3464 §2.3.3)")


def _human_text(failures: Sequence[Failure], reporting_mta: str, queue_id: str,
                arrival: datetime) -> str:
    """French, with the time the message was taken in charge in Paris time, then one English
    line for foreign software (the details are in the machine-readable part)."""
    failed = [f for f in failures if f.action == "failed"]
    delayed = [f for f in failures if f.action == "delayed"]
    french = [f"Votre message du {french_datetime(arrival)} n'a pas encore été remis à tous "
              "ses destinataires." if not failed else
              f"Votre message du {french_datetime(arrival)} n'a pas pu être remis à tous "
              "ses destinataires.", ""]
    if failed:
        french += ["Remise impossible (échec définitif) :", *_lines(failed), ""]
    if delayed:
        french += ["Remise retardée ; de nouvelles tentatives auront lieu, vous serez prévenu "
                   "en cas d'échec définitif :", *_lines(delayed), ""]
    french += [f"Référence du message : {queue_id}. Les en-têtes du message d'origine sont "
               "joints ; son contenu n'est pas renvoyé.",
               f"Message automatique de la messagerie sécurisée de santé ({reporting_mta}).", ""]
    english = (("Your message could not be delivered to every recipient" if failed else
                "Delivery of your message is delayed") +
               f"; details in the delivery-status part ({reporting_mta}).")
    return "\n".join([*french, english, ""])


def _lines(failures: Sequence[Failure]) -> list[str]:
    return [f"  {ascii_text(f.recipient)} : {f.status} {diagnostic(f.diagnostic)}".rstrip()
            for f in failures]


def _status_part(failures: Sequence[Failure], reporting_mta: str, arrival: datetime) -> bytes:
    blocks = [[f"Reporting-MTA: dns; {reporting_mta}",
               f"Arrival-Date: {format_date(arrival)}"]]
    for failure in failures:
        kind, address = address_field(failure.recipient)
        block = [f"Final-Recipient: {kind}; {address}", f"Action: {failure.action}",
                 f"Status: {failure.status}"]
        if failure.remote_mta and _HOST.fullmatch(failure.remote_mta):
            block.append(f"Remote-MTA: dns; {failure.remote_mta}")
        if diagnostic(failure.diagnostic):
            block.append(f"Diagnostic-Code: smtp; {diagnostic(failure.diagnostic)}")
        blocks.append(block)
    body = "\r\n\r\n".join("\r\n".join(block) for block in blocks) + "\r\n"
    # RFC 6533 §6.1: UTF-8 addresses need the global variant.
    ctype = "message/delivery-status" if body.isascii() else "message/global-delivery-status"
    return f"Content-Type: {ctype}\r\n\r\n{body}".encode()


# ---------------------------------------------------------------------- shared blocks
def diagnostic(text: str) -> str:
    """A remote reply as one printable ASCII line, clipped (RFC 3464 §2.3.6)."""
    return ascii_text(text)[:MAX_DIAGNOSTIC]


def address_field(address: str) -> tuple[str, str]:
    """Address type and value for Final-/Original-Recipient: ``rfc822`` for ASCII, ``utf-8``
    (RFC 6533 §3) otherwise; control characters and white space removed."""
    clean = "".join(c for c in address if c.isprintable() and not c.isspace())
    return ("rfc822", clean) if clean.isascii() else ("utf-8", clean)


def format_date(when: datetime) -> str:
    """An RFC 5322 §3.3 date; a naive datetime is taken as UTC."""
    return email.utils.format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))


def encode_header(text: str) -> str:
    """``text`` as RFC 2047 encoded-words when it is not ASCII."""
    return text if text.isascii() else email.header.Header(text, "utf-8").encode(linesep="\r\n")


def message_id_of(original: bytes) -> str | None:
    """The original's Message-ID if there is exactly one and it is well formed."""
    ids = Head.of(original).values("message-id")
    return ids[0] if len(ids) == 1 and _MESSAGE_ID.fullmatch(ids[0]) else None


def envelope_headers(original: bytes, domain: str,
                     now: datetime | None = None) -> list[tuple[str, str]]:
    """Date, Message-ID, the threading fields towards the original, and ``Auto-Submitted:
    auto-replied`` (RFC 3834 §5: no automatic answer to it)."""
    headers = [("Date", format_date(now or datetime.now(UTC))),
               ("Message-ID", email.utils.make_msgid("mss", domain=domain))]
    original_id = message_id_of(original)
    if original_id:
        headers += [("In-Reply-To", original_id), ("References", original_id)]
    return [*headers, ("Auto-Submitted", "auto-replied")]


def text_part(text: str) -> bytes:
    """A UTF-8 text/plain part, quoted-printable (7-bit safe)."""
    body = quopri.encodestring(text.encode("utf-8")).replace(b"\r\n", b"\n")
    return (b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + body.replace(b"\n", b"\r\n"))


def headers_part(original: bytes) -> bytes:
    """The original's header section as ``text/rfc822-headers`` (RFC 6522 §4), or
    ``message/global-headers`` (RFC 6533 §3.6) if it holds raw UTF-8."""
    head = split_head(original)[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    ctype = b"text/rfc822-headers" if head.isascii() else b"message/global-headers"
    return b"Content-Type: " + ctype + b"\r\n\r\n" + head


def report_message(headers: Sequence[tuple[str, str]], report_type: str,
                   parts: Sequence[bytes]) -> bytes:
    """A ``multipart/report`` (RFC 6522) of ``parts`` (each a MIME entity, CRLF)."""
    boundary = "mss-report-" + secrets.token_hex(12)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += ("MIME-Version: 1.0\r\n"
             f'Content-Type: multipart/report; report-type={report_type};\r\n'
             f' boundary="{boundary}"\r\n\r\n')
    # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it, hence the one after a part.
    delimiter = f"--{boundary}\r\n".encode()
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    return (head.encode("utf-8") + b"This is a MIME-encapsulated report.\r\n\r\n" + body
            + f"--{boundary}--\r\n".encode())
