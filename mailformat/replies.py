"""SMTP/LMTP reply lines (RFC 5321 §4.2) and their enhanced status codes (RFC 3463 §2, RFC 2034
§4), read in one place: the mail store's LMTP client, the webmail's submission client and the
delivery timeline all cut "451 4.4.1 text" the same way (CONVENTIONS.md, 13)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REPLY = re.compile(r"(?:(?P<code>[2-5]\d\d)(?:[ -]|$))?\s*"
                    r"(?:(?P<enhanced>[245]\.\d{1,3}\.\d{1,3})(?:\s+|$))?(?P<text>.*)", re.S)


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
