"""Inscription: the four steps of the regional platforms (carte, identité, identifiant, adresse).

What each step collects is kept in the server-side session (``REG``) until the last step
creates the pending registration (``trust_space.registration``); an error re-shows the form
with everything typed and the message next to its field. The password is kept only as its
argon2 hash between steps 3 and 4.

Whether an RPPS/ADELI number already has an account is said only to someone who proved who
they are (issue #14): with a validated CPS card or Pro Santé Connect at once (their identity
fields are then read-only, issue #16); otherwise after the one-time code sent at step 2 to the
usual address (``registration.proof_address``: the one on file for a number that has an
account) — until then both cases look the same.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from cryptography import x509
from flask import Blueprint, Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from certs.errors import CertError
from certs.validation import card_identity, validate
from core.db import utcnow
from core.errors import MssError
from core.mailer import SIGNATURE, build_mail
from trust_space import registration
from trust_space.accounts import hash_password
from trust_space.naming import parse_national_id
from webmail.auth import otp
from webmail.context import mss, record
from webmail.forms import CodeForm, EmptyForm
from webmail.register.forms import AddressForm, CredentialsForm, IdentityForm
from webmail.security import limiter, register_limit
from webmail.tls import CLIENT_CERT_ENV

log = logging.getLogger("mss.webmail")
bp = Blueprint("register", __name__, url_prefix="/inscription")
REG = "registration"
STEPS = ("Carte CPS", "Identité", "Identifiant", "Adresse")
PROVEN = "registration_proven"  # an identity Pro Santé Connect proved (webmail.auth.psc)
PROVEN_SECONDS = 600  # how long it may start a registration


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.add_url_rule("/cgu", "register.cgu", lambda: render_template("register/cgu.html"))


def _reg() -> dict[str, Any]:
    data = session.get(REG)
    return data if isinstance(data, dict) else {}


def _save(**changes: Any) -> None:
    session[REG] = {**_reg(), **changes}


def _steps() -> tuple[str, ...]:
    """The steps' names; the first says how identity is proven (Pro Santé Connect too when
    it is configured, issue #16)."""
    if _reg().get("source") == "psc":
        return ("Pro Santé Connect", *STEPS[1:])
    if mss().settings.oidc_issuer:
        return ("Carte CPS ou PSC", *STEPS[1:])
    return STEPS


def _page(template: str, step: int, status: int = 200, **context: Any) -> Response:
    html = render_template(template, step=step, steps=_steps(), **context)
    return Response(html, status=status, mimetype="text/html")


@bp.route("", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def start() -> Response:
    from webmail.auth.psc import to_public_host

    elsewhere = to_public_host()
    if elsewhere is not None:
        return elsewhere
    form, error = EmptyForm(), None
    if form.validate_on_submit():
        choice = request.form.get("card")
        if choice == "psc":  # "Créer mon compte avec Pro Santé Connect" (webmail.auth.psc)
            if _proven() is not None:
                return begin_proven()
            error = ("Votre identité Pro Santé Connect n'est plus disponible : choisissez "
                     "à nouveau « Avec Pro Santé Connect ».")
        elif choice != "yes":
            session[REG] = {"card": None}
            return redirect(url_for("register.identity"))
        else:
            try:
                return _begin(_card_fields(), "card")
            except MssError as exc:
                error = exc.message
    return _page("register/start.html", 1, 400 if error else 200, form=form, error=error,
                 card_present=bool(request.environ.get(CLIENT_CERT_ENV)))


def _begin(card: dict[str, str], source: str, prefill: dict[str, str] | None = None
           ) -> Response:
    """The wizard with an identity a card or Pro Santé Connect (``source``) proved: its
    fields read-only at step 2 — or, when it already has an account, that is told at once,
    before any form (issue #15 item 10)."""
    if _card_registered(card):
        session.pop(REG, None)
        return _page("register/exists.html", 1, 409, card=True, source=source,
                     kind=card["id_kind"].upper(), form=EmptyForm())
    session[REG] = {"card": card, "source": source, "prefill": prefill or {}}
    return redirect(url_for("register.identity"))


def offer(card: dict[str, str], source: str, *, civility: str = "") -> None:
    """Keep an identity ``source`` (Pro Santé Connect) proved, as step-2 values, for
    ``begin_proven`` — at once, or from "Créer mon compte avec Pro Santé Connect" on the
    page that says there is no account yet (at most ``PROVEN_SECONDS`` later)."""
    session[PROVEN] = {"card": card, "source": source, "civility": civility,
                       "at": time.time()}


def _proven() -> dict[str, Any] | None:
    data = session.get(PROVEN)
    if not isinstance(data, dict) or time.time() - float(data.get("at", 0)) > PROVEN_SECONDS:
        return None
    return data


def begin_proven() -> Response:
    """The wizard with the identity ``offer`` kept (used once)."""
    data = _proven()
    session.pop(PROVEN, None)
    if data is None:
        return redirect(url_for("register.start"))
    prefill = {"civility": data["civility"]} if data.get("civility") else {}
    return _begin(data["card"], data["source"], prefill)


def _card_registered(card: dict[str, str]) -> bool:
    """The validated card's RPPS/ADELI already has an account (the card proves who asks)."""
    number = card["id_number"]
    with mss().db.transaction() as db:
        return registration.is_registered(db, number if card["id_kind"] == "rpps" else None,
                                          number if card["id_kind"] == "adeli" else None)


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
    source = reg.get("source", "card")
    form = IdentityForm(data={**reg.get("prefill", {}), **stored,
                              "email_confirm": stored.get("email", ""), **(reg["card"] or {})})
    form.lock_card_fields(reg["card"], source)
    if form.validate_on_submit():
        if not reg["card"]:
            # Anonymous: the same answer whether the number has an account or not, until the
            # code sent to the usual address proves who asks (issue #14).
            _save(identity=form.values(), proven=False)
            _send_proof(form.values())
            return redirect(url_for("register.verify"))
        if _identity_free(form):  # the validated card proves who asks
            _save(identity=form.values(), proven=True)
            return redirect(url_for("register.credentials"))
    status = 400 if request.method == "POST" else 200
    return _page("register/identity.html", 2, status, form=form, card=reg["card"],
                 source=source)


def _numbers(ident: dict[str, str]) -> tuple[str | None, str | None]:
    """(rpps, adeli) of the identity step's values."""
    number = ident["id_number"].strip()
    return (number, None) if ident["id_kind"] == "rpps" else (None, number)


def _identity_free(form: IdentityForm) -> bool:
    """No account exists yet for the card's RPPS/ADELI (else the error goes next to the
    number, with a link to log in)."""
    rpps, adeli = _numbers(form.values())
    try:
        with mss().db.transaction() as db:
            registration.check_not_registered(db, rpps, adeli)
    except registration.AlreadyRegistered as exc:
        form.id_number.errors = [exc.message]
        return False
    return True


def _code_key() -> bytes:
    return hmac.new(mss().settings.secret(), b"mss registration code", hashlib.sha256).digest()


def _send_proof(ident: dict[str, str]) -> None:
    """A one-time code to the usual address (``registration.proof_address``): the typed one
    for a number without an account, the one on file otherwise."""
    rpps, adeli = _numbers(ident)
    with mss().db.transaction() as db:
        to = registration.proof_address(db, rpps, adeli, ident["email"])
    challenge, code = otp.start_email(_code_key(), utcnow())
    _save(proof=challenge.to_dict())
    if to is None:
        return  # an account without a usual address: nobody can prove it here (use the card)
    subject, text = registration_code_text(code, otp.CODE_TTL_SECONDS // 60)
    try:
        mss().mailer.send(to, build_mail(to=to, sender=mss().sender, subject=subject,
                                         text=text))
    except (MssError, OSError):
        log.warning("code d'inscription non envoyé (messagerie sortante en erreur)")


_CODE_ERRORS = {
    otp.CodeResult.WRONG: "Code incorrect : vérifiez-le et réessayez.",
    otp.CodeResult.EXPIRED: "Ce code a expiré : revenez à l'étape précédente pour en "
                            "recevoir un nouveau.",
    otp.CodeResult.EXHAUSTED: "Trop d'essais : revenez à l'étape précédente pour recevoir un "
                              "nouveau code.",
}


@bp.route("/verification", methods=["GET", "POST"])
@limiter.limit(register_limit, methods=["POST"])
def verify() -> Response:
    """The code sent by ``_send_proof``. Proven: a number that already has an account is
    told so now (with the way to log in), else the wizard goes on."""
    reg = _reg()
    if reg.get("proven"):
        return redirect(url_for("register.credentials"))
    if not reg.get("proof") or "identity" not in reg:
        return redirect(url_for("register.identity"))
    form, error = CodeForm(), None
    if form.validate_on_submit():
        challenge = otp.Challenge.from_dict(reg["proof"])
        result = otp.check(challenge, form.code.data, _code_key(), utcnow())
        _save(proof=challenge.to_dict())
        if result is otp.CodeResult.OK:
            rpps, adeli = _numbers(reg["identity"])
            with mss().db.transaction() as db:
                exists = registration.is_registered(db, rpps, adeli)
            if exists:
                session.pop(REG, None)
                return _page("register/exists.html", 2, 409,
                             kind="RPPS" if rpps else "ADELI", card=False)
            _save(proven=True, proof=None)
            return redirect(url_for("register.credentials"))
        error = _CODE_ERRORS[result]
    status = 400 if request.method == "POST" else 200
    return _page("register/verify.html", 2, status, form=form, error=error)


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
    if not _reg().get("proven"):
        return redirect(url_for("register.verify"))
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
               addresses=addresses, card=bool(reg.get("card")),
               proof=reg.get("source", "card") if reg.get("card") else "code")
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


def registration_code_text(code: str, minutes: int) -> tuple[str, str]:
    """Subject and text of the code that proves who registers with an RPPS/ADELI number."""
    return ("Votre code d'inscription",
            "Bonjour,\n\nUne inscription à la messagerie sécurisée de santé est en cours avec "
            f"votre numéro professionnel. Le code qui la confirme est :\n\n    {code}\n\nIl "
            f"est valable {minutes} minutes et ne sert qu'une fois. Si vous n'êtes pas à "
            "l'origine de cette demande, ignorez ce message : rien ne sera créé." + SIGNATURE)


def registration_text(addresses: list[str]) -> tuple[str, str]:
    """Subject and text confirming a registration request."""
    lines = "\n".join(f"  - {a}" for a in addresses)
    return ("Votre demande d'ouverture de messagerie sécurisée",
            "Bonjour,\n\nVotre demande d'ouverture de boîte aux lettres sécurisée a bien été "
            f"enregistrée :\n{lines}\n\nElle est en attente de validation par l'opérateur. "
            "Vous recevrez un courriel dès qu'elle sera validée." + SIGNATURE)
