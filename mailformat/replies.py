"""SMTP/LMTP reply lines (RFC 5321 §4.2) and their enhanced status codes (RFC 3463 §2, RFC 2034
§4), read in one place: the mail store's LMTP client, the outbound SMTP client, the webmail's
submission client, the delivery timeline and the DSN writer all cut "451 4.4.1 text" the same
way (CONVENTIONS.md, 13)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 3463 §2: class "." subject "." detail; class 2, 4 or 5, subject and detail 1 to 3 digits
# (ASCII digits: ``\d`` would take "5.١.1", which a DSN's Status field cannot carry).
_ENHANCED = r"[245]\.[0-9]{1,3}\.[0-9]{1,3}"
_REPLY = re.compile(r"(?:(?P<code>[2-5][0-9][0-9])(?:[ -]|$))?\s*"
                    rf"(?:(?P<enhanced>{_ENHANCED})(?:\s+|$))?(?P<text>.*)", re.S)
_STATUS = re.compile(_ENHANCED)


@dataclass(frozen=True)
class Reply:
    """A reply line cut in three: ``code`` (None when the line had none, as after smtplib
    took it off), ``enhanced`` ("" when absent) and the human text."""

    code: int | None
    enhanced: str
    text: str


def parse_reply(line: str) -> Reply:
    """``"451 4.4.1 Relais injoignable"`` → ``Reply(451, "4.4.1", "Relais injoignable")``;
    ``"4.4.1 x"`` → ``Reply(None, "4.4.1", "x")``; anything else is text."""
    found = _REPLY.match(line.strip())
    if found is None:  # cannot happen (every group is optional), kept for the type checker
        return Reply(None, "", line.strip())
    code = found.group("code")
    return Reply(int(code) if code else None, found.group("enhanced") or "",
                 found.group("text").strip())


def is_enhanced(status: str) -> bool:
    """True when ``status`` is exactly an enhanced status code (``"5.1.1"``, RFC 3463 §2)."""
    return _STATUS.fullmatch(status) is not None


def enhanced_or_default(code: int, text: str) -> str:
    """The enhanced code at the head of ``text`` (a reply whose basic ``code`` smtplib took
    off), else the undefined status of the code's class (``"5.0.0"`` for a 550, RFC 3463 §3.1)."""
    return parse_reply(text).enhanced or f"{str(code)[0]}.0.0"
