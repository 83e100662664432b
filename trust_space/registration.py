"""Registration of a professional (the regional platforms' four steps) and its validation by
the operator.

``register`` creates the professional (or completes one imported without an account), a
personal mailbox named by the naming rules, optionally a pharmacy's organisational mailbox
with the registrant as administrator, and the account — every mailbox pending validation.
``validate`` publishes them (with their S/MIME certificates, issued by the caller's
``issue``); ``refuse`` closes them and suspends the account. Nothing here sends e-mail or
audits: the caller does (CONVENTIONS.md, 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from trust_space import directory
from trust_space.accounts import create_professional_account, find_account
from trust_space.errors import TrustSpaceError
from trust_space.models import (
    Account,
    AccountState,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    Professional,
    Role,
)
from trust_space.naming import clean_part, personal_address

PHARMACY_PREFIX = "pharma"


@dataclass(frozen=True)
class Pharmacy:
    """The officine whose organisational mailbox is asked for."""

    name: str  # distinctive name, e.g. "du Centre"
    finess: str
    postal_code: str
    city: str
    address: str = ""


@dataclass
class Registration:
    """What the wizard collected. ``professional`` holds Professional attributes."""

    rpps: str | None
    adeli: str | None
    professional: dict[str, object]
    password_hash: str  # argon2id (trust_space.accounts.hash_password): never the password
    pharmacy: Pharmacy | None = None


@dataclass
class Pending:
    """A registration awaiting validation: the professional and their pending mailboxes."""

    professional: Professional
    account: Account | None
    mailboxes: list[Mailbox] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.mailboxes]


class AlreadyRegistered(TrustSpaceError):
    code = "already_registered"


def proposed_address(session: Session, first_name: str, last_name: str, domain: str) -> str:
    """The personal address the naming rules give now (``prenom.nom2@`` on a collision)."""
    stem = f"{clean_part(first_name, 'prénom')}.{clean_part(last_name, 'nom')}"
    return personal_address(first_name, last_name, domain,
                            directory.taken_addresses(session, domain, stem))


def check_not_registered(session: Session, rpps: str | None, adeli: str | None) -> None:
    """Raises AlreadyRegistered when this RPPS/ADELI already has an account. Only for someone
    whose identity is proven (a card, or the code sent by ``proof_address``)."""
    if is_registered(session, rpps, adeli):
        raise AlreadyRegistered("Un compte de messagerie existe déjà pour ce numéro "
                                f"{'RPPS' if rpps else 'ADELI'}. Connectez-vous, ou contactez "
                                "votre opérateur si vous ne retrouvez pas vos accès.")


def is_registered(session: Session, rpps: str | None, adeli: str | None) -> bool:
    """True when this RPPS/ADELI already has an account."""
    pro = directory.find_professional(session, rpps=rpps, adeli=adeli)
    return pro is not None and pro.account is not None


def proof_address(session: Session, rpps: str | None, adeli: str | None,
                  typed: str) -> str | None:
    """Where the one-time code that proves who registers goes. Whether a number already has
    an account is told only to its holder (issue #14): so for such a number the code goes to
    the usual address on file (None when there is none), whatever was typed; for a number
    without an account, to the address typed."""
    pro = directory.find_professional(session, rpps=rpps, adeli=adeli)
    if pro is not None and pro.account is not None:
        return pro.usual_email or None
    return typed


def register(session: Session, data: Registration, domain: str) -> list[Mailbox]:
    """Create the pending registration; the new mailboxes, personal first.

    Raises:
        AlreadyRegistered: this professional already has an account. NamingError: a malformed
            number, name or postal code. WeakPassword: the password breaks the rules.
    """
    check_not_registered(session, data.rpps, data.adeli)
    pro, _created = directory.upsert_professional(session, rpps=data.rpps, adeli=data.adeli,
                                                  **data.professional)
    personal = directory.new_personal_mailbox(session, pro, domain)
    boxes = [personal]
    if data.pharmacy is not None:
        boxes.append(_pharmacy_mailbox(session, pro, data.pharmacy, domain))
    account = create_professional_account(session, pro, personal.address, None)
    account.password_hash = data.password_hash
    session.flush()
    return boxes


def _pharmacy_mailbox(session: Session, pro: Professional, pharmacy: Pharmacy,
                      domain: str) -> Mailbox:
    structure, _created = directory.upsert_structure(
        session, finess=pharmacy.finess, name=f"Pharmacie {pharmacy.name}".strip(),
        postal_code=pharmacy.postal_code, city=pharmacy.city, address=pharmacy.address)
    mailbox = directory.new_organisational_mailbox(session, structure, PHARMACY_PREFIX,
                                                   pharmacy.name, domain)
    directory.add_delegation(session, mailbox, pro, Role.ADMINISTRATOR)
    return mailbox


def pending(session: Session) -> list[Pending]:
    """Registrations awaiting validation, oldest first."""
    boxes = session.scalars(select(Mailbox).where(
        Mailbox.state == MailboxState.PENDING_VALIDATION, Mailbox.operator_id.is_(None),
        Mailbox.kind == MailboxKind.PERSONAL).order_by(Mailbox.created_at, Mailbox.id)).all()
    result = []
    for box in boxes:
        if box.professional is not None:
            result.append(find_pending(session, box.address))
    return [p for p in result if p is not None]


def find_pending(session: Session, address: str) -> Pending | None:
    """The pending registration that ``address`` (personal mailbox or login) belongs to."""
    account = find_account(session, address)
    pro = account.professional if account is not None else None
    if pro is None:
        return None
    personal = session.scalars(select(Mailbox).where(
        Mailbox.professional_id == pro.id, Mailbox.kind == MailboxKind.PERSONAL,
        Mailbox.state == MailboxState.PENDING_VALIDATION)).all()
    orgs = session.scalars(select(Mailbox).join(Delegation).where(
        Delegation.professional_id == pro.id, Delegation.role == Role.ADMINISTRATOR,
        Mailbox.state == MailboxState.PENDING_VALIDATION)).all()
    if not personal:
        return None
    return Pending(pro, account, [*personal, *orgs])


def validate(session: Session, registration: Pending,
             issue: Callable[[Session, Mailbox], None] | None = None) -> list[str]:
    """Publish the registration's mailboxes (issuing a certificate to each without one);
    the published addresses."""
    for mailbox in registration.mailboxes:
        if issue is not None and not mailbox.smime_cert_pem:
            issue(session, mailbox)
        directory.publish(session, mailbox)
    return registration.addresses


def refuse(session: Session, registration: Pending) -> list[str]:
    """Close the registration's mailboxes and suspend its account; the closed addresses."""
    for mailbox in registration.mailboxes:
        directory.close(session, mailbox)
    if registration.account is not None:
        registration.account.state = AccountState.SUSPENDED
    session.flush()
    return registration.addresses
