"""The relay policy's checks: small functions over plain data and the caller's session
(CONVENTIONS.md, 5). Each returns what the next step needs or raises a ``GatewayError`` that
already knows its SMTP reply. The SMTP handler (``gateway.smtp.handlers``) calls the envelope
checks at the earliest honest moment (CONVENTIONS.md, 2); the content checks are steps of
``gateway.accept.steps``, which names their order:

====================  ==========================================================  ===========
check                 what                                                        refusal
====================  ==========================================================  ===========
``check_sender``      the authenticated identity may send as MAIL FROM            550 5.7.1
``check_peer``        relay: the peer certificate's DN is the whitelist entry     550 5.7.1
                      of the MAIL FROM domain
``route_recipient``   RCPT in the trust space (local published, or whitelisted    550 5.7.1
                      peer domain; relay: local only)
``check_count``       at most ``max_recipients``                                  452 4.5.3
``check_size``        at most ``max_message_size`` (SIZE is also advertised)      552 5.3.4
``rates.RateLimit``   messages per identity per minute (shared, in the database)  451 4.7.1
``check_loop``        Received fields ≤ ``max_received`` (RFC 5321 §6.3)          554 5.4.6
``check_from``        the From: mailboxes may be used by the identity             550 5.7.1
``check_end_to_end``  a message protected by the client: well-formed CMS, an      554 5.7.5
                      envelope addressed to every recipient's certificate
``message_key``       the Message-ID (added when missing), the de-duplication key  —
``dated``             submission: a Date field when the client gave none             —
``trace``             a Received field with the TLS parameters, no content        —
====================  ==========================================================  ===========

Signing and encrypting (``gateway.accept.forms.secure``, 554 5.7.5) is the step between
``check_from`` and ``trace``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from email.utils import formatdate, getaddresses

from cryptography import x509

from certs import cms_check
from certs.errors import MalformedSmime
from core.db import Executor
from gateway.errors import (
    EndToEndRefused,
    LoopDetected,
    MessageTooBig,
    RecipientRefused,
    SenderRefused,
    TooManyRecipients,
)
from mailformat.headers import Head, Message, same_form
from spool.models import RecipientKind
from trust_space.policy import (
    Identity,
    mailbox_certificate,
    may_receive,
    may_send_as,
    peer_may_send,
)

_ANGLE = re.compile(r"<([^<>\s]{1,240})>")


@dataclass(frozen=True)
class Route:
    """Where one accepted recipient goes: ``kind`` LOCAL or PEER (CLEAR: peer over TLS only),
    with the mailbox's S/MIME certificate from the directory when it has one."""

    address: str
    kind: RecipientKind
    certificate: x509.Certificate | None = None


# ---------------------------------------------------------------------- envelope steps
def check_sender(session: Executor, identity: Identity, address: str) -> None:
    """MAIL FROM of a submission (DESIGN.md step 2)."""
    decision = may_send_as(session, identity, address)
    if not decision:
        raise SenderRefused(f"Émission refusée pour <{address}> : {decision.reason}",
                            code=f"sender_{decision.code}")


def check_peer(session: Executor, operator_dn: str, address: str) -> None:
    """MAIL FROM on the relay port: the peer's certificate DN must be the whitelist's for the
    sender's domain (``trust_space.policy.peer_may_send``)."""
    if not peer_may_send(session, operator_dn, address):
        domain = address.rpartition("@")[2].lower()
        raise SenderRefused(
            f"Opérateur non autorisé pour le domaine « {domain or '<>'} » (certificat "
            "différent de la liste blanche) / peer certificate does not match the whitelist",
            code="peer_dn_mismatch")


def route_recipient(session: Executor, address: str, local_domains: Collection[str], *,
                    local_only: bool = False) -> Route:
    """RCPT TO (DESIGN.md step 3): refused at RCPT when outside the trust space."""
    decision = may_receive(session, address, local_domains)
    if decision and local_only and decision.code != "local":  # never relay peer to peer
        raise RecipientRefused(
            f"Destinataire non hébergé par cet opérateur / recipient not hosted here "
            f"<{address}>", code="recipient_not_local")
    if not decision:
        raise RecipientRefused(
            f"Destinataire hors de l'espace de confiance / recipient outside the trust space "
            f"<{address}> ({decision.reason})", code=f"recipient_{decision.code}")
    local = decision.code == "local"
    return Route(address.lower(), RecipientKind.LOCAL if local else RecipientKind.PEER,
                 mailbox_certificate(session, address, local=local))


def check_count(count: int, maximum: int) -> None:
    """RFC 5321 §4.5.3.1.8: at least 100 must be accepted; ours is a setting (a policy)."""
    if count >= maximum:
        raise TooManyRecipients(f"Trop de destinataires (maximum {maximum}) / too many "
                                "recipients")


def check_size(size: int, maximum: int) -> None:
    if maximum and size > maximum:
        raise MessageTooBig(f"Message trop volumineux (maximum {maximum} octets) / message "
                            "too big")


# ---------------------------------------------------------------------- content steps
def check_loop(message: bytes | Head, maximum: int) -> None:
    """RFC 5321 §6.3: a message with too many Received fields is looping."""
    count = Head.of(message).count("received")
    if count > maximum:
        raise LoopDetected(f"Boucle de routage détectée ({count} relais) / routing loop "
                           "detected")


def check_from(session: Executor, identity: Identity, mail_from: str,
               message: bytes | Head) -> None:
    """The From: mailboxes must be ones the identity may use too (no displayed-sender
    spoofing behind an allowed envelope)."""
    for _name, address in getaddresses(Head.of(message).values("from")):
        if address and address.lower() != mail_from.lower():
            check_sender(session, identity, address)


def message_key(message: Message, queue_id: str, domain: str) -> tuple[Message, str]:
    """The message and its Message-ID (the de-duplication key); one is added when missing
    (RFC 6409 §8.3: the submission server may add Message-ID and Date)."""
    head = Head.of(message)
    found = head.values("message-id")
    match = _ANGLE.search(found[0]) if found else None
    if match:
        return message, f"<{match.group(1)}>"
    key = f"<{queue_id}@{domain}>"
    extra = f"Message-ID: {key}\r\n"
    if not head.count("date"):
        extra += f"Date: {formatdate(localtime=True)}\r\n"
    return same_form(message, head.prepended(extra.encode())), key


def dated(head: Head) -> Head:
    """A submitted message without Date gets one (RFC 6409 §8.3: the submission server may add
    it; RFC 5322 §3.6 requires it): the time of acceptance, in the operator's zone."""
    if head.count("date"):
        return head
    return head.prepended(f"Date: {formatdate(localtime=True)}\r\n".encode())


def check_end_to_end(raw: bytes, routes: Sequence[Route]) -> None:
    """A message the client protected itself (``protection.end_to_end``) must be what it says
    before it is relayed untouched (issue #14 item 8): well-formed CMS of its announced type
    (RFC 5652, RFC 8551), and an envelope every recipient can open.

    Raises:
        EndToEndRefused (554 5.7.5): malformed, compressed, or not addressed to a recipient's
            certificate (or a recipient has none in the directory).
    """
    try:
        found = cms_check.read_message(raw)
    except MalformedSmime as exc:  # its text is ours (certs.cms_check), never the content
        raise EndToEndRefused(f"Message S/MIME invalide : {exc.message} / Malformed S/MIME "
                              "message (RFC 5652, RFC 8551)") from None
    if found.content_type == "compressed_data":  # RFC 8551 §3.6: optional, rarely used
        raise EndToEndRefused("Compression S/MIME (compressed-data) non acceptée : envoyez le "
                              "message non compressé / S/MIME compressed-data is not accepted")
    if found.enveloped:
        _check_addressed(found, routes)


def _check_addressed(found: cms_check.CmsSummary, routes: Sequence[Route]) -> None:
    without = [r.address for r in routes if r.certificate is None]
    if without:
        who = _some(without)
        raise EndToEndRefused(
            f"Chiffrement de bout en bout impossible : pas de certificat dans l'annuaire pour "
            f"{who} / End-to-end encryption impossible: no directory certificate for {who}")
    unread = [r.address for r in routes
              if r.certificate is not None and not cms_check.addressed_to(found, r.certificate)]
    if unread:
        who = _some(unread)
        raise EndToEndRefused(
            f"Message chiffré, mais pas pour le certificat de {who} (illisible pour ce "
            f"destinataire) / Message not encrypted to the certificate of {who}")


def _some(addresses: Sequence[str], shown: int = 3) -> str:
    """At most ``shown`` addresses, so that the reply stays one short line (RFC 5321
    §4.5.3.1.5: 512 octets)."""
    more = len(addresses) - shown
    return ", ".join(addresses[:shown]) + (f" (+{more})" if more > 0 else "")


def trace(raw: bytes, *, helo: str, ip: str, hostname: str, queue_id: str, tls: str,
          authenticated: bool) -> bytes:
    """Prepend the Received field (RFC 5321 §4.4; "with ESMTPSA/ESMTPS", RFC 3848). It names
    hosts, TLS parameters and the queue id, never the content or the recipients."""
    protocol = "ESMTPS" if tls else "ESMTP"
    if authenticated:
        protocol += "A"
    helo = re.sub(r"[^A-Za-z0-9.\-\[\]:]", "?", helo)[:255] or "unknown"
    tls_line = f"\r\n\t{tls}" if tls else ""
    text = (f"Received: from {helo} ([{ip}])\r\n\tby {hostname} (mss) with {protocol} id "
            f"{queue_id}{tls_line};\r\n\t{formatdate(localtime=False)}\r\n")
    return text.encode("ascii", "replace") + raw
