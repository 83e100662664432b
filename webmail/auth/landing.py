"""Where a person arrives: after logging in, and on "/".

A professional lands on the Boîte de réception of their personal mailbox, an operator on the
operator pages, anyone else on *Mon compte*. When a protected page sent them to log in, that
page wins — but only a plain local path is followed back (``safe_next``): the ``next``
parameter is a classic open redirect (CWE-601) used to send a freshly logged-in health
professional to a look-alike site.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import url_for
from flask_login import current_user

NEXT = "next"  # the query parameter naming the page that asked for the log-in
_MAX_NEXT = 2000


def safe_next(value: object) -> str | None:
    """``value`` when it is a path on this site, else None.

    Accepted: one leading "/", then no second "/" or "\\" right after it (``//host`` and
    ``/\\host`` are other hosts to a browser), no backslash, no scheme or host, no control
    character or space (browsers drop tabs and line breaks: ``/\\t/evil`` becomes ``//evil``).
    """
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_NEXT:
        return None
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def home_url() -> str:
    """The landing page of the logged-in user (see the module docstring)."""
    if current_user.is_operator:
        return url_for("operator.registrations")
    if current_user.professional_id is not None:
        from webmail.mail.access import accessible_boxes

        boxes = accessible_boxes()
        if boxes and boxes[0].is_own:
            return url_for("mail.folder", box_id=boxes[0].id)
    return url_for("account.overview")


def after_login(requested: object) -> str:
    """Where a login that has just succeeded leads: the page that asked for it, if safe."""
    return safe_next(requested) or home_url()
