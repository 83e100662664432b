"""Message disposition notifications (RFC 8098): the "processed" receipt a sender asks for
with ``Disposition-Notification-To``, sent after local delivery.

A request is honoured only when it is unambiguous (RFC 8098 §2.1, §6): one field, one
well-formed address, equal to the envelope sender (``Return-Path``) when that is known, no
``required`` option we do not understand (§2.2), and never for a report (DSN or MDN) — no
receipt loops. Anything else is ignored silently: a malformed request is not an error.

Direct's "timely and reliable" option (Implementation Guide for Delivery Notification in
Direct 1.0), ``Disposition-Notification-Options:
X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true``, is read by ``wants_final_delivery``; the
MDN answering it carries the extension field ``X-DIRECT-FINAL-DESTINATION-DELIVERY:``
(``build_mdn(final_delivery=True)``), normally with the ``dispatched`` disposition.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from datetime import datetime

from core.localtime import french_datetime
from gateway.accept.protection import content_type, is_address
from gateway.deliver.dsn import (
    address_field,
    encode_header,
    envelope_headers,
    headers_part,
    message_id_of,
    report_message,
    text_part,
)
from gateway.errors import ascii_text
from mailformat.headers import Head, field_name, field_value

DIRECT_FINAL_DELIVERY = "X-DIRECT-FINAL-DESTINATION-DELIVERY"
PROCESSED = "automatic-action/MDN-sent-automatically; processed"
DISPATCHED = "automatic-action/MDN-sent-automatically; dispatched"

_MAILBOX = re.compile(r'(?:(?:"(?:[^"\\\r\n]|\\.)*"|[^<>"@,;:\\()]*?)\s*<(?P<angle>[^<>\s]+)>'
                      r"|(?P<bare>[^<>\s,;\"()]+))")
_DISPOSITION = re.compile(  # RFC 8098 §3.2.6
    r"(manual-action|automatic-action)/(MDN-sent-manually|MDN-sent-automatically);\s*"
    r"(displayed|deleted|dispatched|processed)(/error)?", re.IGNORECASE)
_UA = re.compile(r"[\x21-\x3a\x3c-\x7e]+(?:; ?[\x20-\x7e]+)?")  # ua-name [";" ua-product]
_UNDERSTOOD = {DIRECT_FINAL_DELIVERY.lower()}
_REPORT_TYPES = ("multipart/report", "message/delivery-status", "message/disposition-notification",
                 "message/global-delivery-status", "message/global-disposition-notification")
_TEXTS = {  # what each disposition type says, French then English (RFC 8098 §3.2.6.2)
    "processed": ("a été reçu et traité par le serveur de messagerie du destinataire ; "
                  "cela ne signifie pas qu'il a été lu.",
                  "was received and processed by the recipient's mail server; this does not "
                  "mean it was read."),
    "dispatched": ("a été remis dans la boîte aux lettres du destinataire ; cela ne signifie "
                   "pas qu'il a été lu.",
                   "was delivered to the recipient's mailbox; this does not mean it was read."),
    "displayed": ("a été affiché au destinataire.", "was displayed to the recipient."),
    "deleted": ("a été supprimé sans être lu.", "was deleted without being read."),
}


def is_report(raw: bytes) -> bool:
    """True for a DSN, an MDN or any other ``multipart/report`` (RFC 6522): never answered
    with an MDN (RFC 8098 §2.1, loop safety)."""
    return content_type(raw).get_content_type() in _REPORT_TYPES


def mdn_request(raw: bytes, *, return_path: str | None = None) -> str | None:
    """The address to send the MDN to, or None: no request, a malformed or ambiguous one,
    one for another address than the envelope sender (``return_path``, else the message's
    ``Return-Path``; a null one means no MDN), an option we cannot honour, or a report."""
    fields = _fields(raw)
    requests = [field_value(f) for f in fields if field_name(f) == "disposition-notification-to"]
    if len(requests) != 1 or is_report(raw) or not _options_acceptable(fields):
        return None
    address = _single_address(requests[0])
    if address is None:
        return None
    if return_path is None:
        paths = [field_value(f) for f in fields if field_name(f) == "return-path"]
        return_path = email.utils.parseaddr(paths[0])[1] if len(paths) == 1 else None
    if return_path is not None and return_path.lower() != address.lower():
        return None  # RFC 8098 §2.1: differs from Return-Path (or null): not automatically
    return address


def _single_address(value: str) -> str | None:
    """The address of a field holding exactly one mailbox (RFC 5322 §3.4: ``addr-spec`` or
    ``[display-name] <addr-spec>``), else None. Stricter than ``email.utils.getaddresses``,
    which reads ``<a@b`` as an address."""
    found = _MAILBOX.fullmatch(value.strip())
    if found is None:
        return None
    address = found.group("angle") or found.group("bare")
    return address if is_address(address) else None


def wants_final_delivery(raw: bytes) -> bool:
    """True when the sender asked for Direct's final-destination delivery notification."""
    return any(name == DIRECT_FINAL_DELIVERY.lower() and "true" in values
               for name, _, values in _options(_fields(raw)))


def _fields(raw: bytes) -> tuple[bytes, ...]:
    return Head.of(raw).fields


def _options(fields: Sequence[bytes]) -> list[tuple[str, str, list[str]]]:
    """``Disposition-Notification-Options`` parameters (RFC 8098 §2.2) as (attribute,
    importance, values), lower case; malformed parameters left out."""
    found = []
    for field in fields:
        if field_name(field) != "disposition-notification-options":
            continue
        for parameter in field_value(field).split(";"):
            attribute, _, rest = parameter.partition("=")
            importance, *values = [v.strip().lower() for v in rest.split(",")]
            if attribute.strip() and importance in ("required", "optional") and values:
                found.append((attribute.strip().lower(), importance, values))
    return found


def _options_acceptable(fields: Sequence[bytes]) -> bool:
    # RFC 8098 §2.2: a "required" parameter we do not understand forbids a normal MDN.
    return all(importance != "required" or name in _UNDERSTOOD
               for name, importance, _ in _options(fields))


def build_mdn(*, original: bytes, final_recipient: str, reporting_ua: str,
              disposition: str = PROCESSED, from_addr: str,
              return_path: str | None = None, original_recipient: str | None = None,
              final_delivery: bool = False, include_headers: bool = True,
              now: datetime | None = None) -> bytes:
    """The MDN for ``original`` delivered to ``final_recipient``, addressed to its
    ``mdn_request`` address and sent from ``from_addr`` (the recipient's mailbox).

    The caller MUST send it with a null envelope sender, ``MAIL FROM:<>`` (RFC 8098 §3).
    ``reporting_ua``: ``"host; product"`` (§3.2.1). ``final_delivery``: add Direct's
    ``X-DIRECT-FINAL-DESTINATION-DELIVERY`` field. The third part holds the original's
    header fields only, never its content.

    Raises:
        ValueError: the original does not ask for an MDN (``mdn_request`` is None), or an
            invalid disposition, reporting UA or address.
    """
    to = mdn_request(original, return_path=return_path)
    if to is None:
        raise ValueError("pas de demande d'accusé de réception valable dans ce message")
    valid = _DISPOSITION.fullmatch(disposition)
    if not (valid and _UA.fullmatch(reporting_ua) and is_address(from_addr)):
        raise ValueError("MDN : disposition, Reporting-UA ou expéditeur invalide")
    kind = valid.group(3).lower()
    domain = from_addr.rsplit("@", 1)[1]
    headers = [("From", from_addr), ("To", to),
               ("Subject", encode_header("Accusé de réception / Disposition notification")),
               *envelope_headers(original, domain, now)]
    parts = [text_part(_human_text(original, final_recipient, kind)),
             _notification_part(original, final_recipient, reporting_ua, disposition,
                                original_recipient, final_delivery)]
    if include_headers:
        parts.append(headers_part(original))
    return report_message(headers, "disposition-notification", parts)


def _human_text(original: bytes, final_recipient: str, kind: str) -> str:
    """French, with the original's date in Paris time when it reads, then one English line
    for foreign software."""
    dates = Head.of(original).values("date")
    when = ""
    if len(dates) == 1:
        try:
            when = f" le {french_datetime(email.utils.parsedate_to_datetime(dates[0]))}"
        except (TypeError, ValueError):
            when = ""
    recipient = ascii_text(final_recipient)
    french, english = _TEXTS[kind]
    return (f"Accusé de réception.\n\nVotre message envoyé{when} à {recipient} {french}\n\n"
            f"Disposition notification: the message sent to {recipient} {english}\n")


def _notification_part(original: bytes, final_recipient: str, reporting_ua: str,
                       disposition: str, original_recipient: str | None,
                       final_delivery: bool) -> bytes:
    lines = [f"Reporting-UA: {reporting_ua}"]
    if original_recipient:
        lines.append("Original-Recipient: {}; {}".format(*address_field(original_recipient)))
    lines.append("Final-Recipient: {}; {}".format(*address_field(final_recipient)))
    original_id = message_id_of(original)
    if original_id:
        lines.append(f"Original-Message-ID: {original_id}")
    lines.append(f"Disposition: {disposition}")
    if final_delivery:
        lines.append(f"{DIRECT_FINAL_DELIVERY}:")
    body = "\r\n".join(lines) + "\r\n"
    ctype = ("message/disposition-notification" if body.isascii()  # RFC 6533 §3
             else "message/global-disposition-notification")
    return f"Content-Type: {ctype}\r\n\r\n{body}".encode()
