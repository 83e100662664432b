"""The operator's registrations page (the ``operator`` blueprint, ``/operateur``): requests
pending validation, with validate / refuse (a reason mailed to the applicant, after a
confirmation page). The decision itself is ``webmail.operator.decision``.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from core.errors import NotFound
from trust_space import registration
from webmail.context import mss, operator_required
from webmail.forms import EmptyForm
from webmail.operator import require_operator
from webmail.operator.decision import REASON_MAX, clean_reason, decide

bp = Blueprint("operator", __name__, url_prefix="/operateur")
REASON_MIN = 10


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Every page of this blueprint is for operators only."""
    require_operator()


@bp.get("/inscriptions")
def registrations() -> str:
    with mss().db.transaction() as db:
        rows = registration.pending(db)
        return render_template("operator/registrations.html", rows=rows, form=EmptyForm())


@bp.post("/inscriptions/decision")
def decision() -> Response:
    EmptyForm().validate_on_submit()
    address = request.form.get("address", "")
    if request.form.get("decision") != "validate":
        # A refusal needs its reason and a confirmation (issue #15 item 4).
        return redirect(url_for("operator.refuse", adresse=address))
    addresses = decide(mss().db, mss().settings, mss().mailer, address, accept=True,
                       actor=current_user.login, webmail_url=mss().url)
    flash(f"Inscription validée et publiée : {', '.join(addresses)}.", "success")
    return redirect(url_for("operator.registrations"))


@bp.route("/inscriptions/refuser", methods=["GET", "POST"])
def refuse() -> Response:
    """Confirmation page of a refusal, with the reason mailed to the applicant."""
    address = (request.values.get("adresse") or "").strip()[:254]
    with mss().db.transaction() as db:
        pending = registration.find_pending(db, address) if address else None
        if pending is None:
            raise NotFound(f"Aucune inscription en attente pour « {address} ».")
        pro = pending.professional
        summary = {"name": f"{pro.civility} {pro.display_name}".strip(),
                   "profession": pro.profession, "number": pro.rpps or pro.adeli or "",
                   "kind": "RPPS" if pro.rpps else "ADELI", "email": pro.usual_email,
                   "addresses": pending.addresses}
    form, reason, error = EmptyForm(), clean_reason(request.form.get("motif", "")), None
    if form.validate_on_submit():
        if len(reason) >= REASON_MIN:
            addresses = decide(mss().db, mss().settings, mss().mailer, address, accept=False,
                               actor=current_user.login, webmail_url=mss().url, reason=reason)
            sent = f" Le motif a été envoyé à {summary['email']}." if summary["email"] else ""
            flash(f"Inscription refusée : {', '.join(addresses)}.{sent}", "success")
            return redirect(url_for("operator.registrations"))
        error = (f"Indiquez le motif du refus (au moins {REASON_MIN} caractères) : il est "
                 "envoyé au demandeur.")
    html = render_template("ops/registration_refuse.html", form=form, r=summary,
                           address=address, reason=reason, error=error, max=REASON_MAX,
                           contact=mss().settings.effective_operator_contact)
    return Response(html, status=400 if error else 200, mimetype="text/html")
