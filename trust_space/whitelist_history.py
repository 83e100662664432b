"""The whitelist followed and remembered (issue #20): every change with who, when, from what
and the diff; every fetch of the published list with its result; a warning, kept until an
operator acknowledges it, when a peer's certificate DN changes or a domain leaves the list.

``apply_whitelist`` is what both a manual import and a fetch call; ``follow`` is the fetch's
use case over an injected transport (``core.download.get_file`` in production), so that this
module opens no socket. A file that does not parse, or a fetch that fails, changes nothing:
the previous list stays, the failure is recorded.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core import audit
from core.db import Base, Database, UTCDateTime, utcnow
from core.download import DownloadFailed, Fetched
from core.errors import NotFound
from trust_space.errors import ImportFailed, TrustSpaceError
from trust_space.models import TrustedDomain
from trust_space.whitelist import WhitelistDiff, diff_whitelist, import_whitelist, parse_whitelist

KEPT_FETCHES = 1000  # fetch rows kept (the changes themselves are all kept)
SHOWN_ERRORS = 5  # row errors of a refused file kept in its fetch record


class FetchOutcome(enum.StrEnum):
    APPLIED = "applied"  # fetched, parsed, something changed
    UNCHANGED = "unchanged"  # fetched, parsed, same list
    NOT_MODIFIED = "not_modified"  # 304: the server says our copy is current
    REFUSED = "refused"  # fetched but does not parse: previous list kept
    FAILED = "failed"  # nothing usable came (TLS, network, timeout, HTTP, size)


OUTCOME_FR = {
    "applied": "appliquée", "unchanged": "liste identique", "not_modified": "non modifiée (304)",
    "refused": "fichier refusé, liste gardée", "failed": "échec, liste gardée",
}
GOOD = (FetchOutcome.APPLIED, FetchOutcome.UNCHANGED, FetchOutcome.NOT_MODIFIED)


class WarningKind(enum.StrEnum):
    DN_CHANGED = "dn_changed"
    DOMAIN_REMOVED = "domain_removed"


class WhitelistChange(Base):
    """One change of the whitelist: an import or a fetch that changed something."""

    __tablename__ = "whitelist_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(600))  # operator login, "cli", "fetch <url>"
    source: Mapped[str] = mapped_column(String(500))  # the file's name or the URL
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    diff: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of EntryChange


class WhitelistFetch(Base):
    """One fetch of the published list and its result."""

    __tablename__ = "whitelist_fetch"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    url: Mapped[str] = mapped_column(String(500))
    requested_by: Mapped[str] = mapped_column(String(254))  # "planifié", a login, "cli"
    outcome: Mapped[str] = mapped_column(String(20))  # FetchOutcome
    detail: Mapped[str] = mapped_column(String(1000), default="")
    etag: Mapped[str] = mapped_column(String(200), default="")
    last_modified: Mapped[str] = mapped_column(String(100), default="")
    entries: Mapped[int | None] = mapped_column(Integer)  # domains in the file, when parsed
    change_id: Mapped[int | None] = mapped_column(
        ForeignKey("whitelist_change.id", ondelete="SET NULL"))


class WhitelistWarning(Base):
    """A change an operator must look at: a peer's DN changed, or a domain left the list."""

    __tablename__ = "whitelist_warning"

    id: Mapped[int] = mapped_column(primary_key=True)
    change_id: Mapped[int] = mapped_column(
        ForeignKey("whitelist_change.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # WarningKind
    domain: Mapped[str] = mapped_column(String(253))
    dn_before: Mapped[str] = mapped_column(String(500), default="")
    dn_after: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    acknowledged_by: Mapped[str] = mapped_column(String(254), default="")


@dataclass(frozen=True)
class EntryChange:
    """One line of a diff. ``kind``: added / removed / changed; ``fields``: the whitelist XML
    elements that differ (changed only)."""

    domain: str
    kind: str
    dn_before: str = ""
    dn_after: str = ""
    fields: tuple[str, ...] = ()

    @property
    def dn_changed(self) -> bool:
        return self.kind == "changed" and "DNCertificatOperateur" in self.fields


@dataclass(frozen=True)
class Applied:
    """What ``apply_whitelist`` did: the diff, its lines, and what was recorded."""

    diff: WhitelistDiff
    changes: list[EntryChange]
    entries: int  # domains in the file
    change_id: int | None = None  # None: nothing changed, or a dry run
    warnings: list[WhitelistWarning] = field(default_factory=list)


def _lines(diff: WhitelistDiff, before: dict[str, str], after: dict[str, str]
           ) -> list[EntryChange]:
    return ([EntryChange(d, "added", dn_after=after[d]) for d in diff.added]
            + [EntryChange(d, "removed", dn_before=before[d]) for d in diff.removed]
            + [EntryChange(d, "changed", before[d], after[d], tuple(fields))
               for d, fields in sorted(diff.changed.items())])


def apply_whitelist(session: Session, data: bytes, *, actor: str, source: str,
                    replace: bool = True, local_domains: Iterable[str] = (),
                    dry_run: bool = False) -> Applied:
    """Import ``data`` (``trust_space.whitelist.import_whitelist``: our own domains ignored,
    relay routes kept) and record the change with its warnings; ``dry_run`` changes and
    records nothing.

    Raises:
        ImportFailed: the file does not parse; nothing is changed.
    """
    entries = parse_whitelist(data)
    after = {e.domain: e.certificate_dn for e in entries}
    before = dict(session.execute(select(TrustedDomain.domain, TrustedDomain.certificate_dn))
                  .all())
    run = diff_whitelist if dry_run else import_whitelist
    diff = run(session, data, replace=replace, local_domains=local_domains)
    changes = _lines(diff, before, after)
    if dry_run or diff.is_empty:
        return Applied(diff, changes, len(entries))
    change = WhitelistChange(actor=actor[:600], source=source[:500], added=len(diff.added),
                             removed=len(diff.removed), changed=len(diff.changed),
                             diff=json.dumps([_as_json(c) for c in changes], ensure_ascii=False))
    session.add(change)
    session.flush()
    warnings = [WhitelistWarning(change_id=change.id, kind=kind, domain=c.domain,
                                 dn_before=c.dn_before, dn_after=c.dn_after)
                for c in changes
                for kind in ([WarningKind.DN_CHANGED] if c.dn_changed else
                             [WarningKind.DOMAIN_REMOVED] if c.kind == "removed" else [])]
    session.add_all(warnings)
    session.flush()
    for warning in warnings:  # ECO.4.1.2: the trail says what changed in the trust space
        audit.record(session, actor=actor[:254], action="whitelist.alert", target=warning.domain,
                     outcome=warning.kind, request={"change": change.id, "before":
                                                    warning.dn_before, "after": warning.dn_after})
    return Applied(diff, changes, len(entries), change.id, warnings)


def _as_json(change: EntryChange) -> dict[str, Any]:
    out: dict[str, Any] = {"domain": change.domain, "kind": change.kind}
    if change.dn_before:
        out["dn_before"] = change.dn_before
    if change.dn_after:
        out["dn_after"] = change.dn_after
    if change.fields:
        out["fields"] = list(change.fields)
    return out


def lines_of(change: WhitelistChange) -> list[EntryChange]:
    """The diff lines of a recorded change."""
    return [EntryChange(d["domain"], d["kind"], d.get("dn_before", ""), d.get("dn_after", ""),
                        tuple(d.get("fields", ()))) for d in json.loads(change.diff or "[]")]


# ---------------------------------------------------------------- following the published list
@dataclass(frozen=True)
class FetchReport:
    """The result of one ``follow``: its outcome, a French detail, and what was applied."""

    outcome: FetchOutcome
    detail: str
    applied: Applied | None = None
    errors: tuple[str, ...] = ()
    fetch_id: int | None = None


Transport = Callable[[str, str], Fetched]  # (etag, last_modified) -> Fetched; raises
# core.download.DownloadFailed


def _validators(session: Session, url: str) -> tuple[str, str]:
    """ETag / Last-Modified of the last good fetch of ``url`` — unless the list was changed
    from elsewhere since (a manual import): then the file must be taken again in full."""
    last = session.scalars(select(WhitelistFetch).where(
        WhitelistFetch.url == url, WhitelistFetch.outcome.in_([o.value for o in GOOD]))
        .order_by(WhitelistFetch.id.desc()).limit(1)).first()
    if last is None:
        return "", ""
    other = session.scalar(select(func.count()).select_from(WhitelistChange).where(
        WhitelistChange.at >= last.at, WhitelistChange.source != url))
    return ("", "") if other else (last.etag, last.last_modified)


def follow(db: Database, url: str, get: Transport, *, requested_by: str,
           local_domains: Iterable[str] = (), dry_run: bool = False,
           actor: str | None = None) -> FetchReport:
    """Fetch the published list with ``get``, apply it (replace mode) and record the fetch,
    the change and its warnings, with audit records. ``actor``: who the history names
    (default ``fetch <url>``). A dry run neither sends validators nor records anything.
    """
    who = actor or f"fetch {url}"
    with db.read() as session:
        etag, modified = ("", "") if dry_run else _validators(session, url)
    try:
        fetched = get(etag, modified)
    except DownloadFailed as exc:
        report = FetchReport(FetchOutcome.FAILED, exc.message)
        return report if dry_run else _record(db, url, requested_by, who, report)
    if fetched.data is None:
        report = FetchReport(FetchOutcome.NOT_MODIFIED, "liste inchangée (304 Not Modified)")
        return report if dry_run else _record(db, url, requested_by, who, report, fetched)
    try:
        with db.transaction() as session:
            applied = apply_whitelist(session, fetched.data, actor=who, source=url,
                                      local_domains=local_domains, dry_run=dry_run)
            outcome = FetchOutcome.APPLIED if applied.change_id or (
                dry_run and not applied.diff.is_empty) else FetchOutcome.UNCHANGED
            report = FetchReport(outcome, _summary(applied.diff, applied.entries), applied)
            if not dry_run:
                report = _write(session, url, requested_by, who, report, fetched,
                                applied.entries)
            return report
    except ImportFailed as exc:
        shown = tuple(str(e) for e in exc.errors[:SHOWN_ERRORS])
        more = f" (et {len(exc.errors) - SHOWN_ERRORS} autre(s))" \
            if len(exc.errors) > SHOWN_ERRORS else ""
        report = FetchReport(FetchOutcome.REFUSED, f"fichier refusé, liste précédente gardée : "
                             f"{len(exc.errors)} erreur(s) — {'; '.join(shown)}{more}",
                             errors=tuple(str(e) for e in exc.errors))
        return report if dry_run else _record(db, url, requested_by, who, report)


def _summary(diff: WhitelistDiff, count: int) -> str:
    if diff.is_empty:
        return f"liste identique ({count} domaine(s))"
    return (f"{len(diff.added)} ajout(s), {len(diff.removed)} retrait(s), "
            f"{len(diff.changed)} modification(s) — {count} domaine(s) dans la liste")


def _record(db: Database, url: str, requested_by: str, actor: str, report: FetchReport,
            fetched: Fetched | None = None) -> FetchReport:
    with db.transaction() as session:
        return _write(session, url, requested_by, actor, report, fetched, None)


def _write(session: Session, url: str, requested_by: str, actor: str, report: FetchReport,
           fetched: Fetched | None, count: int | None) -> FetchReport:
    good = report.outcome in GOOD and fetched is not None
    row = WhitelistFetch(url=url[:500], requested_by=requested_by[:254],
                         outcome=report.outcome.value, detail=report.detail[:1000],
                         etag=fetched.etag[:200] if good and fetched else "",
                         last_modified=fetched.last_modified[:100] if good and fetched else "",
                         entries=count,
                         change_id=report.applied.change_id if report.applied else None)
    session.add(row)
    session.flush()
    audit.record(session, actor=actor[:254], action="whitelist.fetch", target=url[:254],
                 outcome="ok" if report.outcome in GOOD else report.outcome.value,
                 request={"result": report.outcome.value, "requested_by": requested_by,
                          "fetch": row.id, "change": row.change_id})
    session.execute(delete(WhitelistFetch).where(WhitelistFetch.id <= row.id - KEPT_FETCHES))
    return FetchReport(report.outcome, report.detail, report.applied, report.errors, row.id)


# ---------------------------------------------------------------- reading
def changes(session: Session, limit: int = 20) -> list[WhitelistChange]:
    """The latest changes, newest first."""
    return list(session.scalars(select(WhitelistChange).order_by(WhitelistChange.id.desc())
                                .limit(limit)))


def fetches(session: Session, limit: int = 10) -> list[WhitelistFetch]:
    """The latest fetches, newest first."""
    return list(session.scalars(select(WhitelistFetch).order_by(WhitelistFetch.id.desc())
                                .limit(limit)))


def open_warnings(session: Session) -> list[WhitelistWarning]:
    """Warnings not yet acknowledged, oldest first."""
    return list(session.scalars(select(WhitelistWarning).where(
        WhitelistWarning.acknowledged_at.is_(None)).order_by(WhitelistWarning.id)))


class AlreadyAcknowledged(TrustSpaceError):
    code = "already_acknowledged"


def acknowledge(session: Session, warning_id: int, who: str) -> WhitelistWarning:
    """Mark a warning as seen by ``who`` (it leaves the page and the alert's gauge).

    Raises:
        NotFound: no such warning.
        AlreadyAcknowledged: it was already (by whom, when, in the message).
    """
    warning = session.get(WhitelistWarning, warning_id)
    if warning is None:
        raise NotFound(f"Aucun avertissement n° {warning_id}.")
    if warning.acknowledged_at is not None:
        raise AlreadyAcknowledged(f"L'avertissement n° {warning_id} ({warning.domain}) a déjà "
                                  f"été pris en compte par {warning.acknowledged_by}.")
    warning.acknowledged_at, warning.acknowledged_by = utcnow(), who[:254]
    return warning


@dataclass(frozen=True)
class Status:
    """What the metrics and the pages need in one look: the last fetch, the last good one,
    failures in a row since, and open warnings by kind."""

    last: WhitelistFetch | None
    last_good_at: datetime | None
    failures_in_a_row: int
    open_by_kind: dict[str, int]


def status(session: Session) -> Status:
    last = session.scalars(select(WhitelistFetch).order_by(WhitelistFetch.id.desc())
                           .limit(1)).first()
    good = session.scalars(select(WhitelistFetch).where(
        WhitelistFetch.outcome.in_([o.value for o in GOOD]))
        .order_by(WhitelistFetch.id.desc()).limit(1)).first()
    failures = session.scalar(select(func.count()).select_from(WhitelistFetch).where(
        WhitelistFetch.id > (good.id if good else 0))) or 0
    by_kind = dict(session.execute(select(WhitelistWarning.kind, func.count()).where(
        WhitelistWarning.acknowledged_at.is_(None)).group_by(WhitelistWarning.kind)).all())
    return Status(last, good.at if good else None, failures,
                  {k.value: by_kind.get(k.value, 0) for k in WarningKind})


def due(session: Session, every: timedelta, retry: timedelta, now: datetime | None = None
        ) -> bool:
    """Is a scheduled fetch due? ``every`` after the last fetch, ``retry`` (shorter) after a
    failed one."""
    last = session.scalars(select(WhitelistFetch).order_by(WhitelistFetch.id.desc())
                           .limit(1)).first()
    if last is None:
        return True
    wait = every if last.outcome in [o.value for o in GOOD] else min(every, retry)
    return (now or utcnow()) - last.at >= wait
