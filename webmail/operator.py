"""Pages of the operator (``Account.is_operator``): registrations pending validation, with
validate / refuse. (Queue, peers and audit pages come with the mail views.)"""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from trust_space import registration
from webmail import nav
from webmail.context import mss, operator_required
from webmail.forms import EmptyForm
from webmail.validation import decide

bp = Blueprint("operator", __name__, url_prefix="/operateur")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    nav.add(app, "operator.registrations", "Opérateur", order=90, operator_only=True,
            prefix="/operateur")


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Every page of this blueprint is for operators only."""


@bp.get("/inscriptions")
def registrations() -> str:
    with mss().db.transaction() as db:
        rows = registration.pending(db)
        return render_template("operator/registrations.html", rows=rows, form=EmptyForm())


@bp.post("/inscriptions/decision")
def decision() -> Response:
    EmptyForm().validate_on_submit()
    address = request.form.get("address", "")
    accept = request.form.get("decision") == "validate"
    addresses = decide(mss().db, mss().settings, mss().mailer, address, accept=accept,
                       actor=current_user.login, webmail_url=mss().url)
    verb = "validée et publiée" if accept else "refusée"
    flash(f"Inscription {verb} : {', '.join(addresses)}.", "success")
    return redirect(url_for("operator.registrations"))
