"""The message as each kind of recipient receives it: the sign / encrypt step of a submission
(``secure``) and the stamped form local readers get.

**Local versus peer protection.** A message to local recipients never leaves the operator, so
they receive the *signed* form (never the hop encryption), opened and stamped like an inbound
message (``gateway.accept.opening.open_message`` + ``stamp``): the reader sees an
``Authentication-Results`` field with the S/MIME result, and the signature stays for them to
check again. Peer recipients receive the form the policy asks for: signed and encrypted to
every peer recipient's certificate from the directory. A peer recipient without certificate
gets the signed form over the mutually authenticated TLS hop if ``allow_tls_only_peers``
(MSSanté mode), else the message is refused with a clear text. A message the client already
protected end to end passes untouched once ``checks.check_end_to_end`` found its protection real
(issue #14 item 8): its CMS parses as the type its MIME type announces (``certs.cms_check``),
a signature is of the content, and an envelope is addressed to the certificate the directory
holds for every recipient, local ones included (``checks.route_recipient`` gives each route its
certificate). S/MIME compressed-data (RFC 8551 §3.6) is rarely used and refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from certs.validation import TrustStore, ValidationCache
from gateway.accept import opening, protection
from gateway.accept.checks import Route, check_end_to_end
from gateway.accept.keys import Pair
from gateway.accept.protection import Protection
from mailformat.headers import Head, Message
from spool.models import RecipientKind


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
    chosen = protection.effective(protection.requested(head), ctx.policy)
    head = protection.strip_request(head)
    peers = [r for r in routes if r.kind is RecipientKind.PEER]
    if protection.end_to_end(head):
        check_end_to_end(head.raw, routes)
        return Forms(local_head=stamp_local(head, ctx), peer=head.raw if peers else None,
                     protection="end-to-end")
    signer = signer if chosen.sign else None
    signed = head
    if chosen.sign:  # ProtectionUnavailable without a signer
        signed = Head.of(protection.protect(head.raw, Protection(sign=True, encrypt=False),
                                            signer=signer, recipients={}, chain=ctx.chain))
    if signer is not None:  # our own signature: not verified a second time
        verdict = opening.own_signature(signed, signer[0], ctx.store, chain=ctx.chain,
                                        checks=ctx.checks)
        local = opening.stamp(signed, verdict, ctx.authserv_id)
    else:
        local = stamp_local(signed, ctx)
    forms = Forms(local_head=local, protection=chosen.label())
    if peers:
        _peer_forms(forms, signed.raw, peers, chosen, ctx)
    return forms


def _peer_forms(forms: Forms, signed: bytes, peers: Sequence[Route], chosen: Protection,
                ctx: SecurityContext) -> None:
    if not chosen.encrypt:
        forms.peer = signed
        return
    with_cert = {r.address: r.certificate for r in peers if r.certificate is not None}
    without = {r.address for r in peers if r.certificate is None}
    if without and not ctx.allow_tls_only_peers:
        # protect() names the recipients without certificate in its refusal (554 5.7.5).
        protection.protect(signed, Protection(sign=False, encrypt=True), signer=None,
                           recipients={r.address: r.certificate for r in peers})
    if with_cert:
        forms.peer = protection.protect(signed, Protection(sign=False, encrypt=True),
                                        signer=None, recipients=with_cert)
    if without:
        forms.clear, forms.clear_recipients = signed, without


def stamp_local(message: Message, ctx: SecurityContext) -> Message:
    """The form local readers get: verified, with our Authentication-Results (RFC 8601)."""
    opened, verdict = opening.open_message(message, key=None, store=ctx.store)
    return opening.stamp(opened, verdict, ctx.authserv_id)


