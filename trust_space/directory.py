"""The directory: search, mailbox publication life cycle, professionals and delegations.

Search is case- and accent-insensitive and behaves the same on SQLite and PostgreSQL: SQL
selects the candidates (published, not on the liste rouge, exact RPPS), Python matches the
folded texts (``trust_space.naming.fold``). Liste rouge and unpublished mailboxes are never
returned.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from core.db import Executor, utcnow
from trust_space.errors import InvalidTransition, TrustSpaceError
from trust_space.models import (
    Delegation,
    FeedEvent,
    Mailbox,
    MailboxKind,
    MailboxState,
    Professional,
    Role,
    Structure,
)
from trust_space.naming import (
    clean_part,
    fold,
    national_id,
    organisational_address,
    personal_address,
    profession_label,
    validate_adeli,
    validate_finess,
    validate_rpps,
)


@dataclass(frozen=True)
class DirectoryEntry:
    """What the directory shows of a published mailbox. ``mobile`` only if its holder chose
    to publish it."""

    address: str
    kind: MailboxKind
    display_name: str
    profession: str = ""
    specialty: str = ""
    city: str = ""
    postal_code: str = ""
    rpps: str | None = None
    adeli: str | None = None
    mobile: str | None = None
    structure: str | None = None
    finess: str | None = None


def _shown_name(own: str, professional: str, structure: str, address: str) -> str:
    """The name the directory shows for a mailbox: its own display name, else its holder's,
    else its structure's, else its address."""
    return own or professional or structure or address


def _entry(mailbox: Mailbox) -> DirectoryEntry:
    pro, org = mailbox.professional, mailbox.structure
    place: Professional | Structure | None = pro if pro is not None else org
    if pro is not None and not (pro.city or pro.postal_code) and org is not None:
        place = org
    return DirectoryEntry(
        address=mailbox.address,
        kind=mailbox.kind,
        display_name=_shown_name(mailbox.display_name, pro.display_name if pro else "",
                                 org.name if org else "", mailbox.address),
        profession=profession_label(pro.profession, pro.civility) if pro else "",
        specialty=pro.specialty if pro else "",
        city=place.city if place else "",
        postal_code=place.postal_code if place else "",
        rpps=pro.rpps if pro else None,
        adeli=pro.adeli if pro else None,
        mobile=pro.mobile if pro and mailbox.mobile_published and pro.mobile else None,
        structure=org.name if org else None,
        finess=org.finess if org else None,
    )


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in fold(text)).split()


def _contains(haystack: str, needle: str | None) -> bool:
    """Every word of ``needle`` is a substring of the folded ``haystack``."""
    if not needle:
        return True
    folded = " ".join(_words(haystack))
    return all(word in folded for word in _words(needle))


def published_mailboxes(session: Session, *, rpps: str | None = None) -> Iterator[Mailbox]:
    """Published mailboxes not on the liste rouge, with their professional and structure."""
    query = (
        select(Mailbox)
        .options(joinedload(Mailbox.professional), joinedload(Mailbox.structure))
        .where(Mailbox.state == MailboxState.PUBLISHED, Mailbox.liste_rouge.is_(False))
        .order_by(Mailbox.id)
    )
    if rpps:
        query = query.join(Professional, Mailbox.professional_id == Professional.id).where(
            Professional.rpps == rpps.strip())
    yield from session.execute(query).unique().scalars()


def search(
    session: Session,
    *,
    text: str | None = None,
    name: str | None = None,
    profession: str | None = None,
    specialty: str | None = None,
    postal_code: str | None = None,
    city: str | None = None,
    rpps: str | None = None,
    kind: MailboxKind | None = None,
    limit: int = 50,
) -> list[DirectoryEntry]:
    """Directory entries matching every given criterion, sorted by name then address.

    ``name``: words found in the display name, first/last name or structure name; ``text``:
    words found anywhere (names, profession, specialty, city, structure); ``profession``,
    ``specialty``, ``city``: words contained; ``postal_code``: a prefix ("64" = département);
    ``rpps``: exact. All text matching ignores case and accents.
    """
    found = []
    for mailbox in published_mailboxes(session, rpps=rpps):
        entry = _entry(mailbox)
        names = f"{entry.display_name} {entry.structure or ''}"
        if mailbox.professional is not None:
            names += f" {mailbox.professional.first_name} {mailbox.professional.last_name}"
        # Both forms of the profession match ("infirmier" finds Julie, shown "Infirmière").
        stored = mailbox.professional.profession if mailbox.professional else ""
        professions = f"{entry.profession} {stored}"
        anything = f"{names} {professions} {entry.specialty} {entry.city} {entry.address}"
        if (
            (kind is None or entry.kind is kind)
            and _contains(names, name) and _contains(anything, text)
            and _contains(professions, profession)
            and _contains(entry.specialty, specialty) and _contains(entry.city, city)
            and entry.postal_code.startswith((postal_code or "").strip())
        ):
            found.append(entry)
    found.sort(key=lambda e: (fold(e.display_name), e.address))
    return found[:limit]


# ------------------------------------------------------------------ publication life cycle
_TRANSITIONS = {
    MailboxState.PENDING_VALIDATION: {MailboxState.PUBLISHED, MailboxState.CLOSED},
    MailboxState.PUBLISHED: {MailboxState.SUSPENDED, MailboxState.CLOSED},
    MailboxState.SUSPENDED: {MailboxState.PUBLISHED, MailboxState.CLOSED},
    MailboxState.CLOSED: set(),
}
_STATE_FR = {
    MailboxState.PENDING_VALIDATION: "en attente de validation",
    MailboxState.PUBLISHED: "publiée",
    MailboxState.SUSPENDED: "suspendue",
    MailboxState.CLOSED: "fermée",
}


def change_state(session: Session, mailbox: Mailbox, target: MailboxState, *,
                 now: datetime | None = None) -> Mailbox:
    """Move ``mailbox`` to ``target``: pending → published; published ↔ suspended; any →
    closed, which is final. The first publication and the closing of a published mailbox are
    queued for the national directory in the same transaction (``trust_space.annuaire``).

    Raises:
        InvalidTransition: any other change, including to the current state.
    """
    from trust_space import annuaire

    current = MailboxState(mailbox.state or MailboxState.PENDING_VALIDATION)  # unflushed: default
    if target not in _TRANSITIONS[current]:
        raise InvalidTransition(
            f"La boîte {mailbox.address} est {_STATE_FR[current]} : "
            f"elle ne peut pas devenir {_STATE_FR[target]}."
        )
    mailbox.state = target
    if target is MailboxState.PUBLISHED and mailbox.published_at is None:
        mailbox.published_at = now or utcnow()
    session.flush()
    event = annuaire.transition_event(current, target)
    if event is not None:
        annuaire.record_event(session, mailbox, event, now=now)
    return mailbox


def publish(session: Session, mailbox: Mailbox, *, now: datetime | None = None) -> Mailbox:
    """Publish a validated mailbox, or restore a suspended one (see ``change_state``)."""
    return change_state(session, mailbox, MailboxState.PUBLISHED, now=now)


def suspend(session: Session, mailbox: Mailbox) -> Mailbox:
    """Suspend a published mailbox: it can neither send nor receive (see ``change_state``)."""
    return change_state(session, mailbox, MailboxState.SUSPENDED)


def close(session: Session, mailbox: Mailbox) -> Mailbox:
    """Close a mailbox for good (see ``change_state``)."""
    return change_state(session, mailbox, MailboxState.CLOSED)


def set_liste_rouge(session: Session, mailbox: Mailbox, on: bool) -> bool:
    """Put the mailbox on the liste rouge (off the directory) or take it off; a mailbox the
    national directory knows has the change queued for it in the same transaction. False when
    it was already so."""
    from trust_space import annuaire

    if bool(mailbox.liste_rouge) == on:
        return False
    mailbox.liste_rouge = on
    session.flush()
    if annuaire.is_listed(mailbox):
        event = FeedEvent.LISTE_ROUGE_ON if on else FeedEvent.LISTE_ROUGE_OFF
        annuaire.record_event(session, mailbox, event)
    return True


# ------------------------------------------------------------------ professionals, mailboxes
_PRO_FIELDS = {c.key for c in Professional.__table__.columns} - {"id", "rpps", "adeli",
                                                                    "created_at"}


def find_professional(session: Session, *, rpps: str | None = None,
                      adeli: str | None = None) -> Professional | None:
    """The professional with this RPPS, else with this ADELI."""
    for column, value in ((Professional.rpps, rpps), (Professional.adeli, adeli)):
        if value:
            found = session.execute(select(Professional).where(column == value.strip())
                                    ).scalar_one_or_none()
            if found is not None:
                return found
    return None


def _check_identity(session: Session, professional: Professional | None, rpps: str | None,
                    adeli: str | None) -> None:
    """Refuse an RPPS/ADELI pair that would merge two people or rewrite someone's number."""
    if professional is None:
        return
    if rpps and professional.rpps and professional.rpps != rpps:
        raise TrustSpaceError(f"ADELI {adeli} déjà attribué au RPPS {professional.rpps}",
                              code="identity_conflict")
    other = find_professional(session, adeli=adeli) if adeli else None
    if other is not None and other is not professional:
        raise TrustSpaceError(f"ADELI {adeli} déjà attribué à un autre professionnel",
                              code="identity_conflict")


def upsert_professional(session: Session, *, rpps: str | None = None, adeli: str | None = None,
                        **fields: Any) -> tuple[Professional, bool]:
    """Create or update the professional known by RPPS (else ADELI); ``(professional, created)``.

    ``fields`` are Professional attributes (first_name, last_name, profession, city…).

    Raises:
        NamingError: a malformed RPPS/ADELI, or neither. TrustSpaceError: an unknown field.
    """
    unknown = set(fields) - _PRO_FIELDS
    if unknown:
        raise TrustSpaceError(f"champ(s) inconnu(s) : {', '.join(sorted(unknown))}")
    rpps = validate_rpps(rpps) if rpps else None
    adeli = validate_adeli(adeli) if adeli else None
    national_id(rpps, adeli)  # raises when there is neither
    professional = find_professional(session, rpps=rpps, adeli=adeli)
    _check_identity(session, professional, rpps, adeli)
    created = professional is None
    if professional is None:
        professional = Professional(rpps=rpps, adeli=adeli)
        session.add(professional)
    else:
        professional.rpps = rpps or professional.rpps
        professional.adeli = adeli or professional.adeli
    for key, value in fields.items():
        setattr(professional, key, value)
    session.flush()
    return professional, created


_ORG_FIELDS = {"name", "address", "postal_code", "city"}


def upsert_structure(session: Session, *, finess: str, **fields: Any) -> tuple[Structure, bool]:
    """Create or update the structure with this FINESS; ``(structure, created)``.

    Raises:
        NamingError: a malformed FINESS. TrustSpaceError: an unknown field.
    """
    unknown = set(fields) - _ORG_FIELDS
    if unknown:
        raise TrustSpaceError(f"champ(s) inconnu(s) : {', '.join(sorted(unknown))}")
    finess = validate_finess(finess)
    structure = session.execute(select(Structure).where(Structure.finess == finess)
                                ).scalar_one_or_none()
    created = structure is None
    if structure is None:
        structure = Structure(finess=finess, name=fields.get("name", ""))
        session.add(structure)
    for key, value in fields.items():
        setattr(structure, key, value)
    session.flush()
    return structure, created


def display_names(session: Executor, addresses: Collection[str]) -> dict[str, str]:
    """The directory's display name of each of ``addresses`` it knows (local or a peer's),
    by lower-case address, as the directory shows it (``_entry``): what a reader compares a
    sender's display name with."""
    if not addresses:
        return {}
    wanted = sorted({a.lower() for a in addresses})[:500]
    rows = session.execute(
        select(Mailbox.address, Mailbox.display_name, Professional.first_name,
               Professional.last_name, Structure.name)
        .outerjoin(Professional, Mailbox.professional_id == Professional.id)
        .outerjoin(Structure, Mailbox.structure_id == Structure.id)
        .where(Mailbox.address.in_(wanted)))  # addresses are stored lower case
    return {address.lower(): _shown_name(shown, f"{first or ''} {last or ''}".strip(),
                                         org or "", address)
            for address, shown, first, last, org in rows}


def taken_addresses(session: Session, domain: str, startswith: str = "") -> set[str]:
    """Existing addresses at ``domain`` whose local part starts with ``startswith``."""
    pattern = f"{startswith.lower()}%@{domain.lower()}"
    return set(session.execute(select(Mailbox.address).where(Mailbox.address.like(pattern)))
               .scalars())


def new_personal_mailbox(session: Session, professional: Professional, domain: str) -> Mailbox:
    """A pending personal mailbox named by ``personal_address`` (free suffix chosen)."""
    stem = f"{clean_part(professional.first_name)}.{clean_part(professional.last_name)}"
    address = personal_address(professional.first_name, professional.last_name, domain,
                               taken_addresses(session, domain, stem))
    mailbox = Mailbox(address=address, kind=MailboxKind.PERSONAL, professional=professional,
                      display_name=professional.display_name,
                      state=MailboxState.PENDING_VALIDATION)
    session.add(mailbox)
    session.flush()
    return mailbox


def new_organisational_mailbox(session: Session, structure: Structure, prefix: str, name: str,
                               domain: str) -> Mailbox:
    """A pending organisational mailbox ``prefix.name.postalcode@domain`` of ``structure``."""
    stem = f"{clean_part(prefix)}.{clean_part(name)}"
    address = organisational_address(prefix, name, structure.postal_code, domain,
                                     taken_addresses(session, domain, stem))
    mailbox = Mailbox(address=address, kind=MailboxKind.ORGANISATIONAL, structure=structure,
                      display_name=structure.name, state=MailboxState.PENDING_VALIDATION)
    session.add(mailbox)
    session.flush()
    return mailbox


def add_delegation(session: Session, mailbox: Mailbox, professional: Professional,
                   role: Role | str) -> Delegation:
    """Give ``professional`` ``role`` on an organisational mailbox (replacing a former role).

    Raises:
        TrustSpaceError: the mailbox is not a local organisational mailbox.
    """
    if mailbox.kind is not MailboxKind.ORGANISATIONAL or not mailbox.is_local:
        raise TrustSpaceError(
            f"délégation impossible : {mailbox.address} n'est pas une boîte organisationnelle "
            "de cet opérateur", code="not_organisational")
    delegation = session.execute(
        select(Delegation).where(Delegation.mailbox_id == mailbox.id,
                                 Delegation.professional_id == professional.id)
    ).scalar_one_or_none()
    if delegation is None:
        delegation = Delegation(mailbox=mailbox, professional=professional, role=Role(role))
        session.add(delegation)
    else:
        delegation.role = Role(role)
    session.flush()
    return delegation


def remove_delegation(session: Session, mailbox: Mailbox, professional: Professional) -> bool:
    """Withdraw the professional's delegation; False when there was none."""
    delegation = session.execute(
        select(Delegation).where(Delegation.mailbox_id == mailbox.id,
                                 Delegation.professional_id == professional.id)
    ).scalar_one_or_none()
    if delegation is None:
        return False
    mailbox.delegations.remove(delegation)  # delete-orphan cascade deletes the row
    session.flush()
    return True
