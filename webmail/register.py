"""Inscription: the four steps of the regional platforms (carte, identité, identifiant, adresse).

What each step collects is kept in the server-side session (``REG``) until the last step
creates the pending registration (``trust_space.registration``); an error re-shows the form
with everything typed and the message next to its field. The password is kept only as its
argon2 hash between steps 3 and 4.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography import x509
from flask import Blueprint, Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from certs.errors import CertError
from certs.validation import card_identity, validate
from core.errors import MssError
from trust_space import registration
from trust_space.accounts import hash_password
from trust_space.naming import parse_national_id
from webmail.context import mss, record
from webmail.forms import EmptyForm
from webmail.mailer import build_mail, registration_text
from webmail.register_forms import AddressForm, CredentialsForm, IdentityForm
from webmail.security import limiter, register_limit
from webmail.tls import CLIENT_CERT_ENV

log = logging.getLogger("mss.webmail")
bp = Blueprint("register", __name__, url_prefix="/inscription")
REG = "registration"
STEPS = ("Carte CPS", "Identité", "Identifiant", "Adresse")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.add_url_rule("/cgu", "register.cgu", lambda: render_template("register/cgu.html"))


def _reg() -> dict[str, Any]:
    data = session.get(REG)
    return data if isinstance(data, dict) else {}


def _save(**changes: Any) -> None:
    session[REG] = {**_reg(), **changes}


def _page(template: str, step: int, status: int = 200, **context: Any) -> Response:
    html = render_template(template, step=step, steps=STEPS, **context)
    return Response(html, status=status, mimetype="text/html")


@bp.route("", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def start() -> Response:
    form, error = EmptyForm(), None
    if form.validate_on_submit():
        if request.form.get("card") != "yes":
            session[REG] = {"card": None}
            return redirect(url_for("register.identity"))
        try:
            session[REG] = {"card": _card_fields()}
            return redirect(url_for("register.identity"))
        except MssError as exc:
            error = exc.message
    return _page("register/start.html", 1, 400 if error else 200, form=form, error=error,
                 card_present=bool(request.environ.get(CLIENT_CERT_ENV)))


def _card_fields() -> dict[str, str]:
    """The identity of the presented, validated card, as step-2 field values.

    Raises:
        CertError: no valid card certificate (French message).
    """
    pem = request.environ.get(CLIENT_CERT_ENV)
    if not pem:
        raise CertError("Aucune carte CPS n'a été détectée : insérez-la dans le lecteur et "
                        "rechargez la page, ou continuez sans carte.")
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    validate(cert, mss().trust_store(), purpose="client")
    identity = card_identity(cert)
    kind, number = parse_national_id(identity.national_id) or ("rpps", "")
    return {"first_name": identity.first_name, "last_name": identity.last_name,
            "profession": identity.profession, "id_kind": kind, "id_number": number}


@bp.route("/identite", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def identity() -> Response:
    reg = _reg()
    if "card" not in reg:
        return redirect(url_for("register.start"))
    stored = reg.get("identity") or {}
    form = IdentityForm(data={**stored, "email_confirm": stored.get("email", ""),
                              **(reg["card"] or {})})
    form.lock_card_fields(reg["card"])
    if form.validate_on_submit() and _identity_free(form):
        _save(identity=form.values())
        return redirect(url_for("register.credentials"))
    status = 400 if request.method == "POST" else 200
    return _page("register/identity.html", 2, status, form=form, card=reg["card"])


def _identity_free(form: IdentityForm) -> bool:
    """No account exists yet for the RPPS/ADELI (else the error goes next to the number)."""
    number = form.id_number.data.strip()
    rpps, adeli = (number, None) if form.id_kind.data == "rpps" else (None, number)
    try:
        with mss().db.transaction() as db:
            registration.check_not_registered(db, rpps, adeli)
    except registration.AlreadyRegistered as exc:
        form.id_number.errors = [exc.message]
        return False
    return True


def _proposed() -> str:
    ident = _reg()["identity"]
    with mss().db.transaction() as db:
        return registration.proposed_address(db, ident["first_name"], ident["last_name"],
                                             mss().settings.domain)


@bp.route("/identifiant", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def credentials() -> Response:
    if "identity" not in _reg():
        return redirect(url_for("register.identity"))
    form = CredentialsForm()
    if form.validate_on_submit():
        _save(password_hash=hash_password(form.password.data))
        return redirect(url_for("register.address"))
    status = 400 if request.method == "POST" else 200
    return _page("register/credentials.html", 3, status, form=form, proposed=_proposed())


@bp.route("/adresse", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def address() -> Response:
    reg = _reg()
    if "password_hash" not in reg:
        return redirect(url_for("register.credentials"))
    ident = reg["identity"]
    form = AddressForm(data={"pharmacy_postal_code": ident["postal_code"],
                             "pharmacy_city": ident["city"]} if request.method == "GET" else None)
    if form.validate_on_submit():
        addresses = _create(reg, form)
        session.pop(REG, None)
        session["registration_done"] = addresses
        return redirect(url_for("register.done"))
    status = 400 if request.method == "POST" else 200
    return _page("register/address.html", 4, status, form=form, proposed=_proposed(),
                 pharmacist=ident["profession"] == "Pharmacien", domain=mss().settings.domain)


def _create(reg: dict[str, Any], form: AddressForm) -> list[str]:
    """Create the pending registration, audit it, send the confirmation e-mail."""
    ident = reg["identity"]
    number = ident["id_number"]
    pharmacy = registration.Pharmacy(
        form.pharmacy_name.data.strip(), form.finess.data.strip(),
        form.pharmacy_postal_code.data.strip(), form.pharmacy_city.data.strip()) \
        if form.pharmacy.data and ident["profession"] == "Pharmacien" else None
    data = registration.Registration(
        rpps=number if ident["id_kind"] == "rpps" else None,
        adeli=number if ident["id_kind"] == "adeli" else None,
        professional=_professional_fields(ident), password_hash=reg["password_hash"],
        pharmacy=pharmacy)
    with mss().db.transaction() as db:
        boxes = registration.register(db, data, mss().settings.domain)
        addresses = [box.address for box in boxes]
        record(db, "registration.request", "ok", actor=addresses[0], target=addresses[0],
               addresses=addresses, card=bool(reg.get("card")))
    subject, text = registration_text(addresses)
    try:
        mss().mailer.send(ident["email"], build_mail(to=ident["email"], sender=mss().sender,
                                                     subject=subject, text=text))
    except (MssError, OSError):
        # The registration stands; the operator sees it and e-mails at validation.
        log.exception("courriel de confirmation d'inscription non envoyé")
    return addresses


def _professional_fields(ident: dict[str, str]) -> dict[str, object]:
    return {
        "civility": ident["civility"], "first_name": ident["first_name"],
        "last_name": ident["last_name"], "profession": ident["profession"],
        "specialty": ident["specialty"], "usual_email": ident["email"].lower(),
        "mobile": ident["mobile"], "phone": ident["phone"],
        "place_of_practice": ident["place_of_practice"], "address": ident["address"],
        "postal_code": ident["postal_code"], "city": ident["city"],
        "birth_day": int(ident["birth_day"]), "birth_month": int(ident["birth_month"]),
    }


@bp.get("/terminee")
def done() -> Response:
    addresses = session.get("registration_done")
    if not addresses:
        return redirect(url_for("register.start"))
    return _page("register/done.html", 5, addresses=addresses)
