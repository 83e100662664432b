"""Operator pages of the relay (``Account.is_operator`` only): the queue (retry, delete),
recent refusals by reason, the peers of the trust space, the audit trail (search, CSV
export) and the metrics. Registrations pending validation stay on the ``operator`` blueprint.

Everything shown comes from the database the gateway and the trust space already write —
queue rows, the delivery timeline, the whitelist, the audit trail — and the peer CA files
under ``DATA_DIR/pki/peers``; nothing shows message content.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import Select, func, select
from werkzeug.wrappers import Response as Redirect

from core.audit import AuditRecord
from core.db import utcnow
from core.errors import MssError
from spool.events import REFUSALS
from webmail import nav
from webmail.context import mss, operator_required, record
from webmail.forms import EmptyForm
from webmail.mail import relay
from webmail.operator import peers as peers_page
from webmail.operator import require_operator

bp = Blueprint("ops", __name__, url_prefix="/operateur")
PER_PAGE = 50
CSV_MAX = 10_000
_ID = "0123456789abcdefABCDEF-_"


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    # Beside part 1's "Opérateur" (registrations, prefix /operateur): the pages share the
    # prefix, so that entry is the one shown as current; the tabs link them all.
    nav.add(app, "ops.queue", "Exploitation", order=91, operator_only=True)


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Every page of this blueprint is for operators only, logged in with TOTP."""
    require_operator()


def _queue_id(value: str) -> str:
    if not value or len(value) > 32 or any(c not in _ID for c in value):
        from core.errors import NotFound

        raise NotFound("Message inconnu dans la file.")
    return value


@bp.get("/file")
def queue() -> str:
    """The queue, oldest first."""
    with mss().db.transaction() as db:
        entries = relay.queue(db)
        return render_template("ops/queue.html", entries=entries, depth=relay.depth(db),
                               form=EmptyForm(), tab="file")


@bp.post("/file/<queue_id>/relancer")
def retry(queue_id: str) -> Redirect:
    """Make the message's waiting deliveries due now."""
    with mss().db.transaction() as db:
        count = relay.retry(db, _queue_id(queue_id))
        record(db, "queue.retry", "ok" if count else "nothing", target=queue_id,
               recipients=count)
    flash(f"{count} remise(s) relancée(s) pour {queue_id}." if count else
          f"Rien à relancer pour {queue_id} (déjà remis ?).", "success" if count else "info")
    return redirect(url_for("ops.queue"))


@bp.post("/file/<queue_id>/supprimer")
def delete(queue_id: str) -> Redirect:
    """Remove a message from the queue (its timeline stays)."""
    with mss().db.transaction() as db:
        done = relay.remove(db, _queue_id(queue_id))
        record(db, "queue.delete", "ok" if done else "not_found", target=queue_id)
    flash(f"Message {queue_id} supprimé de la file." if done else
          f"Message {queue_id} introuvable.", "success" if done else "error")
    return redirect(url_for("ops.queue"))


@bp.get("/refus")
def refusals() -> str:
    """SMTP refusals of the last days, counted by reason, and the latest ones."""
    days = _int_arg("jours", 7, 1, 90)
    since = utcnow() - timedelta(days=days)
    where = (AuditRecord.action.in_(REFUSALS), AuditRecord.at >= since)
    with mss().db.transaction() as db:
        counts = db.execute(select(AuditRecord.outcome, func.count()).where(*where)
                            .group_by(AuditRecord.outcome)
                            .order_by(func.count().desc())).all()
        latest = db.scalars(select(AuditRecord).where(*where)
                            .order_by(AuditRecord.id.desc()).limit(100)).all()
        rows = [_refusal_row(r) for r in latest]
    return render_template("ops/refusals.html", counts=counts, rows=rows, days=days,
                           tab="refus")


def _refusal_row(rec: AuditRecord) -> dict[str, object]:
    details = _json(rec.request)
    return {"at": rec.at, "channel": rec.action.split(".")[1], "step": rec.target,
            "reason": rec.outcome, "actor": rec.actor, "sender": details.get("from", ""),
            "reply": details.get("reply", "")}


@bp.get("/pairs")
def peers() -> str:
    """The trust space's health: each peer's last probe and traffic, our certificates, the
    peer CAs we trust, the last imports."""
    s, now = mss().settings, utcnow()
    with mss().db.read() as db:
        rows = peers_page.peer_rows(db, s.domain, now)
        imports = db.scalars(select(AuditRecord).where(AuditRecord.action.in_(
            ["whitelist.import", "directory.import_peer"])).order_by(
            AuditRecord.id.desc()).limit(10)).all()
        imported = [(r.at, r.action, r.target, _json(r.request)) for r in imports]
    return render_template(
        "ops/peers.html", rows=rows, summary=peers_page.summary(rows),
        ours=peers_page.our_certificates(s.pki_dir, now),
        authorities=peers_page.peer_authorities(s.pki_dir, now), imports=imported,
        period=s.peer_probe_seconds, can_check=mss().peer_check is not None,
        form=EmptyForm(), tab="pairs")


@bp.post("/pairs/verifier")
def check_peers() -> Redirect:
    """Probe now every peer, or the one named (``domaine``); audited by the run itself
    (``peers.check``), refusals here."""
    domain = request.form.get("domaine", "").strip().lower() or None
    check = mss().peer_check
    if check is None or (domain is not None and len(domain) > 253):
        with mss().db.transaction() as db:
            record(db, "peers.check", "unavailable" if check is None else "not_found",
                   target=(domain or "*")[:254], via="operateur")
        flash("Vérification impossible depuis ce processus (le service web n'a pas été lancé "
              "par « mss run ») : utilisez « mss peers check »." if check is None else
              "Domaine inconnu.", "error")
        return redirect(url_for("ops.peers"))
    try:
        results = check(domain, current_user.login,
                        {"via": "operateur", "ip": request.remote_addr or ""})
    except MssError as exc:
        with mss().db.transaction() as db:
            record(db, "peers.check", exc.code, target=(domain or "*")[:254], via="operateur")
        flash(f"Vérification impossible : {exc.message}", "error")
        return redirect(url_for("ops.peers"))
    failed = [f"{d} : {why}" for d, ok, why in results if not ok]
    text = (f"Vérification faite : {len(results)} pair(s), {len(results) - len(failed)} en "
            f"bon état, {len(failed)} en échec")
    flash(text + (" — " + " ; ".join(failed[:5]) if failed else "") + ".",
          "warning" if failed else "success")
    return redirect(url_for("ops.peers") + (f"#pair-{domain}" if domain else ""))


@bp.get("/journal")
def audit() -> str:
    """Search in the audit trail, newest first."""
    page = _int_arg("page", 1, 1, 100_000)
    with mss().db.transaction() as db:
        query = _audit_query().order_by(AuditRecord.id.desc())
        rows = db.scalars(query.offset((page - 1) * PER_PAGE).limit(PER_PAGE + 1)).all()
    return render_template("ops/audit.html", rows=rows[:PER_PAGE], more=len(rows) > PER_PAGE,
                           page=page, values=request.args, tab="journal")


@bp.get("/journal.csv")
def audit_csv() -> Response:
    """The same search as CSV (UTF-8 with BOM for spreadsheets; at most 10 000 rows)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["id", "date (UTC)", "acteur", "action", "cible", "résultat", "requête"])
    with mss().db.transaction() as db:
        for r in db.scalars(_audit_query().order_by(AuditRecord.id.desc()).limit(CSV_MAX)):
            writer.writerow([r.id, r.at.isoformat(timespec="seconds"), _cell(r.actor),
                             _cell(r.action), _cell(r.target), _cell(r.outcome),
                             _cell(r.request)])
        record(db, "audit.export", "ok", filters={k: v for k, v in request.args.items()})
    response = Response("\ufeff" + out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=\"journal-audit.csv\""
    return response


def _cell(value: str) -> str:
    """No formula injection in a spreadsheet (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _audit_query() -> Select[AuditRecord]:
    a = request.args
    query = select(AuditRecord)
    for arg, column in (("acteur", AuditRecord.actor), ("cible", AuditRecord.target)):
        if a.get(arg, "").strip():
            query = query.where(column.contains(a[arg].strip()[:100], autoescape=True))
    if a.get("action", "").strip():
        query = query.where(AuditRecord.action.startswith(a["action"].strip()[:64],
                                                          autoescape=True))
    if a.get("resultat", "").strip():
        query = query.where(AuditRecord.outcome == a["resultat"].strip()[:64])
    for arg, op in (("du", "ge"), ("au", "lt")):
        day = _day(a.get(arg, ""))
        if day is not None:
            bound = day + (timedelta(days=1) if op == "lt" else timedelta())
            query = query.where(AuditRecord.at >= bound if op == "ge" else AuditRecord.at < bound)
    return query


@bp.get("/metriques")
def metrics() -> str:
    """Where the Prometheus metrics are, and a summary of the last 24 hours."""
    s = mss().settings
    with mss().db.transaction() as db:
        events = relay.recent_events(db, utcnow() - timedelta(days=1))
        depth = relay.depth(db)
    url = f"http://{s.listen_address}:{s.metrics_port}/metrics" if s.metrics_port else None
    return render_template("ops/metrics.html", url=url, events=events, depth=depth,
                           labels=relay.EVENT_FR, tab="metriques")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "")
    return min(max(int(raw), low), high) if raw.isdigit() else default


def _day(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


def _json(text: str) -> dict[str, object]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
