"""Our ``Authentication-Results`` field (RFC 8601): its authserv-id, and the seal that lets a
reader tell the gateway's verdict from a copy of it, shared by the gateway (which writes) and
the webmail (which reads): CONVENTIONS.md, 13.

A message can reach a folder without the gateway (IMAP APPEND by the owner, a delegate or a
practice software) carrying a field that claims our authserv-id. So the gateway seals the
verdict it writes: at the end of the field, two properties of the ``policy`` ptype (RFC 8601
§2.3, local policy; other readers ignore them)::

    Authentication-Results: mss.test;
     smime=pass (not encrypted) reason="signature verifiee"
     body.smime-identity=marie.martin@mss.test
     policy.mss-time=20261204T165500Z policy.mss-seal=3q2-7wAAAAAAAAAAAAAAAA

``mss-report`` (``dsn`` or ``mdn``, before the time) marks a report the gateway wrote itself.
``mss-time`` is when the gateway checked (a reader verifies the signature again *at that time*,
not at the sender's ``Date:``); ``mss-seal`` is an HMAC-SHA256 (RFC 2104), under a key derived
from the operator's secret, of the field's value before the seal and of the fields a list
shows (``SEALED``), so a sealed verdict cannot be moved onto another message or kept under an
edited From, Subject or Date. A reader trusts a verdict only when the seal verifies.

The value is read with one grammar (RFC 8601 §2.2), by the gateway (which removes the fields
claiming our authserv-id) and by the webmail (which shows our verdict): comments nest and may
hold anything (RFC 5322 §3.2.2 ``CFWS``), values are tokens or quoted-strings, so that nothing
inside a comment or a quoted-string (a certificate's subject, say) can pass for a result or a
property. ``parse`` is strict (``AuthResultsError``); ``authserv_id_of`` reads only the head,
so that a field naming us is recognised (and removed) however broken its tail.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import MssError
from core.settings import Settings
from mailformat.headers import Head, Message, field_name, field_value_bytes, same_form

FIELD = "Authentication-Results"
# What a message list shows of a message: the seal covers exactly these (all occurrences).
SEALED = ("from", "sender", "to", "cc", "subject", "date", "message-id")
# The seal closes the value (it is the MAC's frame, read before the value is trusted).
_SEAL = re.compile(rb"\s+policy\.mss-seal=([A-Za-z0-9_-]{22})\s*$")
_TIME = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_CONTEXT = b"mss authentication-results seal v1"
REPORTS = ("dsn", "mdn")  # reports the gateway writes itself (policy.mss-report)
# RFC 8601 §2.2: Keyword is an ldh-str (RFC 5321 §4.1.2). A word runs to white space, a
# comment, a quoted-string or ";", so it may hold "=": a property's value may be an address
# whose local-part has one (``body.smime-identity=a=b@mss.test``, RFC 5322 §3.2.3 atext);
# ``name=value`` is cut at its first "=" (``_pairs``). Control characters are refused.
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_WORD = re.compile(r'[^\s\x00-\x1f\x7f()";\\]+')
_VERSION = re.compile(r"[0-9]+")


def seal_key(secret: bytes) -> bytes:
    """The sealing key, derived from the operator's secret (``Settings.secret``) so that the
    secret itself never signs anything readable."""
    return hmac.new(secret, _CONTEXT, hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def key_for(settings: Settings) -> bytes:
    """``seal_key`` of this installation's secret, read and derived once per settings object
    (the gateway's acceptance and reports, the webmail's lists all ask for it)."""
    return seal_key(settings.secret())


class AuthResultsError(MssError):
    """An ``Authentication-Results`` value outside RFC 8601's grammar."""

    code = "malformed_authresults"


@dataclass(frozen=True)
class Result:
    """One ``resinfo`` (RFC 8601 §2.2): ``method`` and ``result`` in lower case (the method
    without its version), the comment right after the result (``smime=pass (encrypted)``:
    the hop fact our gateway records, RFC 7281), the ``reason``, and the properties in order
    as (``ptype.property`` in lower case, value) pairs; quoted values unquoted."""

    method: str
    result: str
    comment: str | None = None
    reason: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def property(self, name: str) -> str | None:
        """The first value of the property ``name`` (``"body.smime-identity"``), or None."""
        wanted = name.lower()
        return next((value for key, value in self.properties if key == wanted), None)


@dataclass(frozen=True)
class AuthResults:
    """An ``Authentication-Results`` value: who checked (``authserv_id``) and what they found
    (no results for ``authserv-id; none``)."""

    authserv_id: str
    results: tuple[Result, ...]

    def result(self, method: str) -> Result | None:
        """The first result of ``method`` (``"smime"``), or None."""
        wanted = method.lower()
        return next((r for r in self.results if r.method == wanted), None)


def authserv_id_of(value: str) -> str | None:
    """The authserv-id at the head of an ``Authentication-Results`` value (RFC 8601 §2.2):
    a token or a quoted-string, white space and (nested) comments before it skipped; None when
    the head is not one. What follows is not read."""
    try:
        for kind, text in _lex(value):
            if kind == "comment":
                continue
            return text if kind in ("word", "quoted") else None
    except AuthResultsError:
        return None
    return None


def normal_id(ident: str | None) -> str | None:
    """An authserv-id compared case-insensitively, a trailing dot ignored."""
    return ident.strip().lower().rstrip(".") if ident else None


def parse(value: str) -> AuthResults:
    """An unfolded ``Authentication-Results`` value read by RFC 8601 §2.2's grammar.

    ``CFWS`` inside ``ptype.property`` and a quoted local-part in a property are not read
    (nobody writes them; they are refused, not guessed at).

    Raises:
        AuthResultsError: anything else than that grammar (an unbalanced parenthesis or
            quote, a control character, a missing ``;`` or ``=``, a method or result that
            is not a keyword).
    """
    tokens = list(_lex(value))
    head, *infos = _split_on_semicolons(tokens)
    words = [t for t in head if t[0] != "comment"]
    if not words or words[0][0] not in ("word", "quoted"):
        raise AuthResultsError("Authentication-Results : authserv-id absent")
    if words[1:] and (len(words) > 2 or not _VERSION.fullmatch(words[1][1])):
        raise AuthResultsError("Authentication-Results : « ; » attendu après l'authserv-id")
    if not infos:
        raise AuthResultsError("Authentication-Results : aucun résultat")
    if len(infos) == 1 and [t for t in infos[0] if t[0] != "comment"] == [("word", "none")]:
        return AuthResults(words[0][1], ())  # no-result
    return AuthResults(words[0][1], tuple(_resinfo(info) for info in infos))


_Token = tuple[str, str]  # (kind, text): word, quoted, comment or ";"


def _lex(value: str) -> Iterator[_Token]:
    """The tokens of ``value``, white space dropped, quoted-strings and comments unquoted
    (RFC 5322 §3.2.1 quoted-pair), comments nested (§3.2.2)."""
    index = 0
    while index < len(value):
        char = value[index]
        if char in " \t\r\n":
            index += 1
        elif char == ";":
            yield char, char
            index += 1
        elif char == '"':
            text, index = _quoted(value, index)
            yield "quoted", text
        elif char == "(":
            text, index = _comment(value, index)
            yield "comment", text
        else:
            found = _WORD.match(value, index)
            if found is None:
                raise AuthResultsError(f"Authentication-Results : caractère inattendu "
                                       f"{char!r}")
            yield "word", found.group(0)
            index = found.end()


def _quoted(value: str, start: int) -> tuple[str, int]:
    text, index = [], start + 1
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            text.append(value[index + 1])
            index += 2
        elif char == '"':
            return "".join(text), index + 1
        else:
            text.append(char)
            index += 1
    raise AuthResultsError("Authentication-Results : guillemet non fermé")


def _comment(value: str, start: int) -> tuple[str, int]:
    text, depth, index = [], 0, start
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            text.append(value[index + 1])
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return "".join(text[1:]), index + 1
        text.append(char)
        index += 1
    raise AuthResultsError("Authentication-Results : parenthèse non fermée")


def _split_on_semicolons(tokens: list[_Token]) -> list[list[_Token]]:
    groups: list[list[_Token]] = [[]]
    for token in tokens:
        if token[0] == ";":
            groups.append([])
        else:
            groups[-1].append(token)
    return groups


def _resinfo(tokens: list[_Token]) -> Result:
    """``methodspec [reasonspec] [1*propspec]``, comments between them skipped but the one
    right after the result kept."""
    pairs = _pairs(tokens)
    if not pairs:
        raise AuthResultsError("Authentication-Results : résultat vide")
    (method, result, end), *rest = pairs
    name = method.partition("/")[0]  # method [ "/" method-version ]
    if not _KEYWORD.fullmatch(name) or not _KEYWORD.fullmatch(result):
        raise AuthResultsError("Authentication-Results : méthode ou résultat invalide")
    comment = tokens[end][1] if end < len(tokens) and tokens[end][0] == "comment" else None
    reason = None
    if rest and rest[0][0].lower() == "reason":
        reason, rest = rest[0][1], rest[1:]
    for key, _value, _end in rest:
        ptype, dot, prop = key.partition(".")
        if not dot or not _KEYWORD.fullmatch(ptype) or not _KEYWORD.fullmatch(prop):
            raise AuthResultsError("Authentication-Results : propriété invalide")
    return Result(name.lower(), result.lower(), comment, reason,
                  tuple((key.lower(), value) for key, value, _end in rest))


def _pairs(tokens: list[_Token]) -> list[tuple[str, str, int]]:
    """The ``name [CFWS] "=" [CFWS] value`` of a resinfo, each with the index of the token
    after its value; a name ends at its first "=", a value is a whole word or quoted-string."""
    pairs: list[tuple[str, str, int]] = []
    name: str | None = None
    equals = False
    for index, (kind, text) in enumerate(tokens):
        if kind == "comment":
            continue
        if name is None:  # a name, perhaps with "=" and the value glued on
            if kind != "word" or text.startswith("="):
                raise AuthResultsError("Authentication-Results : nom attendu")
            name, equals, text = text.partition("=")[0], "=" in text, text.partition("=")[2]
        elif not equals:  # the "=", perhaps with the value glued on
            if kind != "word" or not text.startswith("="):
                raise AuthResultsError("Authentication-Results : « = » attendu")
            equals, text = True, text[1:]
        if kind == "quoted" or text:  # the value
            pairs.append((name, text, index + 1))
            name, equals = None, False
    if name is not None:
        raise AuthResultsError("Authentication-Results : valeur attendue")
    return pairs


def _mac(key: bytes, value: bytes, fields: Sequence[bytes]) -> str:
    mac = hmac.new(key, value, hashlib.sha256)
    for name in SEALED:
        for field in fields:
            if field_name(field) == name:
                mac.update(b"\x00" + name.encode() + b"\x00" + field_value_bytes(field))
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode("ascii")


def seal(message: Message, key: bytes, at: datetime, *, report: str | None = None) -> Message:
    """``message``, whose first field is our freshly written ``Authentication-Results``, with
    that field sealed (module docstring). Every other byte is unchanged.

    Raises:
        ValueError: the first field is not an ``Authentication-Results`` field.
    """
    head = Head.of(message)
    fields: tuple[bytes, ...] = head.fields
    if not fields or field_name(fields[0]) != FIELD.lower():
        raise ValueError("le premier champ n'est pas Authentication-Results")
    first = fields[0]
    eol = b"\r\n" if first.endswith(b"\r\n") else b"\n"
    if report is not None and report not in REPORTS:
        raise ValueError("type de rapport inconnu")
    origin = f" policy.mss-report={report}" if report else ""
    stamped = first[: len(first) - len(eol)] + eol + \
        f" policy.mss-time={at.astimezone(UTC):%Y%m%dT%H%M%SZ}{origin}".encode("ascii")
    token = _mac(key, field_value_bytes(stamped), fields[1:])
    sealed = stamped + f" policy.mss-seal={token}".encode("ascii") + eol
    return same_form(message, Head(sealed + head.raw[len(first):], (sealed, *fields[1:])))


@dataclass(frozen=True)
class Sealed:
    """A verdict field whose seal verified: its unfolded value without the seal, read
    (``results``), the gateway's time, and ``report``: ``dsn`` or ``mdn`` when the gateway
    wrote the whole message itself (a delivery report or an automatic receipt), else None."""

    value: str
    at: datetime
    results: AuthResults
    report: str | None = None


def sealed(fields: Sequence[bytes], authserv_id: str, key: bytes) -> Sealed | None:
    """Our first ``Authentication-Results`` field among ``fields`` (a header section cut by
    ``mailformat.headers``) if its seal verifies, else None. Fields of other services are
    skipped; the first field with our id decides (RFC 8601 §5)."""
    ours = normal_id(authserv_id)
    for field in fields:
        if field_name(field) != FIELD.lower():
            continue
        value = field_value_bytes(field)
        if normal_id(authserv_id_of(value.decode("utf-8", "replace"))) != ours:
            continue
        found = _SEAL.search(value)
        if found is None:
            return None
        others = [f for f in fields if field_name(f) != FIELD.lower()]
        expected = _mac(key, value[: found.start()], others)
        if not hmac.compare_digest(expected, found.group(1).decode("ascii")):
            return None
        return _read_sealed(value[: found.start()].decode("utf-8", "replace"))
    return None


def _read_sealed(value: str) -> Sealed | None:
    """The gateway's own properties of a value its seal vouches for: one ``mss-time``, at
    most one ``mss-report``, read as properties, never from inside a quoted-string or a
    comment (where a certificate's subject may write anything)."""
    try:
        results = parse(value)
    except AuthResultsError:
        return None
    found = [(key, text) for result in results.results for key, text in result.properties
             if key in ("policy.mss-time", "policy.mss-report")]
    times = [text for key, text in found if key == "policy.mss-time"]
    reports = [text for key, text in found if key == "policy.mss-report"]
    if len(times) != 1 or not _TIME.fullmatch(times[0]) or len(reports) > 1 \
            or not set(reports) <= set(REPORTS):
        return None
    try:
        when = datetime.strptime(times[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:  # digits, but no date (a 13th month)
        return None
    return Sealed(value, when, results, reports[0] if reports else None)
