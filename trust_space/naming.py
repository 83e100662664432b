"""Address naming rules and national identifiers of the trust space.

Addresses are built from cleaned parts joined by ``.``:

- personal: ``prenom.nom@domaine`` (``Éloïse Lefèvre`` → ``eloise.lefevre@mss.test``);
- organisational: ``prefixe.nom.codepostal@domaine`` (``pharma``, ``du Centre``, ``64000`` →
  ``pharma.ducentre.64000@mss.test``).

A part is lower-cased, accents are folded to ASCII (é→e, ç→c, œ→oe, æ→ae, ß→ss…) and only
``a-z0-9`` is kept: no hyphen, apostrophe or space ("Jean-Pierre" → "jeanpierre",
"D'Artagnan" → "dartagnan"). On a collision a number 2, 3, … is appended to the name part.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

from trust_space.errors import NamingError

# Letters that Unicode decomposition does not reduce to ASCII.
_SPECIAL = str.maketrans({
    "œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ẞ": "ss", "ø": "o", "Ø": "o",
    "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "Ð": "d", "þ": "th", "Þ": "th",
    "ı": "i",
})
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1
_MAX_SUFFIX = 10_000


def fold(text: str) -> str:
    """Lower case with accents folded to ASCII; other characters (spaces, hyphens) are kept."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def clean_part(text: str, what: str = "partie") -> str:
    """One address part: folded, only ``a-z0-9``. Raises NamingError if nothing is left."""
    part = _NOT_ALNUM.sub("", fold(text))
    if not part:
        raise NamingError(
            f"{what} invalide : « {text} » ne contient aucune lettre ni chiffre",
            reason="doit contenir au moins une lettre ou un chiffre",
        )
    return part


def check_domain(domain: str) -> str:
    """A lower-cased DNS domain of at least two labels (RFC 1035 letters, digits, hyphens)."""
    name = domain.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise NamingError(f"domaine invalide : « {domain} »", reason="nom de domaine invalide")
    return name


def _first_free(stem: str, tail: str, domain: str, taken: Collection[str]) -> str:
    used = {address.lower() for address in taken}
    for n in range(1, _MAX_SUFFIX):
        local = stem + (str(n) if n > 1 else "") + tail
        if len(local) > _MAX_LOCAL:
            raise NamingError(f"adresse trop longue : « {local} » dépasse {_MAX_LOCAL} caractères")
        address = f"{local}@{domain}"
        if address not in used:
            return address
    raise NamingError(f"aucune adresse libre pour « {stem}{tail}@{domain} »")


def personal_address(first_name: str, last_name: str, domain: str, taken: Collection[str]) -> str:
    """``prenom.nom@domain``, or ``prenom.nom2@``, ``prenom.nom3@``… if already in ``taken``.

    Raises:
        NamingError: a name empty after cleaning, a bad domain, an address over 64 characters.
    """
    first = clean_part(first_name, "prénom")
    last = clean_part(last_name, "nom")
    return _first_free(f"{first}.{last}", "", check_domain(domain), taken)


def organisational_address(
    prefix: str, name: str, postal_code: str, domain: str, taken: Collection[str]
) -> str:
    """``prefixe.nom.codepostal@domain``; on collision ``prefixe.nom2.codepostal@``…

    ``name`` is cleaned as given, all its words concatenated: pass the structure's distinctive
    name ("du Centre" → ``ducentre``), not its generic kind ("Pharmacie"), which the prefix
    already says.

    Raises:
        NamingError: an empty part, a postal code that is not exactly 5 digits, a bad domain.
    """
    pre = clean_part(prefix, "préfixe")
    core = clean_part(name, "nom")
    code = validate_postal_code(postal_code)
    return _first_free(f"{pre}.{core}", f".{code}", check_domain(domain), taken)


def _digits(value: str, count: int, label: str) -> str:
    text = value.strip()
    if len(text) != count or not text.isascii() or not text.isdigit():
        reason = f"doit comporter {count} chiffres"
        raise NamingError(f"{label} invalide : « {value} » {reason}", reason=reason)
    return text


def validate_postal_code(value: str) -> str:
    """A French postal code: exactly 5 digits, nothing else (no inner space)."""
    return _digits(value, 5, "code postal")


def validate_rpps(value: str) -> str:
    """An RPPS number: 11 digits. Its Luhn key is not enforced (demo numbers do not have one)."""
    return _digits(value, 11, "RPPS")


def validate_adeli(value: str) -> str:
    """An ADELI number: 9 digits."""
    return _digits(value, 9, "ADELI")


def validate_finess(value: str) -> str:
    """A FINESS number: 9 digits (its check key is not enforced)."""
    return _digits(value, 9, "FINESS")


def national_id(rpps: str | None, adeli: str | None) -> str:
    """The CPS national identifier: "8" + RPPS when there is one, else "0" + ADELI."""
    if rpps:
        return "8" + validate_rpps(rpps)
    if adeli:
        return "0" + validate_adeli(adeli)
    raise NamingError("identifiant national impossible : ni RPPS ni ADELI",
                      reason="RPPS ou ADELI obligatoire")


def parse_national_id(value: str) -> tuple[str, str] | None:
    """``("rpps", "…")`` for "8" + 11 digits, ``("adeli", "…")`` for "0" + 9 digits, else None."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) == 12 and text[0] == "8":
        return "rpps", text[1:]
    if len(text) == 10 and text[0] == "0":
        return "adeli", text[1:]
    return None


_DN_SPLIT = re.compile(r"(?<!\\),")
_DN_TYPE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+)$")
_DN_SHORT = {"CN", "O", "OU", "C", "L", "ST", "DC", "STREET", "UID", "SERIALNUMBER"}


def normalise_dn(dn: str) -> str:
    """A certificate subject DN in RFC 4514 string form with insignificant spaces removed and
    well-known attribute types upper-cased ("CN=relay, o=Peer" → "CN=relay,O=Peer").

    Compare a peer certificate with ``normalise_dn(cert.subject.rfc4514_string())``.

    Raises:
        NamingError: empty, or a component that is not ``type=value``.
    """
    parts = []
    for raw in _DN_SPLIT.split(dn.strip()):
        kind, sep, value = raw.partition("=")
        kind, value = kind.strip(), value.strip()
        if not sep or not value or not _DN_TYPE.match(kind):
            raise NamingError(f"DN de certificat invalide : « {dn} »", reason="DN invalide")
        parts.append(f"{kind.upper() if kind.upper() in _DN_SHORT else kind}={value}")
    return ",".join(parts)


def dn_attribute(dn: str, kind: str) -> str | None:
    """The first value of attribute ``kind`` (e.g. "O", "CN") in a normalised DN, unescaped."""
    for part in _DN_SPLIT.split(dn):
        name, _, value = part.partition("=")
        if name.strip().upper() == kind.upper():
            return re.sub(r"\\(.)", r"\1", value.strip())
    return None


# Profession labels as a woman's title reads (the directory stores the masculine form, the
# way the RPPS lists them); used wherever a person is shown and the civility is "Mme".
_FEMININE = {
    "Pharmacien": "Pharmacienne", "Infirmier": "Infirmière",
    "Chirurgien-dentiste": "Chirurgienne-dentiste",
    "Masseur-kinésithérapeute": "Masseuse-kinésithérapeute", "Biologiste": "Biologiste",
    "Opticien-lunetier": "Opticienne-lunetière", "Diététicien": "Diététicienne",
    "Ergothérapeute": "Ergothérapeute", "Psychomotricien": "Psychomotricienne",
    "Audioprothésiste": "Audioprothésiste", "Manipulateur ERM": "Manipulatrice ERM",
    "Préparateur en pharmacie": "Préparatrice en pharmacie",
    "Technicien de laboratoire médical": "Technicienne de laboratoire médical",
}


def profession_label(profession: str, civility: str) -> str:
    """``profession`` in the feminine when ``civility`` is "Mme" ("Infirmière"), as is
    otherwise (Dr, Pr, M. or unknown: the stored form)."""
    if civility.strip().lower() in ("mme", "madame"):
        return _FEMININE.get(profession, profession)
    return profession
