"""The relay policy as a pipeline of small named steps (CONVENTIONS.md, 5).

Each step is a plain function over plain data and the caller's session; it returns what the
next step needs or raises a ``GatewayError`` that already knows its SMTP reply. The SMTP
handler (``gateway.server``) calls them at the earliest honest moment (CONVENTIONS.md, 2):

====================  ==========================================================  ===========
step                  what                                                        refusal
====================  ==========================================================  ===========
``check_sender``      the authenticated identity may send as MAIL FROM            550 5.7.1
``check_peer``        relay: the peer certificate's DN is the whitelist entry     550 5.7.1
                      of the MAIL FROM domain
``route_recipient``   RCPT in the trust space (local published, or whitelisted    550 5.7.1
                      peer domain; relay: local only)
``check_count``       at most ``max_recipients``                                  452 4.5.3
``check_size``        at most ``max_message_size`` (SIZE is also advertised)      552 5.3.4
``RateLimit.check``   messages per identity per minute                            451 4.7.1
``check_loop``        Received fields ≤ ``max_received`` (RFC 5321 §6.3)          554 5.4.6
``check_from``        the From: mailboxes may be used by the identity             550 5.7.1
``check_end_to_end``  a message protected by the client: well-formed CMS, an      554 5.7.5
                      envelope addressed to every recipient's certificate
``secure``            sign / encrypt (``gateway.security``), see below            554 5.7.5
``trace``             a Received field with the TLS parameters, no content        —
====================  ==========================================================  ===========

**Local versus peer protection.** A message to local recipients never leaves the operator, so
they receive the *signed* form (never the hop encryption), opened and stamped like an inbound
message (``gateway.inbound.open_message`` + ``stamp``): the reader sees an
``Authentication-Results`` field with the S/MIME result, and the signature stays for them to
check again. Peer recipients receive the form the policy asks for: signed and encrypted to
every peer recipient's certificate from the directory. A peer recipient without certificate
gets the signed form over the mutually authenticated TLS hop if ``allow_tls_only_peers``
(MSSanté mode), else the message is refused with a clear text. A message the client already
protected end to end passes untouched once ``check_end_to_end`` found its protection real
(issue #14 item 8): its CMS parses as the type its MIME type announces (``certs.cms_check``),
a signature is of the content, and an envelope is addressed to the certificate the directory
holds for every recipient, local ones included (``route_recipient`` gives each route its
certificate). S/MIME compressed-data (RFC 8551 §3.6) is rarely used and refused.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate, getaddresses

from cryptography import x509
from sqlalchemy import select

from certs import cms_check
from certs.errors import MalformedSmime
from certs.validation import TrustStore, ValidationCache
from core.db import Executor
from gateway import inbound, security
from gateway.errors import (
    EndToEndRefused,
    LoopDetected,
    MessageTooBig,
    RateLimited,
    RecipientRefused,
    SenderRefused,
    TooManyRecipients,
)
from gateway.keys import Pair
from gateway.security import Protection
from mailformat.headers import Head, Message, same_form
from spool.models import RecipientKind
from trust_space.models import Operator, TrustedDomain
from trust_space.naming import normalise_dn
from trust_space.policy import Identity, mailbox_certificate, may_receive, may_send_as

_ANGLE = re.compile(r"<([^<>\s]{1,240})>")


@dataclass(frozen=True)
class Route:
    """Where one accepted recipient goes: ``kind`` LOCAL or PEER (CLEAR: peer over TLS only),
    with the mailbox's S/MIME certificate from the directory when it has one."""

    address: str
    kind: RecipientKind
    certificate: x509.Certificate | None = None


@dataclass
class Forms:
    """The message as each kind of recipient receives it (see the module docstring); the
    local form keeps its cut header (``local_head``) for the seal that follows."""

    local_head: Head | None = None
    peer: bytes | None = None
    clear: bytes | None = None
    clear_recipients: set[str] = field(default_factory=set)
    protection: str = "none"

    @property
    def local(self) -> bytes | None:
        """The form local readers get, stamped (``stamp_local``)."""
        return None if self.local_head is None else self.local_head.raw


# ---------------------------------------------------------------------- envelope steps
def check_sender(session: Executor, identity: Identity, address: str) -> None:
    """MAIL FROM of a submission (DESIGN.md step 2)."""
    decision = may_send_as(session, identity, address)
    if not decision:
        raise SenderRefused(f"Émission refusée pour <{address}> : {decision.reason}",
                            code=f"sender_{decision.code}")


def check_peer(session: Executor, operator_dn: str, address: str) -> None:
    """MAIL FROM on the relay port: the peer's certificate DN must be the whitelist's for the
    sender's domain (a null sender — DSN, MDN — must come from a whitelisted operator)."""
    domain = address.rpartition("@")[2].lower()
    if address:
        expected = session.scalar(select(TrustedDomain.certificate_dn)
                                  .where(TrustedDomain.domain == domain))
        ok = expected is not None and normalise_dn(expected) == operator_dn
    else:
        ok = any(normalise_dn(dn) == operator_dn
                 for dn in session.scalars(select(Operator.certificate_dn)))
    if not ok:
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


class RateLimit:
    """At most ``per_minute`` messages per identity over a sliding minute, in this process
    (several gateway processes each apply the limit)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> None:
        """Count one message for ``key``; raise RateLimited past the limit."""
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._seen.setdefault(key, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                raise RateLimited(f"Trop de messages : {self.per_minute} par minute au plus, "
                                  "réessayez plus tard / rate limit exceeded, try later")
            window.append(now)


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


@dataclass(frozen=True)
class SecurityContext:
    """What the security step needs besides the message."""

    policy: str
    allow_tls_only_peers: bool
    store: TrustStore
    authserv_id: str
    chain: Sequence[x509.Certificate] = ()
    checks: ValidationCache | None = None  # recent validations of our signers


def secure(ctx: SecurityContext, message: bytes | Head, signer: Pair | None,
           routes: Sequence[Route]) -> Forms:
    """The security step of a submission (module docstring): choose, sign, encrypt, stamp.
    ``signer``: the sender mailbox's certificate and key (``KeyRing``), None if it has none.
    The header is read from ``message``'s cut, and the signed message is cut once."""
    head = Head.of(message)
    protection = security.effective(security.requested(head), ctx.policy)
    head = security.strip_request(head)
    peers = [r for r in routes if r.kind is RecipientKind.PEER]
    if security.end_to_end(head):
        check_end_to_end(head.raw, routes)
        return Forms(local_head=stamp_local(head, ctx), peer=head.raw if peers else None,
                     protection="end-to-end")
    signer = signer if protection.sign else None
    signed = head
    if protection.sign:  # ProtectionUnavailable without a signer
        signed = Head.of(security.protect(head.raw, Protection(sign=True, encrypt=False),
                                          signer=signer, recipients={}, chain=ctx.chain))
    if signer is not None:  # our own signature: not verified a second time
        verdict = inbound.own_signature(signed, signer[0], ctx.store, chain=ctx.chain,
                                        checks=ctx.checks)
        local = inbound.stamp(signed, verdict, ctx.authserv_id)
    else:
        local = stamp_local(signed, ctx)
    forms = Forms(local_head=local, protection=protection.label())
    if peers:
        _peer_forms(forms, signed.raw, peers, protection, ctx)
    return forms


def check_end_to_end(raw: bytes, routes: Sequence[Route]) -> None:
    """A message the client protected itself (``security.end_to_end``) must be what it says
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


def _peer_forms(forms: Forms, signed: bytes, peers: Sequence[Route], protection: Protection,
                ctx: SecurityContext) -> None:
    if not protection.encrypt:
        forms.peer = signed
        return
    with_cert = {r.address: r.certificate for r in peers if r.certificate is not None}
    without = {r.address for r in peers if r.certificate is None}
    if without and not ctx.allow_tls_only_peers:
        # protect() names the recipients without certificate in its refusal (554 5.7.5).
        security.protect(signed, Protection(sign=False, encrypt=True), signer=None,
                         recipients={r.address: r.certificate for r in peers})
    if with_cert:
        forms.peer = security.protect(signed, Protection(sign=False, encrypt=True),
                                      signer=None, recipients=with_cert)
    if without:
        forms.clear, forms.clear_recipients = signed, without


def stamp_local(message: Message, ctx: SecurityContext) -> Message:
    """The form local readers get: verified, with our Authentication-Results (RFC 8601)."""
    opened, verdict = inbound.open_message(message, key=None, store=ctx.store)
    return inbound.stamp(opened, verdict, ctx.authserv_id)


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
