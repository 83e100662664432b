"""The published directory as a FHIR R4 ``Bundle`` (type ``collection``), and its import from a
peer operator.

Shape, close to the ANS "Annuaire Santé" guide (``as-mailbox-mss``):

- ``Practitioner``: ``identifier`` IDNPS (system ``urn:oid:1.2.250.1.71.4.2.1``, value "8" + RPPS
  or "0" + ADELI) and, when known, RPPS (``https://rpps.esante.gouv.fr``); ``name``; ``telecom``:
  its personal mailboxes and, only when the holder published it, the mobile number.
- ``PractitionerRole`` per personal mailbox: practitioner, organization, ``code`` = profession,
  ``specialty``.
- ``Organization`` per structure: FINESS (``urn:oid:1.2.250.1.71.4.2.2``), name, address,
  ``telecom``: its organisational and applicative mailboxes.

A mailbox ``telecom`` is ``{"system": "email", "value": address, "extension": [...]}`` with the
FR Core e-mail type (``MSSANTE``), the ANS mailbox metadata (``type`` PER / ORG / APP,
``description``, ``digitization``, ``listeRouge``) and, when the mailbox has one, its S/MIME
certificate in mss's own extension ``EXT_SMIME`` (``valueBase64Binary`` = the DER, i.e. the PEM
body). The national directory feed (``trust_space.annuaire``) sends the same entry, without it.
Only published mailboxes off the liste rouge are exported; mailboxes attached to neither a
professional nor a structure are left out (there is no resource to carry them).
"""

from __future__ import annotations

import base64
import binascii
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from trust_space.directory import find_professional, published_mailboxes
from trust_space.errors import ImportFailed, RowError
from trust_space.models import (
    Mailbox,
    MailboxKind,
    MailboxState,
    Operator,
    Professional,
    Structure,
    TrustedDomain,
)
from trust_space.naming import parse_national_id

OID_IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
OID_FINESS = "urn:oid:1.2.250.1.71.4.2.2"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
EXT_EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
EMAIL_TYPE_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie")
EXT_MAILBOX = ("https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/"
               "as-ext-mailbox-mss-metadata")
BAL_TYPE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
EXT_SMIME = "https://mss.invalid/fhir/StructureDefinition/mailbox-smime-certificate"
_BAL_TYPES = {MailboxKind.PERSONAL: "PER", MailboxKind.ORGANISATIONAL: "ORG",
              MailboxKind.APPLICATIVE: "APP"}
_KINDS = {code: kind for kind, code in _BAL_TYPES.items()}
_ADDRESS = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9.-]+")


def _pem_body(pem: str) -> str:
    return "".join(line.strip() for line in pem.strip().splitlines()
                   if line.strip() and not line.startswith("-----"))


def _pem(der_b64: str) -> str:
    base64.b64decode(der_b64, validate=True)  # raises binascii.Error when not base64
    body = "\n".join(textwrap.wrap(der_b64, 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def mailbox_telecom(mailbox: Mailbox, *, certificate: bool = True) -> dict[str, Any]:
    """The FHIR ContactPoint of a mailbox (see the module docstring). ``certificate`` False
    leaves out mss's own S/MIME extension (the national directory does not know it)."""
    meta: list[dict[str, Any]] = [
        {"url": "type", "valueCodeableConcept": {"coding": [
            {"system": BAL_TYPE_SYSTEM, "code": _BAL_TYPES[mailbox.kind]}]}},
    ]
    if mailbox.display_name:  # a FHIR string is never empty
        meta.append({"url": "description", "valueString": mailbox.display_name})
    meta += [
        {"url": "digitization", "valueBoolean": bool(mailbox.dematerialisation)},
        # "true : la BAL ne doit pas être publiée" (ANS, API MSS, modèles logiques des BAL)
        {"url": "listeRouge", "valueBoolean": bool(mailbox.liste_rouge)},
    ]
    extension: list[dict[str, Any]] = [
        {"url": EXT_EMAIL_TYPE, "valueCoding": {"system": EMAIL_TYPE_SYSTEM, "code": "MSSANTE"}},
        {"url": EXT_MAILBOX, "extension": meta},
    ]
    if certificate and mailbox.smime_cert_pem:
        extension.append({"url": EXT_SMIME, "valueBase64Binary": _pem_body(mailbox.smime_cert_pem)})
    return {"extension": extension, "system": "email", "value": mailbox.address}


def _practitioner(pro: Professional) -> dict[str, Any]:
    identifier: list[dict[str, Any]] = []
    if pro.national_id:
        identifier.append({"system": OID_IDNPS, "value": pro.national_id, "type": {
            "coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                        "code": "IDNPS"}]}})
    if pro.rpps:
        identifier.append({"system": RPPS_SYSTEM, "value": pro.rpps})
    name: dict[str, Any] = {"family": pro.last_name, "given": [pro.first_name]}
    if pro.civility:
        name["prefix"] = [pro.civility]
    return {"resourceType": "Practitioner", "id": f"pra-{pro.national_id or pro.id}",
            "active": True, "identifier": identifier, "name": [name], "telecom": []}


def _organization(org: Structure) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization", "id": f"org-{org.finess or org.id}", "active": True,
        "name": org.name, "telecom": [],
        "address": [{"line": [org.address] if org.address else [], "postalCode": org.postal_code,
                     "city": org.city, "country": "FR"}],
    }
    if org.finess:
        resource["identifier"] = [{"system": OID_FINESS, "value": org.finess}]
    return resource


def _role(mailbox: Mailbox, pro: Professional, practitioner: dict[str, Any]) -> dict[str, Any]:
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole", "id": f"rol-{mailbox.id}", "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner['id']}"},
        "code": [{"text": pro.profession}],
    }
    if pro.specialty:
        role["specialty"] = [{"text": pro.specialty}]
    if mailbox.structure is not None:
        org_id = _organization(mailbox.structure)["id"]
        role["organization"] = {"reference": f"Organization/{org_id}"}
    return role


def export_directory(session: Session, *, domain: str) -> dict[str, Any]:
    """Our published directory for ``domain``: local, published, not liste rouge mailboxes."""
    practitioners: dict[int, dict[str, Any]] = {}
    organizations: dict[int, dict[str, Any]] = {}
    roles: list[dict[str, Any]] = []
    for mailbox in published_mailboxes(session):
        if not mailbox.is_local or mailbox.domain != domain.lower():
            continue
        pro, org = mailbox.professional, mailbox.structure
        if org is not None:
            organizations.setdefault(org.id, _organization(org))
        if pro is not None and (mailbox.kind is MailboxKind.PERSONAL or org is None):
            practitioner = practitioners.setdefault(pro.id, _practitioner(pro))
            practitioner["telecom"].append(mailbox_telecom(mailbox))
            mobile = {"system": "phone", "use": "mobile", "value": pro.mobile}
            if mailbox.mobile_published and pro.mobile and mobile not in practitioner["telecom"]:
                practitioner["telecom"].append(mobile)
            if mailbox.kind is MailboxKind.PERSONAL:
                roles.append(_role(mailbox, pro, practitioner))
        elif org is not None:
            organizations[org.id]["telecom"].append(mailbox_telecom(mailbox))
    resources = [*practitioners.values(), *roles, *organizations.values()]
    return {
        "resourceType": "Bundle", "type": "collection",
        "timestamp": utcnow().isoformat(timespec="seconds"),
        "entry": [{"fullUrl": f"https://{domain}/fhir/{r['resourceType']}/{r['id']}",
                   "resource": r} for r in resources],
    }


# ------------------------------------------------------------------ import from a peer
@dataclass(frozen=True)
class DirectoryImport:
    """What ``import_directory`` did to the peer's mailboxes."""

    created: int = 0
    updated: int = 0
    removed: int = 0


@dataclass
class _PeerBox:
    address: str
    kind: MailboxKind
    display_name: str
    cert_pem: str | None
    holder: tuple[str, dict[str, Any]]  # see _holder


def _ext(items: list[dict[str, Any]], url: str) -> dict[str, Any] | None:
    return next((e for e in items if e.get("url") == url), None)


def _peer_boxes(resource: dict[str, Any], where: str, roles: dict[str, dict[str, Any]],
                errors: list[RowError]) -> Iterator[_PeerBox]:
    is_org = resource.get("resourceType") == "Organization"
    for telecom in resource.get("telecom", []):
        if telecom.get("system") != "email" or not telecom.get("value"):
            continue
        extension = telecom.get("extension", [])
        meta = (_ext(extension, EXT_MAILBOX) or {}).get("extension", [])
        codes = (_ext(meta, "type") or {}).get("valueCodeableConcept", {}).get("coding") or [{}]
        kind = _KINDS.get(codes[0].get("code", ""),
                          MailboxKind.ORGANISATIONAL if is_org else MailboxKind.PERSONAL)
        description = (_ext(meta, "description") or {}).get("valueString", "")
        cert = (_ext(extension, EXT_SMIME) or {}).get("valueBase64Binary")
        try:
            pem = _pem(cert) if cert else None
        except (binascii.Error, ValueError):
            errors.append(RowError(0, where, "certificat S/MIME illisible (base64 attendu)"))
            continue
        name = resource.get("name")
        if isinstance(name, list) and name:
            name = " ".join([*name[0].get("given", []), name[0].get("family", "")]).strip()
        yield _PeerBox(str(telecom["value"]).strip().lower(), kind,
                       str(description or name or ""), pem, _holder(resource, roles))


def _identifier(resource: dict[str, Any], system: str) -> str:
    return str(next((i.get("value") for i in resource.get("identifier", [])
                     if i.get("system") == system), "") or "")


def _first(items: Any) -> dict[str, Any]:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _holder(res: dict[str, Any], roles: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Plain fields of the Structure or Professional a peer mailbox belongs to, read from the
    (untrusted) resource before anything is written."""
    if res.get("resourceType") == "Organization":
        finess = _identifier(res, OID_FINESS)
        if not (len(finess) == 9 and finess.isascii() and finess.isdigit()):
            return "", {}
        address = _first(res.get("address"))
        return "structure", {"finess": finess, "name": str(res.get("name", ""))[:200],
                             "postal_code": str(address.get("postalCode", ""))[:5],
                             "city": str(address.get("city", ""))[:120]}
    parsed = parse_national_id(_identifier(res, OID_IDNPS))
    if parsed is None:
        return "", {}
    name, role = _first(res.get("name")), roles.get(f"Practitioner/{res.get('id')}", {})
    return "professional", {
        parsed[0]: parsed[1], "first_name": " ".join(map(str, name.get("given", [])))[:100],
        "last_name": str(name.get("family", ""))[:100],
        "profession": str(_first(role.get("code")).get("text", ""))[:100],
        "specialty": str(_first(role.get("specialty")).get("text", ""))[:100]}


def _peer_holder(session: Session, box: _PeerBox) -> tuple[Professional | None, Structure | None]:
    """The local Professional / Structure rows a peer mailbox belongs to, created when unknown
    (never modified: the peer does not overwrite what we know)."""
    kind, fields = box.holder
    if kind == "structure":
        found = session.execute(select(Structure).where(Structure.finess == fields["finess"])
                                ).scalar_one_or_none()
        if found is None:
            found = Structure(**fields)
            session.add(found)
        return None, found
    if kind == "professional":
        pro = find_professional(session, rpps=fields.get("rpps"), adeli=fields.get("adeli"))
        if pro is None:
            pro = Professional(**fields)
            session.add(pro)
        return pro, None
    return None, None


def import_directory(session: Session, bundle: dict[str, Any], *, operator: Operator,
                     replace: bool = True) -> DirectoryImport:
    """Record a peer operator's published mailboxes (``operator_id`` set, state published,
    S/MIME certificate when given); with ``replace``, forget its mailboxes absent from
    ``bundle``.

    Raises:
        ImportFailed: not a Bundle, a mailbox outside the operator's whitelisted domains, an
            address that is one of ours or another operator's, an unreadable certificate.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ImportFailed([RowError(0, "resourceType", "un Bundle FHIR est attendu")])
    errors: list[RowError] = []
    try:  # a peer's JSON is untrusted input: any shape error is an import error
        resources = [e.get("resource", {}) for e in bundle.get("entry", [])]
        roles = {r["practitioner"]["reference"]: r for r in resources
                 if r.get("resourceType") == "PractitionerRole" and "practitioner" in r}
        boxes = [box for i, r in enumerate(resources, start=1)
                 if r.get("resourceType") in ("Practitioner", "Organization")
                 for box in _peer_boxes(r, f"entry[{i}]", roles, errors)]
    except (AttributeError, TypeError, KeyError, IndexError):
        raise ImportFailed([RowError(0, "entry", "Bundle FHIR mal formé")]) from None
    domains = set(session.execute(select(TrustedDomain.domain).where(
        TrustedDomain.operator_id == operator.id)).scalars())
    existing = {m.address: m for m in session.execute(
        select(Mailbox).where(Mailbox.address.in_([b.address for b in boxes]))).scalars()}
    seen: set[str] = set()
    for box in boxes:
        mailbox = existing.get(box.address)
        if not _ADDRESS.fullmatch(box.address) or len(box.address) > 254:
            errors.append(RowError(0, box.address[:80], "adresse invalide"))
        if box.address in seen:
            errors.append(RowError(0, box.address, "adresse en double dans l'annuaire"))
        seen.add(box.address)
        if box.address.rpartition("@")[2] not in domains:
            errors.append(RowError(0, box.address, "domaine hors de la liste blanche de "
                                                   f"l'opérateur {operator.name}"))
        elif mailbox is not None and mailbox.operator_id != operator.id:
            errors.append(RowError(0, box.address, "adresse déjà connue d'un autre opérateur"))
    if errors:
        raise ImportFailed(errors)
    return _write_peer_boxes(session, boxes, existing, operator, replace)


def _write_peer_boxes(session: Session, boxes: list[_PeerBox], existing: dict[str, Mailbox],
                      operator: Operator, replace: bool) -> DirectoryImport:
    created = updated = removed = 0
    for box in boxes:
        mailbox = existing.get(box.address)
        if mailbox is None:
            created += 1
            mailbox = Mailbox(address=box.address, operator_id=operator.id,
                              state=MailboxState.PUBLISHED, published_at=utcnow())
            session.add(mailbox)
        else:
            updated += 1
        mailbox.kind, mailbox.display_name = box.kind, box.display_name[:200]
        mailbox.smime_cert_pem = box.cert_pem
        mailbox.professional, mailbox.structure = _peer_holder(session, box)
    if replace:
        listed = {b.address for b in boxes}
        for mailbox in session.execute(select(Mailbox).where(
                Mailbox.operator_id == operator.id)).scalars():
            if mailbox.address not in listed:
                session.delete(mailbox)
                removed += 1
    session.flush()
    return DirectoryImport(created, updated, removed)
