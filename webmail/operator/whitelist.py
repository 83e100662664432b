"""The operator's "Liste blanche" page (issue #20): the whitelist followed from its URL — the
source, the last fetch and its result, the warnings (a peer's DN changed, a domain left the
list) until acknowledged, the history of changes with each diff, and "Récupérer maintenant".

The views parse, call one function of ``trust_space.whitelist_history`` and audit the
outcome, refusals too; every change is a POST with its CSRF token. Access: the operator
pages' rule (``webmail.operator.require_operator``: an operator, logged in with TOTP).
"""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from core.download import getter
from core.errors import MssError
from trust_space import whitelist_history as history
from webmail.context import mss, operator_required, record
from webmail.forms import EmptyForm
from webmail.operator import require_operator

bp = Blueprint("operator_whitelist", __name__, url_prefix="/operateur/liste-blanche")
SHOWN_CHANGES = 20
SHOWN_LINES = 100  # diff lines shown per change (all of them: `mss whitelist history`)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Operators only, logged in with TOTP."""
    require_operator()


@bp.get("")
def page() -> str:
    s = mss().settings
    with mss().db.read() as db:
        changes = [(c, history.lines_of(c)) for c in history.changes(db, SHOWN_CHANGES)]
        return render_template(
            "ops/whitelist.html", tab="liste-blanche", url=s.whitelist_url,
            ca=s.whitelist_ca, hours=s.whitelist_fetch_seconds / 3600,
            status=history.status(db), fetches=history.fetches(db, 10),
            warnings=history.open_warnings(db), changes=changes, shown=SHOWN_LINES,
            outcomes=history.OUTCOME_FR, good=[o.value for o in history.GOOD],
            form=EmptyForm())


@bp.post("/recuperer")
def fetch_now() -> Response:
    """Fetch the published list now, as the schedule would, in this request."""
    EmptyForm().validate_on_submit()  # CSRF is checked by CSRFProtect before the view
    s = mss().settings
    if not s.whitelist_url:
        with mss().db.transaction() as db:
            record(db, "whitelist.fetch_now", "disabled", via="operateur")
        flash("La liste blanche n'est pas suivie : MSS_WHITELIST_URL est vide.", "error")
        return redirect(url_for(".page"))
    login = current_user.login
    report = history.follow(mss().db, s.whitelist_url,
                            getter(s.whitelist_url, ca_file=s.whitelist_ca),
                            requested_by=login, actor=login, local_domains={s.domain})
    with mss().db.transaction() as db:
        record(db, "whitelist.fetch_now", report.outcome.value, target=s.whitelist_url[:254],
               fetch=report.fetch_id, via="operateur")
    good = report.outcome in history.GOOD
    warned = len(report.applied.warnings) if report.applied else 0
    text = f"Récupération : {history.OUTCOME_FR[report.outcome]} — {report.detail}"
    if warned:
        text += f" ; {warned} avertissement(s) à examiner ci-dessous"
    flash(text, "success" if good and not warned else "warning" if good else "error")
    return redirect(url_for(".page"))


@bp.post("/avertissements/<int:warning_id>/vu")
def acknowledge(warning_id: int) -> Response:
    """The operator has looked at a warning: it leaves the page and the alert."""
    EmptyForm().validate_on_submit()
    with mss().db.transaction() as db:
        try:
            warning = history.acknowledge(db, warning_id, current_user.login)
        except MssError as exc:
            record(db, "whitelist.acknowledge", exc.code, target=f"avertissement {warning_id}",
                   id=warning_id, via="operateur")
            flash(exc.message, "error")
            return redirect(url_for(".page"))
        record(db, "whitelist.acknowledge", "ok", target=warning.domain, id=warning.id,
               kind=warning.kind, via="operateur")
        flash(f"Avertissement sur {warning.domain} pris en compte.", "success")
    return redirect(url_for(".page"))
