"""Who may send as a mailbox, who may receive, and what each delegation role may do.

Pure decisions over the database state the caller's session sees; nothing is written. The
gateway turns a refused ``Decision`` into ``550 5.7.1`` with ``reason`` as the text
(CONVENTIONS.md, 2); IMAP ACLs come from ``imap_acl_rights``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import bindparam, select

from core.db import Executor
from trust_space.holdings import mailboxes_of
from trust_space.models import (
    Account,
    AccountKind,
    Mailbox,
    MailboxKind,
    MailboxState,
    Operator,
    Role,
    TrustedDomain,
)
from trust_space.naming import normalise_dn


@dataclass(frozen=True)
class Decision:
    """``allowed`` and why: ``code`` is stable (for mappers and tests), ``reason`` French /
    English for the human reading the SMTP reply."""

    allowed: bool
    reason: str
    code: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Identity:
    """The authenticated party, as the gateway or webmail established it.

    ``professional_id`` for a professional's account; ``mailbox_id`` for an applicative account
    (the mailbox its account and client certificate are bound to).
    """

    kind: AccountKind
    login: str
    professional_id: int | None = None
    mailbox_id: int | None = None

    @classmethod
    def from_account(cls, account: Account) -> Identity:
        return cls(kind=account.kind, login=account.login,
                   professional_id=account.professional_id, mailbox_id=account.mailbox_id)

    @classmethod
    def for_mailbox(cls, address: str, mailbox_id: int) -> Identity:
        """An organisational mailbox speaking for itself: what its own Sieve script sends
        (out-of-office replies), submitted by mss's mail store (``mailstore.sendmail``). It
        holds that mailbox and no other (``_is_holder``)."""
        return cls(kind=AccountKind.SERVICE, login=address, mailbox_id=mailbox_id)


def mailbox_identity(session: Executor, address: str) -> Identity | None:
    """``Identity.for_mailbox`` of a local organisational mailbox (None for anything else:
    a personal or applicative mailbox speaks through its account)."""
    mailbox = _local_mailbox(session, address)
    if mailbox is None or mailbox.kind is not MailboxKind.ORGANISATIONAL:
        return None
    return Identity.for_mailbox(address.strip().lower(), mailbox.id)


def _ok(code: str, reason: str) -> Decision:
    return Decision(True, reason, code)


def _no(code: str, reason: str) -> Decision:
    return Decision(False, reason, code)


_STATE_REFUSALS = {
    MailboxState.PENDING_VALIDATION: _no(
        "mailbox_not_published",
        "Boîte aux lettres en attente de validation / mailbox not yet published"),
    MailboxState.SUSPENDED: _no(
        "mailbox_suspended", "Boîte aux lettres suspendue / mailbox suspended"),
    MailboxState.CLOSED: _no("mailbox_closed", "Boîte aux lettres fermée / mailbox closed"),
}


@dataclass(frozen=True)
class _Held:
    """What the rules need of a local mailbox (columns, not the ORM entity: the relay asks
    for every MAIL FROM and RCPT TO)."""

    id: int
    kind: MailboxKind
    state: MailboxState
    professional_id: int | None


# Built once: the relay asks for every MAIL FROM and RCPT TO (core.db.Executor).
_LOCAL_MAILBOX = (select(Mailbox.id, Mailbox.kind, Mailbox.state, Mailbox.professional_id)
                  .where(Mailbox.address == bindparam("address"), Mailbox.operator_id.is_(None)))
_TRUSTED = select(TrustedDomain.id).where(TrustedDomain.domain == bindparam("domain"))


def _local_mailbox(session: Executor, address: str) -> _Held | None:
    # Addresses are stored lower-case (trust_space.naming, directory); compare the same way.
    row = session.execute(_LOCAL_MAILBOX, {"address": address.strip().lower()}).first()
    return _Held(*row) if row is not None else None


def _has_delegation(session: Executor, mailbox_id: int, professional_id: int) -> bool:
    # Every role may send (administrator, manager, user); roles differ in mailbox rights only.
    # Whatever the state: holding is decided before it (``may_send_as``).
    return bool(mailboxes_of(session, professional_id, kind=MailboxKind.ORGANISATIONAL,
                             mailbox_id=mailbox_id))


def _is_holder(session: Executor, identity: Identity, mailbox: _Held) -> Decision | None:
    """None when ``identity`` holds ``mailbox``, else the refusal."""
    if identity.kind is AccountKind.SERVICE:  # Identity.for_mailbox: that mailbox only
        if identity.mailbox_id is not None and identity.mailbox_id == mailbox.id:
            return None
        return _no("not_owner", "Vous n'êtes pas titulaire de cette boîte / you do not own "
                                "this mailbox")
    if mailbox.kind is MailboxKind.APPLICATIVE:
        if identity.kind is AccountKind.APPLICATIVE and identity.mailbox_id == mailbox.id:
            return None
        return _no("not_bound", "Boîte applicative liée à un autre logiciel / applicative "
                                "mailbox bound to another account")
    if identity.kind is not AccountKind.PROFESSIONAL or identity.professional_id is None:
        return _no("not_owner", "Vous n'êtes pas titulaire de cette boîte / you do not own "
                                "this mailbox")
    if mailbox.kind is MailboxKind.PERSONAL:
        if mailbox.professional_id == identity.professional_id:
            return None
        return _no("not_owner", "Vous n'êtes pas titulaire de cette boîte / you do not own "
                                "this mailbox")
    if _has_delegation(session, mailbox.id, identity.professional_id):
        return None
    return _no("no_delegation", "Aucune délégation sur cette boîte organisationnelle / no "
                                "delegation on this organisational mailbox")


def may_send_as(session: Executor, identity: Identity, mailbox_address: str) -> Decision:
    """May ``identity`` use ``mailbox_address`` as sender (MAIL FROM / From)?

    A personal mailbox by its own professional; an organisational one by any professional with
    a delegation on it, whatever the role; an applicative one only by its bound applicative
    account. Service accounts never send directly: they submit with an authorisation identity,
    and the gateway asks again for that user. Holding is checked before the state, so that the
    state of someone else's mailbox is not disclosed; then only published mailboxes may send.
    """
    if identity.kind is AccountKind.SERVICE and identity.mailbox_id is None:
        return _no("service_account", "Un compte de service n'émet pas en son nom / a service "
                                      "account cannot send on its own behalf")
    mailbox = _local_mailbox(session, mailbox_address)
    if mailbox is None:
        return _no("unknown_mailbox", "Boîte aux lettres inconnue sur cet opérateur / unknown "
                                      "mailbox on this operator")
    refusal = _is_holder(session, identity, mailbox)
    if refusal is not None:
        return refusal
    if mailbox.state is not MailboxState.PUBLISHED:
        return _STATE_REFUSALS[mailbox.state]
    return _ok("ok", "Émission autorisée / sending allowed")


def may_authorise(session: Executor, identity: Identity, authzid: str = "") -> Decision:
    """May ``identity``, authenticated by a card or certificate (EXTERNAL) or a Pro Santé
    Connect token (OAUTHBEARER, XOAUTH2), act for ``authzid``, the SASL authorisation identity
    (RFC 4422 §3.4.1)? Empty names its own mailbox (``identity.login``); any other address must
    be a mailbox it may send as (``may_send_as``: its own personal one, an organisational one by
    delegation, an applicative one only for the software bound to it). Either way the mailbox
    must be held and published. The identity itself does not change: each MAIL FROM is asked
    again. The gateway's EXTERNAL and token mechanisms and the IMAP token check
    (``mailstore.oauth``) decide here; on IMAP only the own mailbox opens as a login, a
    delegated one is reached in the shared namespace (``mailstore.acl``).
    """
    return may_send_as(session, identity, authzid.strip() or identity.login)


def may_receive(session: Executor, address: str, local_domains: Collection[str]) -> Decision:
    """Is ``address`` a recipient inside the trust space?

    Local domain: only a published local mailbox. Other domains: only whitelisted ones
    (``TrustedDomain``); the peer operator then decides on the mailbox itself.
    """
    local_part, at, domain = address.strip().rpartition("@")
    domain = domain.lower()
    if not at or not local_part or not domain:
        return _no("bad_address", "Adresse invalide / invalid address")
    if domain in {d.lower() for d in local_domains}:
        mailbox = _local_mailbox(session, address)
        if mailbox is None:
            return _no("unknown_recipient", "Destinataire inconnu dans l'espace de confiance / "
                                            "unknown recipient in the trust space")
        if mailbox.state is not MailboxState.PUBLISHED:
            return _STATE_REFUSALS[mailbox.state]
        return _ok("local", "Destinataire local / local recipient")
    trusted = session.execute(_TRUSTED, {"domain": domain}).first()
    if trusted is None:
        return _no("untrusted_domain", "Destinataire hors de l'espace de confiance MSSanté / "
                                       "recipient outside the MSSanté trust space")
    return _ok("trusted_peer", "Domaine d'un opérateur de confiance / trusted peer domain")



def peer_may_send(session: Executor, operator_dn: str, address: str) -> bool:
    """May the peer operator whose certificate has ``operator_dn`` (normalised) relay mail from
    ``address``? Its DN must be the whitelist's for the sender's domain; a null sender (a DSN,
    an MDN) must come from a whitelisted operator."""
    if address:
        domain = address.rpartition("@")[2].lower()
        expected = session.scalar(select(TrustedDomain.certificate_dn)
                                  .where(TrustedDomain.domain == domain))
        return expected is not None and normalise_dn(expected) == operator_dn
    return any(normalise_dn(dn) == operator_dn
               for dn in session.scalars(select(Operator.certificate_dn)))

@dataclass(frozen=True)
class Protection:
    """What a recipient's copy gets (``protection_of``): a stable ``code`` and a French
    sentence for the person sending."""

    address: str
    code: str  # internal / end_to_end / trust_space_tls / refused
    text: str


_CERT = {local: select(Mailbox.smime_cert_pem).where(
    Mailbox.address == bindparam("address"),  # stored lower case
    Mailbox.operator_id.is_(None) if local else Mailbox.operator_id.is_not(None))
    for local in (True, False)}


def mailbox_certificate(session: Executor, address: str, *, local: bool
                        ) -> x509.Certificate | None:
    """A mailbox's S/MIME certificate, if any: a local mailbox's own, or a peer's from the
    imported directory (never a local one for a peer address, nor the reverse). The gateway
    encrypts to it; ``protection_of`` tells the sender so beforehand."""
    pem = session.scalar(_CERT[local], {"address": address.lower()})
    return x509.load_pem_x509_certificate(pem.encode()) if pem else None


def protection_of(session: Executor, address: str, local_domains: Collection[str], *,
                  sign: bool, encrypt: bool, tls_only_peers: bool) -> Protection:
    """The protection the gateway will give ``address``'s copy of a message sent with
    ``sign``/``encrypt`` (the same rules as ``gateway.accept.forms.secure``): a local recipient's
    copy never leaves the operator (signed, no hop encryption); a peer's is encrypted end to
    end when asked and it has a certificate in the directory, else sent over the trust
    space's mutual TLS if ``tls_only_peers``, else refused."""
    decision = may_receive(session, address, local_domains)
    signed = "signé, " if sign else ""
    if not decision:
        return Protection(address, "refused", f"Refusé : {decision.reason.split(' / ')[0]}")
    if decision.code == "local":
        return Protection(address, "internal", f"{signed.capitalize() or 'Non signé, '}remis "
                          "chez votre opérateur sans quitter ses serveurs")
    has_cert = mailbox_certificate(session, address, local=False) is not None
    if encrypt and has_cert:
        return Protection(address, "end_to_end", f"{signed.capitalize()}chiffré de bout en "
                          "bout (S/MIME) pour ce destinataire")
    if encrypt and not tls_only_peers:
        return Protection(address, "refused", "Refusé : pas de certificat de chiffrement "
                          "publié pour ce destinataire")
    why = " (pas de certificat de chiffrement publié)" if encrypt else ""
    return Protection(address, "trust_space_tls", f"{signed.capitalize() or 'Non signé, '}"
                      f"transmis dans l’espace de confiance (TLS mutuel){why}")


# RFC 4314 §2.1 rights, in the RFC's order.
RIGHT_NAMES = {
    "l": "lookup",  # see the mailbox in LIST
    "r": "read",  # SELECT, FETCH, SEARCH, COPY from
    "s": "seen",  # keep \Seen across sessions
    "w": "write",  # flags other than \Seen and \Deleted
    "i": "insert",  # APPEND, COPY into
    "p": "post",  # send mail to the submission address of the mailbox
    "k": "create",  # create sub-mailboxes
    "x": "delete_mailbox",  # delete or rename the mailbox
    "t": "delete_messages",  # set or clear \Deleted
    "e": "expunge",  # EXPUNGE
    "a": "administer",  # SETACL / DELETEACL / GETACL / LISTRIGHTS
}
_ROLE_ACL = {
    Role.USER: "lrswip",
    Role.MANAGER: "lrswipkxte",
    Role.ADMINISTRATOR: "lrswipkxtea",
}


def imap_acl_rights(role: Role | str) -> str:
    """The RFC 4314 rights string of a delegation role: user ``lrswip`` (read, flag, append,
    post), manager ``lrswipkxte`` (plus folders, delete, expunge), administrator
    ``lrswipkxtea`` (plus ACL administration)."""
    return _ROLE_ACL[Role(role)]


def role_rights(role: Role | str) -> frozenset[str]:
    """The same rights as readable names (``{"lookup", "read", …}``)."""
    return frozenset(RIGHT_NAMES[letter] for letter in imap_acl_rights(role))
