"""Imports: professionals and structures from CSV (the whitelist XML is in ``whitelist.py``).

Every import is all-or-nothing: the whole input is validated first (formats, duplicates inside
the file, conflicts with the database) and only then written; on any problem ``ImportFailed``
lists every error and nothing is written. The caller owns the transaction.

CSV files: UTF-8 with or without BOM, a header row (line 1) naming the columns, ``;`` or ``,``
as delimiter (detected from the header). Column names ignore case and accents; columns may come
in any order and may be left out unless required; unknown columns are refused. An empty cell
clears the field, except identifiers, which are never cleared. Rows are matched by RPPS, else
ADELI (professionals) or by FINESS (structures): existing rows are updated, others created.

Professionals: ``rpps,adeli,civilite,prenom,nom,profession,specialite,email,mobile,telephone,
lieu_exercice,adresse,code_postal,ville`` — required columns ``prenom``, ``nom``,
``profession``, and ``rpps`` or ``adeli`` (each row needs at least one of the two). rpps: 11
digits; adeli: 9 digits; code_postal: 5 digits; email: an address; mobile, telephone: digits
with optional ``+``, spaces, dots or hyphens.

Structures: ``finess,nom,adresse,code_postal,ville`` — required ``finess`` (9 digits), ``nom``.

"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trust_space.errors import ImportFailed, NamingError, RowError
from trust_space.models import Professional, Structure
from trust_space.naming import (
    clean_part,
    fold,
    validate_adeli,
    validate_finess,
    validate_postal_code,
    validate_rpps,
)

Check = Callable[[str], str]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or " " in value:
        raise NamingError("adresse électronique invalide", reason="adresse électronique invalide")
    return value


def _phone(value: str) -> str:
    digits = re.sub(r"[\s.\-]", "", value)
    if not re.fullmatch(r"\+?\d{9,15}", digits):
        raise NamingError("numéro invalide", reason="numéro de téléphone invalide")
    return value


def _named(value: str) -> str:
    clean_part(value)  # raises when no letter or digit remains: no address could be built
    return value


@dataclass(frozen=True)
class Column:
    """A CSV column: model attribute, maximum length, check (returns the value to store)."""

    attr: str
    max_len: int
    check: Check | None = None
    required: bool = False  # a non-empty value on every row


PROFESSIONAL_COLUMNS: dict[str, Column] = {
    "rpps": Column("rpps", 11, validate_rpps),
    "adeli": Column("adeli", 9, validate_adeli),
    "civilite": Column("civility", 10),
    "prenom": Column("first_name", 100, _named, True),
    "nom": Column("last_name", 100, _named, True),
    "profession": Column("profession", 100, None, True),
    "specialite": Column("specialty", 100),
    "email": Column("usual_email", 254, _email),
    "mobile": Column("mobile", 20, _phone),
    "telephone": Column("phone", 20, _phone),
    "lieu_exercice": Column("place_of_practice", 200),
    "adresse": Column("address", 300),
    "code_postal": Column("postal_code", 5, validate_postal_code),
    "ville": Column("city", 120),
}
STRUCTURE_COLUMNS: dict[str, Column] = {
    "finess": Column("finess", 9, validate_finess, True),
    "nom": Column("name", 200, None, True),
    "adresse": Column("address", 300),
    "code_postal": Column("postal_code", 5, validate_postal_code),
    "ville": Column("city", 120),
}
_KEYS = ("rpps", "adeli", "finess")  # identifiers: never cleared by an empty cell


@dataclass(frozen=True)
class ImportSummary:
    """What an import did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


@dataclass
class _Row:
    line: int
    values: dict[str, str]  # model attribute -> value
    target: Any = None  # the existing model object, when updating


@dataclass
class _Parsed:
    columns: list[str] = field(default_factory=list)
    rows: list[_Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed([RowError(0, "", "le fichier n'est pas encodé en UTF-8")]) from exc


def _header(names: list[str], columns: dict[str, Column], errors: list[RowError]) -> list[str]:
    keys = [re.sub(r"[\s-]+", "_", fold(name).strip()) for name in names]
    for key in keys:
        if key and key not in columns:
            errors.append(RowError(1, key, "colonne inconnue"))
    for key, column in columns.items():
        if column.required and key not in keys:
            errors.append(RowError(1, key, "colonne obligatoire absente"))
    return keys


def _cell(line: int, key: str, column: Column, raw: str, errors: list[RowError]) -> str:
    value = re.sub(r"[\r\n\t]+", " ", raw).strip()  # a quoted multi-line address: one line
    if _CONTROL.search(value):  # PostgreSQL refuses NUL; no field has a use for the others
        errors.append(RowError(line, key, "caractère de contrôle interdit"))
        return ""
    if not value:
        if column.required:
            errors.append(RowError(line, key, "valeur obligatoire"))
        return ""
    try:
        value = column.check(value) if column.check else value
    except NamingError as exc:
        errors.append(RowError(line, key, exc.reason))
    else:
        if len(value) > column.max_len:
            errors.append(RowError(line, key, f"au plus {column.max_len} caractères"))
    return value


def _row(line: int, keys: list[str], cells: list[str], columns: dict[str, Column],
         parsed: _Parsed, seen: dict[tuple[str, str], int]) -> None:
    if len(cells) != len(keys):
        parsed.errors.append(RowError(line, "", f"{len(cells)} colonnes au lieu de {len(keys)}"))
        return
    values = {}
    for key, raw in zip(keys, cells, strict=True):
        if key in columns:
            values[columns[key].attr] = _cell(line, key, columns[key], raw, parsed.errors)
    for key in _KEYS:
        if values.get(key):
            first = seen.setdefault((key, values[key]), line)
            if first != line:
                parsed.errors.append(RowError(line, key, f"en double (déjà ligne {first})"))
    parsed.rows.append(_Row(line, values))


def _parse(data: bytes | str, columns: dict[str, Column]) -> _Parsed:
    """Rows checked cell by cell, with duplicate identifiers inside the file."""
    text = _decode(data)
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    parsed = _Parsed()
    seen: dict[tuple[str, str], int] = {}
    try:
        names = next(reader, [])
        if not any(name.strip() for name in names):
            parsed.errors.append(RowError(1, "", "ligne d'en-tête absente"))
            return parsed
        parsed.columns = _header(names, columns, parsed.errors)
        start = reader.line_num + 1
        for cells in reader:  # a record's line is where it starts (quoted fields may span)
            if any(cell.strip() for cell in cells):  # blank lines are skipped
                _row(start, parsed.columns, cells, columns, parsed, seen)
            start = reader.line_num + 1
    except csv.Error as exc:  # NUL byte, unterminated quote, oversized field
        parsed.errors.append(RowError(reader.line_num, "", f"CSV illisible ({exc})"))
    return parsed


def _existing(session: Session, column: Any, values: Iterable[str]) -> dict[str, Any]:
    """Model objects whose ``column`` is in ``values``, loaded by chunks, keyed by that value."""
    wanted, found = sorted(set(values)), {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        for obj in session.execute(select(column.class_).where(column.in_(chunk))).scalars():
            found[getattr(obj, column.key)] = obj
    return found


def _match_professionals(session: Session, parsed: _Parsed) -> None:
    """Find each row's professional; refuse rows that would merge or rewrite identities."""
    by_rpps = _existing(session, Professional.rpps, (r.values.get("rpps", "") for r in parsed.rows))
    by_adeli = _existing(session, Professional.adeli,
                         (r.values.get("adeli", "") for r in parsed.rows))
    targeted: dict[int, int] = {}
    for row in parsed.rows:
        rpps, adeli = row.values.get("rpps", ""), row.values.get("adeli", "")
        if not rpps and not adeli:
            parsed.errors.append(RowError(row.line, "rpps", "RPPS ou ADELI obligatoire"))
            continue
        pro_r, pro_a = by_rpps.get(rpps), by_adeli.get(adeli)
        if pro_r is not None and pro_a is not None and pro_r is not pro_a:
            parsed.errors.append(RowError(row.line, "adeli",
                                          "déjà attribué à un autre professionnel"))
        elif pro_r is None and pro_a is not None and rpps and pro_a.rpps:
            parsed.errors.append(RowError(row.line, "rpps", f"l'ADELI {adeli} est associé "
                                                            f"au RPPS {pro_a.rpps}"))
        row.target = pro_r or pro_a
        if row.target is not None:
            first = targeted.setdefault(row.target.id, row.line)
            if first != row.line:
                parsed.errors.append(RowError(row.line, "rpps",
                                              f"même professionnel que la ligne {first}"))


def _write(session: Session, parsed: _Parsed, model: type[Any],
           progress: Callable[[int], None] | None) -> ImportSummary:
    created = updated = unchanged = 0
    for done, row in enumerate(parsed.rows, start=1):
        values = {k: v for k, v in row.values.items() if v or k not in _KEYS}
        if row.target is None:
            session.add(model(**values))
            created += 1
        elif any(getattr(row.target, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(row.target, key, value)
            updated += 1
        else:
            unchanged += 1
        if progress is not None:
            progress(done)
    session.flush()
    return ImportSummary(created, updated, unchanged)


def _raise_if_errors(parsed: _Parsed) -> None:
    if parsed.errors:
        raise ImportFailed(sorted(parsed.errors, key=lambda e: e.line))


def import_professionals(session: Session, data: bytes | str, *,
                         progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Create or update professionals from a CSV file (columns in the module docstring).

    ``progress`` is called with the number of rows written so far, once per row.

    Raises:
        ImportFailed: every problem found, with its line; nothing was written.
    """
    parsed = _parse(data, PROFESSIONAL_COLUMNS)
    if parsed.columns and not {"rpps", "adeli"} & set(parsed.columns):
        parsed.errors.append(RowError(1, "rpps", "colonne rpps ou adeli obligatoire"))
    else:
        _match_professionals(session, parsed)
    _raise_if_errors(parsed)
    return _write(session, parsed, Professional, progress)


def import_structures(session: Session, data: bytes | str, *,
                      progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Create or update structures (by FINESS) from a CSV file; see ``import_professionals``.

    Raises:
        ImportFailed: every problem found, with its line; nothing was written.
    """
    parsed = _parse(data, STRUCTURE_COLUMNS)
    _raise_if_errors(parsed)
    existing = _existing(session, Structure.finess, (r.values["finess"] for r in parsed.rows))
    for row in parsed.rows:
        row.target = existing.get(row.values["finess"])
    return _write(session, parsed, Structure, progress)
