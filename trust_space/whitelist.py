"""The MSSanté whitelist (liste blanche): import with a diff, export.

Whitelist XML, namespace ``https://listeblanche.mssante.fr/schema``, any root element::

    <ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">
      <Domaine>
        <Nom>mss.pair.test</Nom>                                         (required)
        <Description>Opérateur pair</Description>
        <DNCertificatOperateur>CN=relay.pair.test,O=Pair,C=FR</DNCertificatOperateur> (req.)
        <ResponsableContact>resp@pair.test</ResponsableContact>
        <SupportContact>support@pair.test</SupportContact>
        <DateMAJ>2024-05-01T10:00:00Z</DateMAJ>                  (ISO 8601 date or date-time)
      </Domaine>
    </ListeBlanche>

DOCTYPE and ENTITY declarations are refused (billion laughs, XXE). Errors carry the line of
the ``Domaine`` element and the element name.
"""

from __future__ import annotations

import pyexpat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from trust_space.errors import ImportFailed, NamingError, RowError
from trust_space.models import Operator, TrustedDomain
from trust_space.naming import check_domain, dn_attribute, normalise_dn

WHITELIST_NS = "https://listeblanche.mssante.fr/schema"
_FIELDS = {  # XML element -> (WhitelistEntry / TrustedDomain attribute, maximum length)
    "Description": ("description", 500),
    "DNCertificatOperateur": ("certificate_dn", 500),
    "ResponsableContact": ("responsible_contact", 254),
    "SupportContact": ("support_contact", 254),
    "DateMAJ": ("updated_at", 0),
}


@dataclass(frozen=True)
class WhitelistEntry:
    """One ``Domaine`` of the whitelist: a peer operator's domain and its relay certificate."""

    domain: str
    certificate_dn: str
    description: str = ""
    responsible_contact: str = ""
    support_contact: str = ""
    updated_at: datetime | None = None

    @property
    def operator_name(self) -> str:
        """The operator's name, from the DN's O= (else CN=)."""
        return (dn_attribute(self.certificate_dn, "O") or dn_attribute(self.certificate_dn, "CN")
                or self.certificate_dn)


@dataclass(frozen=True)
class WhitelistDiff:
    """What an import changes: domains added, removed, and changed (with the XML element names
    of the fields that differ); ``ignored`` lists entries for our own domains."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class _Forbidden(Exception):
    """Raised by the expat pre-scan on a DOCTYPE or ENTITY declaration."""


def _forbid(*_args: object) -> Any:
    raise _Forbidden


def _scan(data: bytes) -> list[tuple[bool, int]]:
    """Refuse DTDs and entities before any tree is built (what defusedxml does with expat).

    Returns, for each ``Domaine`` element in document order, (in our namespace?, its line).
    """
    parser = pyexpat.ParserCreate(namespace_separator="}")
    lines: list[tuple[bool, int]] = []
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid

    def start(name: str, _attrs: object) -> None:
        if name.rpartition("}")[2] == "Domaine":
            lines.append((name == WHITELIST_NS + "}Domaine", parser.CurrentLineNumber))

    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except _Forbidden:
        raise ImportFailed([RowError(parser.CurrentLineNumber, "", "déclaration DOCTYPE ou "
                                     "ENTITY refusée (risque XXE / billion laughs)")]) from None
    except pyexpat.ExpatError as exc:
        raise ImportFailed([RowError(exc.lineno, "", "XML mal formé : "
                                     + pyexpat.ErrorString(exc.code))]) from None
    return lines


def _text(element: ET.Element, name: str) -> str:
    child = element.find(f"{{{WHITELIST_NS}}}{name}")
    if child is None:
        child = element.find(name)
    return (child.text or "").strip() if child is not None else ""


def _date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise NamingError("date invalide", reason="date invalide (attendu ISO 8601, "
                                                  "AAAA-MM-JJ ou AAAA-MM-JJTHH:MM:SSZ)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _checked(line: int, tag: str, raw: str, check: Callable[[str], Any],
             errors: list[RowError], *, required: bool = True) -> Any:
    if not raw:
        if required:
            errors.append(RowError(line, tag, "élément obligatoire manquant"))
        return None
    try:
        return check(raw)
    except NamingError as exc:
        errors.append(RowError(line, tag, exc.reason))
        return None


def _entry_of(element: ET.Element, line: int, errors: list[RowError]) -> WhitelistEntry | None:
    before = len(errors)
    values: dict[str, Any] = {attr: _text(element, tag) for tag, (attr, _) in _FIELDS.items()}
    for tag, (attr, max_len) in _FIELDS.items():
        if max_len and len(values[attr]) > max_len:
            errors.append(RowError(line, tag, f"au plus {max_len} caractères"))
    values["domain"] = _checked(line, "Nom", _text(element, "Nom"), check_domain, errors)
    values["certificate_dn"] = _checked(line, "DNCertificatOperateur", values["certificate_dn"],
                                        normalise_dn, errors)
    values["updated_at"] = _checked(line, "DateMAJ", values["updated_at"], _date, errors,
                                    required=False)
    return None if len(errors) > before else WhitelistEntry(**values)


def parse_whitelist(data: bytes) -> list[WhitelistEntry]:
    """The entries of a whitelist file, all checked (format in the module docstring).

    Raises:
        ImportFailed: malformed XML, a DTD or entity, a ``Domaine`` outside the namespace, none
            at all, a missing ``Nom`` or ``DNCertificatOperateur``, a bad domain, DN or date,
            a domain listed twice.
    """
    scanned = _scan(data)
    root = ET.fromstring(data)
    errors = [RowError(line, "Domaine", f"élément hors de l'espace de noms {WHITELIST_NS}")
              for in_ns, line in scanned if not in_ns]
    if not scanned:
        errors.append(RowError(0, "Domaine", "aucun élément Domaine (liste vide refusée)"))
    lines = [line for in_ns, line in scanned if in_ns]
    entries, seen = [], dict[str, int]()
    for element, line in zip(root.iter(f"{{{WHITELIST_NS}}}Domaine"), lines, strict=True):
        entry = _entry_of(element, line, errors)
        if entry is None:
            continue
        first = seen.setdefault(entry.domain, line)
        if first != line:
            errors.append(RowError(line, "Nom", f"domaine en double (déjà ligne {first})"))
        entries.append(entry)
    if errors:
        raise ImportFailed(errors)
    return entries


def _plan(session: Session, entries: list[WhitelistEntry], replace: bool,
          local_domains: Iterable[str]) -> tuple[WhitelistDiff, list[WhitelistEntry]]:
    own = {d.lower() for d in local_domains}
    kept = [e for e in entries if e.domain not in own]
    current = {td.domain: td for td in session.execute(select(TrustedDomain)).scalars()}
    added, changed = [], {}
    for entry in kept:
        trusted = current.get(entry.domain)
        if trusted is None:
            added.append(entry.domain)
            continue
        fields = tuple(tag for tag, (attr, _) in _FIELDS.items()
                       if getattr(trusted, attr) != getattr(entry, attr))
        if fields:
            changed[entry.domain] = fields
    listed = {e.domain for e in entries}
    removed = sorted(d for d in current if d not in listed) if replace else []
    ignored = tuple(e.domain for e in entries if e.domain in own)
    return WhitelistDiff(tuple(added), tuple(removed), changed, ignored), kept


def diff_whitelist(session: Session, data: bytes, *, replace: bool = True,
                   local_domains: Iterable[str] = ()) -> WhitelistDiff:
    """What ``import_whitelist`` would change, without changing anything (dry run)."""
    return _plan(session, parse_whitelist(data), replace, local_domains)[0]


def import_whitelist(session: Session, data: bytes, *, replace: bool = True,
                     local_domains: Iterable[str] = ()) -> WhitelistDiff:
    """Load the whitelist: upsert ``Operator`` by certificate DN (named after its O=, else CN=)
    and ``TrustedDomain`` by domain; with ``replace`` remove domains absent from the file.

    Entries for ``local_domains`` (ours) are ignored. ``relay_host``/``relay_port`` of known
    domains are kept (routing is not in the file). Operators without domains are kept, so
    their peer mailboxes stay known (though no longer trusted).

    Raises:
        ImportFailed: see ``parse_whitelist``; nothing is changed.
    """
    diff, entries = _plan(session, parse_whitelist(data), replace, local_domains)
    operators = {op.certificate_dn: op for op in session.execute(select(Operator)).scalars()}
    current = {td.domain: td for td in session.execute(select(TrustedDomain)).scalars()}
    for entry in entries:
        operator = operators.get(entry.certificate_dn)
        if operator is None:
            operator = operators[entry.certificate_dn] = Operator(
                name=entry.operator_name, certificate_dn=entry.certificate_dn)
            session.add(operator)
        operator.responsible_contact = entry.responsible_contact
        operator.support_contact = entry.support_contact
        trusted = current.get(entry.domain)
        if trusted is None:
            trusted = TrustedDomain(domain=entry.domain)
            session.add(trusted)
        trusted.operator = operator
        for attr, _ in _FIELDS.values():
            setattr(trusted, attr, getattr(entry, attr))
    for domain in diff.removed:
        session.delete(current[domain])
    session.flush()
    return diff


def local_entry(domain: str, operator_dn: str, *, description: str = "",
                responsible_contact: str = "", support_contact: str = "",
                updated_at: datetime | None = None) -> WhitelistEntry:
    """Our own whitelist entry, for a peer to import (``updated_at`` defaults to now)."""
    return WhitelistEntry(
        domain=check_domain(domain), certificate_dn=normalise_dn(operator_dn),
        description=description, responsible_contact=responsible_contact,
        support_contact=support_contact,
        updated_at=(updated_at or utcnow()).astimezone(UTC).replace(microsecond=0))


def render_whitelist(entries: Iterable[WhitelistEntry]) -> bytes:
    """A whitelist file (UTF-8, root ``ListeBlanche``) that ``import_whitelist`` reads back."""
    def sub(parent: ET.Element, tag: str, text: str) -> None:
        ET.SubElement(parent, f"{{{WHITELIST_NS}}}{tag}").text = text

    root = ET.Element(f"{{{WHITELIST_NS}}}ListeBlanche")
    for entry in entries:
        element = ET.SubElement(root, f"{{{WHITELIST_NS}}}Domaine")
        sub(element, "Nom", entry.domain)
        for tag, (attr, _) in _FIELDS.items():
            value = getattr(entry, attr)
            if isinstance(value, datetime):
                sub(element, tag, value.astimezone(UTC).isoformat(timespec="seconds")
                    .replace("+00:00", "Z"))
            elif value:
                sub(element, tag, value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True,
                       default_namespace=WHITELIST_NS) + b"\n"


def export_whitelist(session: Session, *, own: Iterable[WhitelistEntry] = (),
                     include_peers: bool = True) -> bytes:
    """Our entries (``local_entry``) followed, with ``include_peers``, by every trusted
    domain in the database, as a whitelist file."""
    entries = list(own)
    if include_peers:
        for td in session.execute(select(TrustedDomain).order_by(TrustedDomain.domain)).scalars():
            entries.append(WhitelistEntry(
                domain=td.domain, certificate_dn=td.certificate_dn, description=td.description,
                responsible_contact=td.responsible_contact, support_contact=td.support_contact,
                updated_at=td.updated_at))
    return render_whitelist(entries)
