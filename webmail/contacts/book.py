"""The rules of the personal address book (``webmail.contacts``).

Only addresses that can be written to are kept: a published mailbox of this operator or an
address of a whitelisted peer domain (``trust_space.policy.may_receive``, the rule the gateway
applies at RCPT), so that a contact never leads to a refused message. Everything is scoped to
one account: a contact or group id of somebody else is "not found", never "forbidden".

vCard (RFC 2426, 3.0, which Thunderbird, Roundcube, Outlook and Google all read) is parsed and
written by ``vobject`` only: one parser for the format.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import vobject
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from core.db import utcnow
from webmail.contacts.models import Contact, ContactGroup, ContactGroupMember
from webmail.mail.drafting import refused_recipients, split_addresses

MAX_CONTACTS = 5000
MAX_GROUPS = 200
MAX_NAME = 200
MAX_NOTE = 1000
MAX_GROUP_NAME = 80
MAX_IMPORT_BYTES = 1024 * 1024  # 5,000 cards are about 750 kB
SUGGESTIONS = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_UID_NAMESPACE = uuid.UUID("6f1c1c6e-8b8d-4b8a-9a55-0a6d3b1c2e17")


class ContactError(ValueError):
    """A request the address book refuses; ``str()`` is the French sentence to show."""


class NotFound(LookupError):
    """No such contact or group for this account."""


@dataclass(frozen=True)
class Entry:
    """A contact as the pages show it."""

    id: int
    name: str
    address: str
    note: str
    groups: tuple[str, ...]
    group_ids: tuple[int, ...]


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    size: int


@dataclass
class ImportReport:
    """What ``import_vcard`` did, for the French summary."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    outside: list[str] = field(default_factory=list)  # addresses not reachable, with why
    unreadable: int = 0
    without_address: int = 0
    groups_created: int = 0
    over_limit: int = 0


def clean_text(value: str, limit: int) -> str:
    """One line of text: control characters become spaces, trimmed, at most ``limit``."""
    return " ".join(_CONTROL.sub(" ", value or "").split())[:limit]


def clean_note(value: str) -> str:
    """A note keeps its line breaks (normalised), no other control character."""
    lines = (value or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    text = "\n".join(_CONTROL.sub(" ", line).rstrip() for line in lines).strip()
    return text[:MAX_NOTE]


def checked_address(db: Session, text: str, local_domains: Collection[str]) -> str:
    """The address typed, lower case, if it can be written to; else ``ContactError``."""
    good, bad = split_addresses(text)
    if bad or len(good) != 1:
        raise ContactError("Indiquez une seule adresse de messagerie valide "
                           "(exemple : prenom.nom@domaine.fr).")
    address = good[0]
    if len(address) > 254:
        raise ContactError("Cette adresse est trop longue.")
    refused = refused_recipients(db, [address], set(local_domains))
    if refused:
        raise ContactError(f"{address} : {refused[address]}. Seules les adresses auxquelles "
                           "vous pouvez écrire sont enregistrées.")
    return address


def contacts(db: Session, account_id: int, *, text: str = "", group_id: int | None = None,
             offset: int = 0, limit: int = 100) -> tuple[list[Entry], int]:
    """A page of the account's contacts sorted by name then address, and how many match."""
    query = select(Contact).where(Contact.account_id == account_id)
    if text:
        query = query.where(or_(Contact.name.icontains(text, autoescape=True),
                                Contact.address.icontains(text, autoescape=True)))
    if group_id is not None:
        query = query.where(Contact.id.in_(select(ContactGroupMember.contact_id).where(
            ContactGroupMember.group_id == group_id)))
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.scalars(query.order_by(func.lower(Contact.name), Contact.address)
                      .offset(offset).limit(limit)).all()
    return _entries(db, rows), total


def _entries(db: Session, rows: Sequence[Contact]) -> list[Entry]:
    ids = [c.id for c in rows]
    memberships: dict[int, list[tuple[int, str]]] = {i: [] for i in ids}
    if ids:
        for contact_id, group_id, name in db.execute(
                select(ContactGroupMember.contact_id, ContactGroup.id, ContactGroup.name)
                .join(ContactGroup, ContactGroup.id == ContactGroupMember.group_id)
                .where(ContactGroupMember.contact_id.in_(ids)).order_by(ContactGroup.name)):
            memberships[contact_id].append((group_id, name))
    return [Entry(c.id, c.name, c.address, c.note,
                  tuple(n for _, n in memberships[c.id]), tuple(g for g, _ in memberships[c.id]))
            for c in rows]


def contact(db: Session, account_id: int, contact_id: int) -> Entry:
    row = db.get(Contact, contact_id)
    if row is None or row.account_id != account_id:
        raise NotFound(contact_id)
    return _entries(db, [row])[0]


def groups(db: Session, account_id: int) -> list[Group]:
    """The account's groups with their sizes, by name."""
    size = (select(func.count()).where(ContactGroupMember.group_id == ContactGroup.id)
            .correlate(ContactGroup).scalar_subquery())
    return [Group(i, n, s) for i, n, s in db.execute(
        select(ContactGroup.id, ContactGroup.name, size)
        .where(ContactGroup.account_id == account_id).order_by(func.lower(ContactGroup.name)))]


def group(db: Session, account_id: int, group_id: int) -> Group:
    for g in groups(db, account_id):
        if g.id == group_id:
            return g
    raise NotFound(group_id)


def add(db: Session, account_id: int, *, name: str, address: str, note: str = "",
        group_ids: Iterable[int] = (), local_domains: Collection[str]) -> Contact:
    """A new contact (``ContactError``: not reachable, already there, book full)."""
    address = checked_address(db, address, local_domains)
    if _find(db, account_id, address) is not None:
        raise ContactError(f"{address} est déjà dans vos contacts.")
    if _count(db, account_id) >= MAX_CONTACTS:
        raise ContactError(f"Votre carnet est plein ({MAX_CONTACTS} contacts) : supprimez-en "
                           "avant d’en ajouter.")
    row = Contact(account_id=account_id, name=clean_text(name, MAX_NAME), address=address,
                  note=clean_note(note))
    db.add(row)
    db.flush()
    _set_groups(db, account_id, row.id, group_ids)
    return row


def add_if_absent(db: Session, account_id: int, *, name: str, address: str,
                  local_domains: Collection[str]) -> tuple[Contact, bool]:
    """"Ajouter aux contacts" from a message or the directory: (contact, created). A second
    click (or a double click) finds the first one instead of failing."""
    checked = checked_address(db, address, local_domains)
    found = _find(db, account_id, checked)
    if found is not None:
        return found, False
    return add(db, account_id, name=name, address=checked, local_domains=local_domains), True


def update(db: Session, account_id: int, contact_id: int, *, name: str, address: str,
           note: str, group_ids: Iterable[int], local_domains: Collection[str]) -> Contact:
    row = db.get(Contact, contact_id)
    if row is None or row.account_id != account_id:
        raise NotFound(contact_id)
    checked = checked_address(db, address, local_domains)
    other = _find(db, account_id, checked)
    if other is not None and other.id != row.id:
        raise ContactError(f"{checked} est déjà dans vos contacts.")
    row.name, row.address, row.note = clean_text(name, MAX_NAME), checked, clean_note(note)
    row.updated_at = utcnow()
    _set_groups(db, account_id, row.id, group_ids)
    return row


def remove(db: Session, account_id: int, contact_id: int) -> str:
    """Delete a contact; returns its address (for the message and the audit)."""
    row = db.get(Contact, contact_id)
    if row is None or row.account_id != account_id:
        raise NotFound(contact_id)
    db.execute(delete(ContactGroupMember).where(ContactGroupMember.contact_id == row.id))
    db.delete(row)
    return row.address


def create_group(db: Session, account_id: int, name: str) -> ContactGroup:
    name = clean_text(name, MAX_GROUP_NAME)
    if not name:
        raise ContactError("Donnez un nom au groupe.")
    if _group_named(db, account_id, name) is not None:
        raise ContactError(f"Vous avez déjà un groupe « {name} ».")
    if len(groups(db, account_id)) >= MAX_GROUPS:
        raise ContactError(f"Vous avez déjà {MAX_GROUPS} groupes : supprimez-en un d’abord.")
    row = ContactGroup(account_id=account_id, name=name)
    db.add(row)
    db.flush()
    return row


def rename_group(db: Session, account_id: int, group_id: int, name: str) -> ContactGroup:
    row = _own_group(db, account_id, group_id)
    name = clean_text(name, MAX_GROUP_NAME)
    if not name:
        raise ContactError("Donnez un nom au groupe.")
    other = _group_named(db, account_id, name)
    if other is not None and other.id != row.id:
        raise ContactError(f"Vous avez déjà un groupe « {name} ».")
    row.name = name
    return row


def remove_group(db: Session, account_id: int, group_id: int) -> str:
    """Delete a group (its contacts stay); returns its name."""
    row = _own_group(db, account_id, group_id)
    db.execute(delete(ContactGroupMember).where(ContactGroupMember.group_id == row.id))
    db.delete(row)
    return row.name


def group_addresses(db: Session, account_id: int, group_id: int) -> list[str]:
    """Every address of a group, for "Écrire au groupe"."""
    _own_group(db, account_id, group_id)
    return list(db.scalars(select(Contact.address).join(
        ContactGroupMember, ContactGroupMember.contact_id == Contact.id)
        .where(ContactGroupMember.group_id == group_id).order_by(Contact.address)))


def suggest(db: Session, account_id: int, text: str, limit: int = SUGGESTIONS
            ) -> list[dict[str, str]]:
    """The recipient fields' suggestions from the address book: groups first (their whole
    list of addresses), then contacts; same shape as the directory's suggestions."""
    text = clean_text(text, 100)
    if len(text) < 2:
        return []
    found: list[dict[str, str]] = []
    for g in db.execute(select(ContactGroup.id, ContactGroup.name).where(
            ContactGroup.account_id == account_id,
            ContactGroup.name.icontains(text, autoescape=True))
            .order_by(ContactGroup.name).limit(limit)):
        members = group_addresses(db, account_id, g.id)
        if members:
            found.append({"address": ", ".join(members), "name": g.name,
                          "label": f"Groupe « {g.name} »",
                          "detail": f"{len(members)} adresse{'s' if len(members) > 1 else ''}"})
    rows, _ = contacts(db, account_id, text=text, limit=limit)
    found += [{"address": e.address, "name": e.name or e.address, "detail": "Mes contacts"}
              for e in rows]
    return found[:limit]


def export_vcard(db: Session, account_id: int) -> str:
    """Every contact as vCard 3.0 (CRLF line ends, folded by vobject), groups as CATEGORIES."""
    rows, _ = contacts(db, account_id, limit=MAX_CONTACTS)
    cards = []
    for entry in rows:
        card = vobject.vCard()
        card.add("version").value = "3.0"
        card.add("uid").value = f"urn:uuid:{uuid.uuid5(_UID_NAMESPACE, entry.address)}"
        shown = entry.name or entry.address
        card.add("fn").value = shown
        given, _, family = shown.rpartition(" ")  # "Marie Martin": Martin, Marie
        card.add("n").value = vobject.vcard.Name(family=family, given=given)
        mail = card.add("email")
        mail.value = entry.address
        mail.type_param = "INTERNET"
        if entry.note:
            card.add("note").value = entry.note
        if entry.groups:
            card.add("categories").value = list(entry.groups)
        cards.append(card.serialize())
    return "".join(cards)


def import_vcard(db: Session, account_id: int, data: bytes, *,
                 local_domains: Collection[str]) -> ImportReport:
    """Add the addresses of a .vcf file (``ContactError`` when the file is not a vCard file
    at all). A card with several e-mail addresses gives one contact per reachable address;
    an address already known keeps its contact (its empty name or note is filled in);
    CATEGORIES become groups. Unreadable cards are counted, the others still imported."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ContactError("Fichier trop volumineux (1 Mo au plus).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")  # Outlook's exports
        except UnicodeDecodeError:
            raise ContactError("Ce fichier n’est pas un carnet d’adresses vCard (.vcf) "
                               "lisible.") from None
    if "BEGIN:VCARD" not in text.upper():
        raise ContactError("Ce fichier n’est pas un carnet d’adresses vCard (.vcf) : aucune "
                           "fiche « BEGIN:VCARD » trouvée.")
    report = ImportReport()
    for chunk in _cards(text):
        try:
            card = vobject.readOne(chunk)
        except Exception:  # vobject raises ParseError, ValueError, and worse on bad input
            report.unreadable += 1
            continue
        _import_card(db, account_id, card, report, local_domains)
    return report


def _cards(text: str) -> Iterable[str]:
    """Each BEGIN:VCARD … END:VCARD block on its own, so that one bad card does not take the
    rest of the file with it."""
    block: list[str] = []
    depth = 0
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        upper = line.strip().upper()
        if upper == "BEGIN:VCARD":
            depth += 1
        if depth:
            block.append(line)
        if upper == "END:VCARD" and depth:
            depth -= 1
            if depth == 0:
                yield "\r\n".join(block) + "\r\n"
                block = []


def _import_card(db: Session, account_id: int, card: object, report: ImportReport,
                 local_domains: Collection[str]) -> None:
    contents = getattr(card, "contents", {})
    name = ""
    for key in ("fn", "n"):
        if contents.get(key):
            name = str(contents[key][0].value).strip()
            break
    note = str(contents["note"][0].value) if contents.get("note") else ""
    categories: list[str] = []
    for item in contents.get("categories", []):
        value = item.value if isinstance(item.value, list) else [item.value]
        categories += [clean_text(str(v), MAX_GROUP_NAME) for v in value if str(v).strip()]
    addresses = [str(e.value) for e in contents.get("email", [])]
    if not addresses:
        report.without_address += 1
        return
    for address in addresses:
        try:
            checked = checked_address(db, address, local_domains)
        except ContactError:
            report.outside.append(clean_text(address, 254))
            continue
        row = _find(db, account_id, checked)
        if row is None:
            if _count(db, account_id) >= MAX_CONTACTS:
                report.over_limit += 1
                continue
            row = add(db, account_id, name=name, address=checked, note=note,
                      local_domains=local_domains)
            report.added += 1
        elif (not row.name and name) or (not row.note and note):
            row.name = row.name or clean_text(name, MAX_NAME)
            row.note = row.note or clean_note(note)
            row.updated_at = utcnow()
            report.updated += 1
        else:
            report.unchanged += 1
        for category in categories:
            target = _group_named(db, account_id, category)
            if target is None:
                try:
                    target = create_group(db, account_id, category)
                except ContactError:
                    continue  # too many groups: the contact is kept without it
                report.groups_created += 1
            if db.get(ContactGroupMember, (target.id, row.id)) is None:
                db.add(ContactGroupMember(group_id=target.id, contact_id=row.id))
                db.flush()


def known(db: Session, account_id: int, address: str) -> bool:
    """True when ``address`` is already in the account's book."""
    return _find(db, account_id, address) is not None


def _find(db: Session, account_id: int, address: str) -> Contact | None:
    return db.scalar(select(Contact).where(Contact.account_id == account_id,
                                           Contact.address == address.lower()))


def _count(db: Session, account_id: int) -> int:
    return db.scalar(select(func.count()).where(Contact.account_id == account_id)) or 0


def _group_named(db: Session, account_id: int, name: str) -> ContactGroup | None:
    return db.scalar(select(ContactGroup).where(ContactGroup.account_id == account_id,
                                                func.lower(ContactGroup.name) == name.lower()))


def _own_group(db: Session, account_id: int, group_id: int) -> ContactGroup:
    row = db.get(ContactGroup, group_id)
    if row is None or row.account_id != account_id:
        raise NotFound(group_id)
    return row


def _set_groups(db: Session, account_id: int, contact_id: int, group_ids: Iterable[int]) -> None:
    wanted = {g for g in group_ids}
    own = {g.id for g in groups(db, account_id)}
    if wanted - own:
        raise NotFound(sorted(wanted - own)[0])
    db.execute(delete(ContactGroupMember).where(ContactGroupMember.contact_id == contact_id))
    for group_id in sorted(wanted):
        db.add(ContactGroupMember(group_id=group_id, contact_id=contact_id))
    db.flush()
