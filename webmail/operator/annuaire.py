"""The operator's "Annuaire national" page (issue #20): the national directory feed with its
states, and the two actions on a row, "Renvoyer" (the same patch, now) and "Marquer résolu"
(a 404 or 412 settled by hand: the next rows of that address may go).

The views parse, call one function of ``trust_space.annuaire`` and audit the outcome, refusals
too; every change is a POST with its CSRF token. Access: the operator pages' rule
(``webmail.operator.require_operator``: an operator, logged in with TOTP).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.errors import MssError
from trust_space import annuaire
from trust_space.models import DirectoryFeed, FeedState
from webmail.context import mss, operator_required, record
from webmail.forms import EmptyForm
from webmail.operator import require_operator

bp = Blueprint("operator_annuaire", __name__, url_prefix="/operateur/annuaire")
SHOWN = 200


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Operators only, logged in with TOTP."""
    require_operator()


@bp.get("")
def feed() -> str:
    """Counts per state, then the latest rows (those of one state with ``?etat=``)."""
    wanted = request.args.get("etat", "")
    state = FeedState(wanted) if wanted in {s.value for s in FeedState} else None
    with mss().db.transaction() as db:
        counts = annuaire.counts(db)
        rows = annuaire.entries(db, state, limit=SHOWN)
        return render_template(
            "ops/annuaire.html", tab="annuaire", counts=counts, rows=rows, state=state,
            enabled=bool(mss().settings.annuaire_url), events=annuaire.EVENT_FR,
            states=annuaire.STATE_FR, waiting=annuaire.WAITING, form=EmptyForm())


@bp.post("/<int:feed_id>/renvoyer")
def resend(feed_id: int) -> Response:
    return _perform(feed_id, "annuaire.resend", annuaire.resend,
                    "L'envoi {id} ({address}) repart au prochain tour.")


@bp.post("/<int:feed_id>/resolu")
def resolve(feed_id: int) -> Response:
    return _perform(feed_id, "annuaire.resolve", annuaire.resolve,
                    "L'envoi {id} ({address}) est marqué résolu.")


def _perform(feed_id: int, action: str, doer: Callable[[Session, int], DirectoryFeed],
             done: str) -> Response:
    """Run ``doer`` in one transaction, audit it (refused or done), tell."""
    EmptyForm().validate_on_submit()  # CSRF is checked by CSRFProtect before the view
    etat = request.form.get("etat", "")
    back = url_for(".feed", etat=etat if etat in {s.value for s in FeedState} else None)
    with mss().db.transaction() as db:
        target = f"envoi {feed_id}"[:40]
        try:
            target = annuaire.entry(db, feed_id).address
            row = doer(db, feed_id)
        except MssError as exc:
            record(db, action, exc.code, target=target, id=feed_id, via="operateur")
            flash(exc.message, "error")
            return redirect(back)
        record(db, action, "ok", target=row.address, id=row.id, event=row.event.value,
               via="operateur")
        flash(done.format(id=row.id, address=row.address), "success")
    return redirect(back)
