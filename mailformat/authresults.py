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
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.settings import Settings
from mailformat.headers import field_name, field_value_bytes, header_fields, split_head

FIELD = "Authentication-Results"
# What a message list shows of a message: the seal covers exactly these (all occurrences).
SEALED = ("from", "sender", "to", "cc", "subject", "date", "message-id")
_SEAL = re.compile(rb"\s+policy\.mss-seal=([A-Za-z0-9_-]{22})\s*$")
_TIME = re.compile(rb"\bpolicy\.mss-time=(\d{8}T\d{6}Z)(?=\s|$)")
_TOKEN = re.compile(r'[^\s;()"\\]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_CONTEXT = b"mss authentication-results seal v1"
REPORTS = ("dsn", "mdn")  # reports the gateway writes itself (policy.mss-report)
_REPORT = re.compile(r"\bpolicy\.mss-report=(dsn|mdn)(?=\s|$)")


def seal_key(secret: bytes) -> bytes:
    """The sealing key, derived from the operator's secret (``Settings.secret``) so that the
    secret itself never signs anything readable."""
    return hmac.new(secret, _CONTEXT, hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def key_for(settings: Settings) -> bytes:
    """``seal_key`` of this installation's secret, read and derived once per settings object
    (the gateway's acceptance and reports, the webmail's lists all ask for it)."""
    return seal_key(settings.secret())


def authserv_id_of(value: str) -> str | None:
    """The authserv-id at the head of an ``Authentication-Results`` value (RFC 8601 §2.2):
    a token or a quoted-string, white space and (nested) comments before it skipped."""
    rest = _skip_cfws(value)
    quoted = _QUOTED.match(rest)
    if quoted:
        return re.sub(r"\\(.)", r"\1", quoted.group(1))
    token = _TOKEN.match(rest)
    return token.group(0) if token else None


def normal_id(ident: str | None) -> str | None:
    """An authserv-id compared case-insensitively, a trailing dot ignored."""
    return ident.strip().lower().rstrip(".") if ident else None


def _skip_cfws(text: str) -> str:
    """``text`` without its leading white space and (nested) comments (RFC 5322 §3.2.2)."""
    text = text.lstrip()
    while text.startswith("("):
        depth, index = 0, 0
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        text = text[index + 1:].lstrip()
    return text


def _mac(key: bytes, value: bytes, fields: Sequence[bytes]) -> str:
    mac = hmac.new(key, value, hashlib.sha256)
    for name in SEALED:
        for field in fields:
            if field_name(field) == name:
                mac.update(b"\x00" + name.encode() + b"\x00" + field_value_bytes(field))
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode("ascii")


def seal(raw: bytes, key: bytes, at: datetime, *, report: str | None = None) -> bytes:
    """``raw``, whose first field is our freshly written ``Authentication-Results``, with that
    field sealed (module docstring). Every other byte is unchanged.

    Raises:
        ValueError: the first field is not an ``Authentication-Results`` field.
    """
    head, rest = split_head(raw)
    fields = header_fields(head)
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
    return stamped + f" policy.mss-seal={token}".encode("ascii") + eol + \
        b"".join(fields[1:]) + rest


@dataclass(frozen=True)
class Sealed:
    """A verdict field whose seal verified: its unfolded value and the gateway's time."""

    value: str
    at: datetime

    @property
    def report(self) -> str | None:
        """``dsn`` or ``mdn`` when the gateway wrote the whole message itself (a delivery
        report or an automatic receipt), else None."""
        found = _REPORT.search(self.value)
        return found.group(1) if found else None


def sealed(fields: Sequence[bytes], authserv_id: str, key: bytes) -> Sealed | None:
    """Our first ``Authentication-Results`` field among ``fields`` (a header section cut by
    ``mailformat.headers``) if its seal verifies, else None. Fields of other services are skipped;
    the first field with our id decides (RFC 8601 §5)."""
    ours = normal_id(authserv_id)
    for field in fields:
        if field_name(field) != FIELD.lower():
            continue
        value = field_value_bytes(field)
        if normal_id(authserv_id_of(value.decode("utf-8", "replace"))) != ours:
            continue
        found, at = _SEAL.search(value), _TIME.search(value)
        if found is None or at is None:
            return None
        others = [f for f in fields if field_name(f) != FIELD.lower()]
        expected = _mac(key, value[: found.start()], others)
        if not hmac.compare_digest(expected, found.group(1).decode("ascii")):
            return None
        when = datetime.strptime(at.group(1).decode("ascii"), "%Y%m%dT%H%M%SZ")
        return Sealed(value[: found.start()].decode("utf-8", "replace"),
                      when.replace(tzinfo=UTC))
    return None
