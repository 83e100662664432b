"""The one Sieve script (RFC 5228) the webmail writes for a mailbox, generated from plain data:
an out-of-office reply (RFC 5230 vacation) and simple filters. Nothing here parses a script:
the webmail keeps the settings in its database and only ever writes this text.

Every user string goes into the script as a Sieve string, escaped here and nowhere else:

- a quoted string (``quoted``) for one-line values (subject, the text a filter looks for, a
  folder name): ``\\`` and ``"`` are the only escapes of RFC 5228 §2.4.2, and control
  characters (line breaks included) are refused before (``check_line``);
- a multi-line ``text:`` literal (``multiline``) for the reply's body: a line that starts with a
  dot gets a second one (dot-stuffing, §2.4.2), and the literal ends with a line holding a dot.

The script requires neither ``variables`` nor ``encoded-character``: ``${…}`` in a user string
stays literal text. Dates are compared in UTC (``currentdate :zone "+0000"``) against the
instants of the chosen Paris days, computed here, so the server's time zone does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
FIELDS = {"from": '"from"', "subject": '"subject"', "to": '["to", "cc"]'}
ACTIONS = ("move", "read", "flag")
DEFAULT_DAYS = 7
MAX_DAYS = 90
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed on one line
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ScriptError(ValueError):
    """A value that cannot go into a script (what is wrong, in French)."""


@dataclass(frozen=True)
class Vacation:
    """The out-of-office reply. ``start``/``end``: Paris days, both included (None: open)."""

    subject: str
    body: str
    start: date | None = None
    end: date | None = None
    days: int = DEFAULT_DAYS


@dataclass(frozen=True)
class Rule:
    """If ``field`` (from / subject / to) contains ``text``, do ``action`` (move into
    ``folder`` / mark read / flag)."""

    field: str
    text: str
    action: str
    folder: str = ""


def check_line(value: str, what: str) -> str:
    """``value`` if it may go into a one-line Sieve string, else ScriptError."""
    if _CONTROL.search(value):
        raise ScriptError(f"{what} : un seul paragraphe, sans caractère de contrôle")
    return value


def quoted(value: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2) holding exactly ``value`` (one line)."""
    check_line(value, "texte")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multiline(value: str) -> str:
    """A Sieve ``text:`` literal holding exactly ``value`` (RFC 5228 §2.4.2, dot-stuffed)."""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if _BODY_CONTROL.search(text):
        raise ScriptError("message : caractère de contrôle refusé")
    lines = [("." + line if line.startswith(".") else line) for line in text.split("\n")]
    return "text:\n" + "".join(line + "\n" for line in lines) + ".\n"


def utc_instant(day: date, *, end: bool = False) -> str:
    """The UTC instant a Paris day starts (or, ``end``, the next one starts), as
    ``currentdate :zone "+0000" "iso8601"`` writes it (``2026-12-12T23:00:00Z``)."""
    moment = datetime.combine(day + timedelta(days=1) if end else day, time(0), PARIS)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(vacation: Vacation | None, rules: Sequence[Rule]) -> str:
    """The whole script. The reply comes first (a message a filter files away is still
    answered), then the filters in order; a move stops the filters that follow."""
    requires = ["fileinto", "mailbox", "imap4flags"]
    if vacation is not None:
        requires += ["vacation", "date", "relational"]
    parts = ["# Écrit par le webmail mss (Réponse automatique, Filtres) : toute modification\n"
             "# faite ici est remplacée au prochain enregistrement depuis le webmail.\n",
             "require [" + ", ".join(f'"{r}"' for r in requires) + "];\n"]
    if vacation is not None:
        parts.append(_vacation(vacation))
    parts.extend(_rule(rule) for rule in rules)
    return "".join(parts)


def _vacation(v: Vacation) -> str:
    if not 1 <= v.days <= MAX_DAYS:
        raise ScriptError(f"délai entre deux réponses : de 1 à {MAX_DAYS} jours")
    action = (f"vacation :days {v.days} :subject {quoted(check_line(v.subject, 'objet'))}\n"
              f"  {multiline(v.body)};\n")
    tests = []
    if v.start is not None:
        tests.append(f'currentdate :zone "+0000" :value "ge" "iso8601" '
                     f'"{utc_instant(v.start)}"')
    if v.end is not None:
        tests.append(f'currentdate :zone "+0000" :value "lt" "iso8601" '
                     f'"{utc_instant(v.end, end=True)}"')
    if not tests:
        return "# Réponse automatique\n" + action
    return ("# Réponse automatique\nif allof(" + ",\n          ".join(tests) + ") {\n  "
            + action + "}\n")


def _rule(rule: Rule) -> str:
    if rule.field not in FIELDS or rule.action not in ACTIONS:
        raise ScriptError("filtre : champ ou action inconnu")
    test = f"header :contains {FIELDS[rule.field]} {quoted(check_line(rule.text, 'filtre'))}"
    if rule.action == "move":
        body = f"fileinto :create {quoted(check_line(rule.folder, 'dossier'))};\n  stop;"
    elif rule.action == "read":
        body = 'addflag "\\\\Seen";'
    else:
        body = 'addflag "\\\\Flagged";'
    return f"# Filtre\nif {test} {{\n  {body}\n}}\n"
