"""A mailbox's out-of-office reply and filters (issue #17): what the person chose, kept in the
database so that the forms show it again, and the one Sieve script generated from it
(``mailstore.sievescript``) and installed through ManageSieve (``mailstore.managesieve``: the
mail store's own protocol, so the webmail needs no access to Dovecot's files or commands, and
Dovecot compiles the script before taking it).

The webmail never reads a script back: the database is the truth of the forms. It does look at
which script is *active*: one a person installed with another ManageSieve client is never
replaced silently (``ForeignScript``); the form asks first, and replacing deactivates it, it is
not deleted.

Who may change them: the holder of a personal mailbox; for an organisational one, its
administrators (``may_manage``). Every change is audited without the texts (subject, message,
what a filter looks for are the person's words, possibly about patients).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime

from flask import current_app
from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.errors import MssError
from mailstore.managesieve import SieveService
from mailstore.sieveconf import SCRIPT_NAME
from mailstore.sievescript import PARIS, Rule, Vacation, render
from trust_space.models import Role
from webmail.context import mss
from webmail.mail.access import Box

MAX_FILTERS = 50
SUBJECT_MAX, BODY_MAX, TEXT_MAX = 200, 4000, 200


class MailboxRules(Base):
    """The settings of one mailbox (see the module docstring)."""

    __tablename__ = "mailbox_rules"

    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailbox.id", ondelete="CASCADE"), primary_key=True)
    vacation_on: Mapped[bool] = mapped_column(Boolean, default=False)
    vacation_start: Mapped[date | None] = mapped_column(Date)
    vacation_end: Mapped[date | None] = mapped_column(Date)
    vacation_subject: Mapped[str] = mapped_column(String(SUBJECT_MAX), default="")
    vacation_body: Mapped[str] = mapped_column(Text, default="")
    vacation_days: Mapped[int] = mapped_column(Integer, default=7)
    filters: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of Filter
    updated_by: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ForeignScript(MssError):
    """Another script (installed with a ManageSieve client) is active on the mailbox."""

    code = "foreign_sieve_script"

    def __init__(self, name: str) -> None:
        super().__init__(f"script actif : {name}")
        self.name = name


@dataclass(frozen=True)
class Filter:
    """One filter as the form shows it; ``id`` is stable (edits and deletes name it)."""

    field: str
    text: str
    action: str
    folder: str = ""
    # dataclasses.field: the name ``field`` is this class's first attribute
    id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(6))

    @property
    def rule(self) -> Rule:
        return Rule(self.field, self.text, self.action, self.folder)


@dataclass(frozen=True)
class Settings:
    """Everything the two forms show."""

    vacation_on: bool = False
    start: date | None = None
    end: date | None = None
    subject: str = ""
    body: str = ""
    days: int = 7
    filters: tuple[Filter, ...] = ()

    @property
    def vacation(self) -> Vacation | None:
        if not self.vacation_on:
            return None
        return Vacation(self.subject, self.body, self.start, self.end, self.days)

    def script(self) -> str:
        return render(self.vacation, [f.rule for f in self.filters])


def may_manage(box: Box) -> bool:
    """The holder of a personal mailbox; the administrators of an organisational one."""
    return box.is_own or box.role is Role.ADMINISTRATOR


def load(box: Box) -> Settings:
    with mss().db.read() as session:
        row = session.get(MailboxRules, box.id)
        if row is None:
            return Settings()
        try:
            filters = tuple(Filter(**f) for f in json.loads(row.filters or "[]"))
        except (ValueError, TypeError):
            filters = ()
        return Settings(row.vacation_on, row.vacation_start, row.vacation_end,
                        row.vacation_subject, row.vacation_body, row.vacation_days, filters)


def active_script(box: Box) -> str | None:
    """The name of the active script of ``box``, None when none is."""
    with _service().session(box.address) as conn:
        return next((s.name for s in conn.list_scripts() if s.active), None)


def foreign(name: str | None) -> bool:
    return name is not None and name != SCRIPT_NAME


def save(box: Box, settings: Settings, *, replace_foreign: bool = False) -> None:
    """Install the script of ``settings`` on ``box`` (and activate it), then keep
    ``settings``. Nothing is kept when the script is not installed.

    Raises:
        ForeignScript: another script is active and ``replace_foreign`` is false.
        mailstore.managesieve.SieveError: the mail store refused it or is unreachable.
        mailstore.sievescript.ScriptError: a value that cannot go into a script.
    """
    script = settings.script()
    with _service().session(box.address) as conn:
        active = next((s.name for s in conn.list_scripts() if s.active), None)
        if foreign(active) and not replace_foreign:
            raise ForeignScript(str(active))
        conn.put_script(SCRIPT_NAME, script)
        if active != SCRIPT_NAME:
            conn.set_active(SCRIPT_NAME)
    _store(box, settings)


def _store(box: Box, settings: Settings) -> None:
    from flask_login import current_user

    with mss().db.transaction() as session:
        row = session.get(MailboxRules, box.id)
        if row is None:
            row = MailboxRules(mailbox_id=box.id)
            session.add(row)
        row.vacation_on, row.vacation_days = settings.vacation_on, settings.days
        row.vacation_start, row.vacation_end = settings.start, settings.end
        row.vacation_subject, row.vacation_body = settings.subject, settings.body
        row.filters = json.dumps([asdict(f) for f in settings.filters])
        row.updated_by, row.updated_at = current_user.login, utcnow()


def with_filters(settings: Settings, filters: list[Filter]) -> Settings:
    return replace(settings, filters=tuple(filters))


def today() -> date:
    return datetime.now(PARIS).date()


def banner(box: Box) -> str | None:
    """The sentence the mailbox shows while its reply is on (None when it is not)."""
    with mss().db.read() as session:
        row = session.get(MailboxRules, box.id)
        if row is None or not row.vacation_on:
            return None
        start, end = row.vacation_start, row.vacation_end
    now = today()
    if end is not None and end < now:
        return None
    if start is not None and start > now:
        until = f" au {end:%d/%m/%Y}" if end else ""
        return f"Réponse automatique programmée du {start:%d/%m/%Y}{until}"
    return f"Réponse automatique active jusqu’au {end:%d/%m/%Y}" if end else \
        "Réponse automatique active"


def _service() -> SieveService:
    found: SieveService | None = current_app.extensions.get("mss.sieve")
    if found is None:
        found = current_app.extensions["mss.sieve"] = SieveService.for_settings(mss().settings)
    return found
