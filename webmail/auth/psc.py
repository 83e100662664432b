"""Se connecter avec Pro Santé Connect (issue #16): OpenID Connect's authorization code flow,
through Authlib's Flask client, against the provider of ``MSS_OIDC_ISSUER``.

- Start (POST with the CSRF token: only our own pages start a sign-in, no other site can
  send a browser into one): PKCE S256, ``state`` and ``nonce``, kept by Authlib in the
  server-side session (``webmail.sessions``), ``acr_values`` = ``MSS_OIDC_ACR``.
- Return: the state is single-use (Authlib removes it before anything else), the code is
  exchanged with our client authentication (``client_secret_basic``, or ``tls_client_auth``:
  client id in the form, certificate on the TLS session), the ID token is checked by
  Authlib on joserfc (signature by the provider's JWKS, iss, aud, exp, iat, nonce, azp,
  at_hash) with our options (auth_time present, acr at least ``MSS_OIDC_ACR``), then the
  national id is read from userinfo (``MSS_OIDC_ID_CLAIM``) — OWASP ASVS 5.0 V10.
- The account is the card's (``webmail.auth.rules.psc_account``); someone PSC knows and the
  directory does not is offered the registration wizard with the identity PSC gave.
- Logout ends the provider's session too (OpenID Connect RP-Initiated Logout 1.0).

Tokens never reach a log, an audit record or a URL of ours; only the ID token is kept, in
the server-side session, as ``id_token_hint`` for the logout.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import FlaskOAuth2App, OAuth
from authlib.oauth2.auth import encode_none
from flask import Blueprint, Flask, current_app, redirect, request, session
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from werkzeug.wrappers import Response

from core.errors import MssError
from core.oidc import TIMEOUT, Provider, TokenRefused, acr_at_least, http_session
from core.settings import Settings
from trust_space.naming import parse_national_id
from webmail import security
from webmail.auth.landing import NEXT, after_login, safe_next
from webmail.auth.rules import check_webmail_access, psc_account
from webmail.auth.views import _complete_login
from webmail.context import extension, mss, record
from webmail.errors import PscLoginRefused
from webmail.register import views as register
from webmail.security import limiter, login_limit

log = logging.getLogger("mss.webmail")
bp = Blueprint("psc", __name__, url_prefix="/connexion/psc")
ID_TOKEN = "psc_id_token"  # session key: the ID token, for the logout's id_token_hint
LEEWAY = 60  # seconds of clock difference allowed on exp / iat
# What Authlib may take from the discovery document: a provider's document naming, say,
# "verify" or "cert" would otherwise be applied to our HTTP session by Authlib.
METADATA_KEYS = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                 "jwks_uri", "end_session_endpoint", "id_token_signing_alg_values_supported",
                 "authorization_response_iss_parameter_supported")
# PSC's profession codes (nomenclature TRE_G15-ProfessionSante) for the registration's list.
PROFESSIONS = {"10": "Médecin", "21": "Pharmacien", "40": "Chirurgien-dentiste",
               "50": "Sage-femme", "60": "Infirmier", "70": "Masseur-kinésithérapeute",
               "80": "Pédicure-podologue", "91": "Orthophoniste", "92": "Orthoptiste"}
CIVILITIES = {"DR": "Dr", "PR": "Pr", "MME": "Mme", "M": "M."}
AGAIN = (" Recommencez la connexion, ou connectez-vous avec votre carte CPS ou votre "
         "identifiant.")


class PscClient(FlaskOAuth2App):
    """Authlib's Flask client reading the provider's metadata through ``core.oidc.Provider``
    (issuer checked, cached an hour, our CA and client certificate)."""

    provider: Provider

    def load_server_metadata(self) -> dict[str, Any]:
        found = self.provider.metadata()
        metadata = {key: found[key] for key in METADATA_KEYS if key in found}
        if "jwks" in self.server_metadata:  # cached by Authlib's fetch_jwk_set
            metadata["jwks"] = self.server_metadata["jwks"]
        return metadata


class _Registry(OAuth):
    oauth2_client_cls = PscClient


def init_app(app: Flask) -> None:
    s: Settings = app.extensions["mss"].settings
    # Authlib logs the PKCE code_verifier at DEBUG: a secret never goes to a log
    # (CONVENTIONS.md, 12), whatever the log level of the deployment.
    logging.getLogger("authlib.integrations.base_client.sync_app").setLevel(logging.INFO)
    enabled = bool(s.oidc_issuer)
    app.context_processor(lambda: {"psc_enabled": enabled})
    if not enabled:
        return
    http = http_session(s)  # the same TLS policy as core.oidc: no CA or proxy from the env
    client_kwargs: dict[str, Any] = {
        "scope": s.oidc_scope, "code_challenge_method": "S256", "default_timeout": TIMEOUT,
        "trust_env": http.trust_env, "verify": http.verify,
        "token_endpoint_auth_method": "client_secret_basic" if s.oidc_client_secret
        else "tls_client_auth"}
    if http.cert:
        client_kwargs["cert"] = http.cert
    client = cast(PscClient, _Registry(app).register(
        "psc", client_id=s.oidc_client_id, client_secret=s.oidc_client_secret or None,
        client_kwargs=client_kwargs,
        # RFC 8705 §2.1: the client id in the form, the certificate on the TLS session.
        client_auth_methods=[("tls_client_auth", encode_none)]))
    client.provider = Provider(s)
    app.extensions["mss.psc"] = client
    # Our forms redirected to the provider (the sign-in's start, the log-out ending its
    # session) must be allowed to go there: CSP form-action also applies to redirects.
    security.allow_form_action(app, _origin(s.oidc_issuer))
    app.register_blueprint(bp)


def _origin(url: str) -> str:
    found = re.match(r"https://[^/?#]+", url)
    return found.group(0) if found else url


def _client() -> PscClient:
    return extension(PscClient, "mss.psc")


def _redirect_uri() -> str:
    """Our registered redirect URI, from the configured public address (never the Host
    header a client sent)."""
    return mss().url.rstrip("/") + "/connexion/psc/retour"


def to_public_host() -> Response | None:
    """A page that offers Pro Santé Connect, opened under another host name than our public
    address (``https://127.0.0.1:8443/`` for ``https://localhost:8443/``): the same page there.
    The provider sends the browser back to the public address, where the session cookie of
    the other name — and the sign-in's ``state`` in it — does not exist: the sign-in would be
    refused. None when PSC is off or the name is already the public one."""
    if "mss.psc" not in current_app.extensions or request.method != "GET":
        return None
    public = urlsplit(mss().url)
    if (urlsplit(f"//{request.host}").hostname or "").lower() == (public.hostname or "").lower():
        return None
    path = request.full_path if request.query_string else request.path
    return redirect(f"{public.scheme}://{public.netloc}{path}")


@dataclass(frozen=True)
class PscIdentity:
    """Who Pro Santé Connect says is there."""

    national_id: str  # 8 + RPPS / 0 + ADELI
    first_name: str
    last_name: str
    profession: str  # the wizard's label; "" when PSC's code is not one of its list
    civility: str  # the wizard's value; "" when unknown
    acr: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def card(self) -> dict[str, str]:
        """As the registration's step-2 values, like a card's (``register._card_fields``)."""
        kind, number = parse_national_id(self.national_id) or ("rpps", "")
        return {"first_name": self.first_name, "last_name": self.last_name,
                "profession": self.profession, "id_kind": kind, "id_number": number}


@bp.post("")
@limiter.limit(login_limit)
def start() -> Response:
    """To the provider's sign-in page (CSRF checked by CSRFProtect before the view)."""
    client = _client()
    purpose = "inscription" if request.form.get("purpose") == "inscription" else "connexion"
    try:
        found = client.create_authorization_url(_redirect_uri(),
                                                acr_values=mss().settings.oidc_acr)
    except (TokenRefused, requests.RequestException, ValueError) as exc:
        refusal = _unavailable(exc)
        _audit_refusal(refusal, None)
        raise refusal from exc
    url = found.pop("url")
    client.save_authorize_data(redirect_uri=_redirect_uri(), purpose=purpose,
                               next=safe_next(request.args.get(NEXT)), **found)
    return redirect(url)


@bp.get("/retour")
@limiter.limit(login_limit)
def callback() -> Response:
    """The provider's answer: checked, then a login, a registration, or a refusal page."""
    client = _client()
    state = request.args.get("state")
    pending = (client.framework.get_state_data(session, state) if state else None) or {}
    identity: PscIdentity | None = None
    try:
        identity, id_token = _authenticate(client, state)
        if pending.get("purpose") == "inscription":
            return _registration(identity)
        return _login(identity, id_token, pending.get("next"))
    except PscLoginRefused as exc:
        _audit_refusal(exc, identity)
        raise


def _authenticate(client: PscClient, state: str | None) -> tuple[PscIdentity, str]:
    """The identity the provider proved, and the ID token.

    Raises:
        PscLoginRefused: every way the answer can fail (``reason`` says which).
    """
    error = request.args.get("error")
    if error:
        if state:
            client.framework.clear_state_data(session, state)
        raise _provider_error(error)
    _check_iss_parameter(client)
    try:
        token = client.authorize_access_token(claims_options=_claims_options(client),
                                              leeway=LEEWAY)
        claims = token.get("userinfo")  # Authlib's checked ID token claims
        if not claims:
            raise PscLoginRefused("id_token", "Pro Santé Connect n'a pas transmis de jeton "
                                  "d'identité : connexion refusée." + AGAIN, 400)
        info = client.userinfo(token=token)
    except (TokenRefused, requests.RequestException) as exc:
        raise _unavailable(exc) from exc
    except MismatchingStateError as exc:
        raise PscLoginRefused("state", "Cette réponse de Pro Santé Connect ne correspond à "
                              "aucune connexion en cours dans ce navigateur (déjà utilisée, "
                              "expirée ou venue d'ailleurs)." + AGAIN, 400) from exc
    except OAuthError as exc:  # the token endpoint refused the code
        raise PscLoginRefused("token", "Pro Santé Connect n'a pas confirmé cette connexion "
                              f"({_code(exc.error)})." + AGAIN, 400) from exc
    except JoseError as exc:
        raise _id_token_refusal(exc) from exc
    return _identity(claims, info), str(token["id_token"])


def _claims_options(client: PscClient) -> dict[str, Any]:
    """Authlib/joserfc options for the ID token beyond its defaults (OpenID Connect Core
    §3.1.3.7): our client as audience, the provider as issuer, auth_time present, acr at
    least ``MSS_OIDC_ACR``. Built for each use (Authlib consumes the ``validate`` hooks)."""
    s = mss().settings
    minimum = s.oidc_acr
    return {
        "iss": {"essential": True, "value": client.load_server_metadata()["issuer"]},
        "aud": {"essential": True, "value": s.oidc_client_id},
        "auth_time": {"essential": True},
        "acr": {"essential": True,
                "validate": lambda _claims, value: isinstance(value, str)
                and acr_at_least(value, minimum)},
    }


def _check_iss_parameter(client: PscClient) -> None:
    """RFC 9207 §2.4: an ``iss`` in the answer must be our provider's (mix-up defence); a
    provider that announces it must send it."""
    try:
        metadata = client.load_server_metadata()
    except TokenRefused as exc:
        raise _unavailable(exc) from exc
    iss = request.args.get("iss")
    if iss is None and not metadata.get("authorization_response_iss_parameter_supported"):
        return
    if iss != metadata["issuer"]:
        raise PscLoginRefused("issuer", "Cette réponse ne vient pas du fournisseur Pro Santé "
                              "Connect de la messagerie." + AGAIN, 400)


def _identity(claims: dict[str, Any], info: dict[str, Any]) -> PscIdentity:
    """The identity from userinfo, for the subject of the ID token (OpenID Connect Core
    §5.3.2: a userinfo answer for another ``sub`` is refused).

    Raises:
        PscLoginRefused: another subject, or no valid national id.
    """
    s = mss().settings
    national = str(info.get(s.oidc_id_claim) or "").strip()
    if info.get("sub") != claims.get("sub") or parse_national_id(national) is None:
        raise PscLoginRefused("identity", "Pro Santé Connect n'a pas transmis d'identifiant "
                              "national (RPPS ou ADELI) valide : connexion impossible.", 403)
    ref = _object(info.get("SubjectRefPro"))  # PSC's professional record
    exercices = ref.get("exercices")
    first = _object(exercices[0]) if isinstance(exercices, list) and exercices else {}
    return PscIdentity(
        national_id=national, first_name=str(info.get("given_name") or "").strip(),
        last_name=str(info.get("family_name") or "").strip(),
        profession=PROFESSIONS.get(str(first.get("codeProfession") or ""), ""),
        civility=CIVILITIES.get(str(ref.get("codeCivilite") or "").upper(), ""),
        acr=str(claims.get("acr") or ""))


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id_token_refusal(exc: JoseError) -> PscLoginRefused:
    """The refusal for an ID token that Authlib/joserfc did not accept."""
    claim = exc.claim if isinstance(exc, ClaimError) else ""
    if isinstance(exc, ExpiredTokenError):
        return PscLoginRefused("expired", "Le jeton d'identité de Pro Santé Connect a expiré "
                               "(ou les horloges diffèrent)." + AGAIN, 400)
    if claim == "nonce":
        return PscLoginRefused("nonce", "Le jeton d'identité de Pro Santé Connect ne "
                               "correspond pas à la connexion demandée depuis ce "
                               "navigateur." + AGAIN, 400)
    if claim in ("aud", "azp"):
        return PscLoginRefused("audience", "Le jeton d'identité de Pro Santé Connect était "
                               "destiné à un autre service : connexion refusée." + AGAIN, 400)
    if "acr" in claim.split(","):
        minimum = mss().settings.oidc_acr
        return PscLoginRefused("acr", "Votre authentification Pro Santé Connect n'atteint pas "
                               f"le niveau demandé par la messagerie ({minimum} au moins). "
                               "Reconnectez-vous avec votre carte CPS ou l'application "
                               "e-CPS.", 403)
    reason = "claims" if claim else "signature"
    return PscLoginRefused(reason, "Le jeton d'identité de Pro Santé Connect n'a pas pu être "
                           "vérifié : connexion refusée." + AGAIN, 400)


def _provider_error(error: str) -> PscLoginRefused:
    if error == "access_denied":
        return PscLoginRefused("denied", "Vous avez refusé de transmettre votre identité à la "
                               "messagerie : vous n'êtes pas connecté. Vous pouvez "
                               "recommencer, ou vous connecter avec votre carte CPS ou votre "
                               "identifiant.", 403)
    return PscLoginRefused("provider_error", "Pro Santé Connect n'a pas pu vous identifier "
                           f"({_code(error)})." + AGAIN, 400)


def _unavailable(exc: Exception) -> PscLoginRefused:
    log.warning("Pro Santé Connect injoignable : %s", type(exc).__name__)
    return PscLoginRefused("unavailable", "Pro Santé Connect ne répond pas pour le moment. "
                           "Réessayez dans un instant, ou connectez-vous avec votre carte CPS "
                           "ou votre identifiant.", 503)


def _code(error: object) -> str:
    """An OAuth error code fit to show (RFC 6749 §4.1.2.1 codes are [a-z_])."""
    text = str(error or "")[:40]
    return text if re.fullmatch(r"[a-z_]+", text) else "erreur inconnue"


def _login(identity: PscIdentity, id_token: str, wanted: object) -> Response:
    """The account of ``identity`` logged in, on the card's rules."""
    try:
        with mss().db.transaction() as db:
            account = psc_account(db, identity.national_id, identity.name)
            check_webmail_access(db, account)
            _complete_login(account, "psc")
            session[ID_TOKEN] = id_token  # server-side session: the cookie is a random token
            record(db, "login.psc", "ok", actor=account.login, target=account.login,
                   acr=identity.acr)
            record(db, "login", "ok", actor=account.login, target=account.login, method="psc")
    except PscLoginRefused as exc:
        if exc.code == "psc_not_registered":
            register.offer(identity.card(), "psc", civility=identity.civility)
        raise
    except MssError as exc:  # AuthenticationFailed, PendingValidation: the card's answers
        raise PscLoginRefused(exc.code, exc.message,
                              int(getattr(exc, "status", 0) or 403)) from exc
    return redirect(after_login(wanted))


def _registration(identity: PscIdentity) -> Response:
    """The wizard's "Avec Pro Santé Connect": on with the identity PSC gave."""
    with mss().db.transaction() as db:
        record(db, "registration.psc", "ok", actor=identity.national_id)
    register.offer(identity.card(), "psc", civility=identity.civility)
    return register.begin_proven()


def _audit_refusal(exc: PscLoginRefused, identity: PscIdentity | None) -> None:
    with mss().db.transaction() as db:
        record(db, "login.psc", exc.reason,
               actor=identity.national_id if identity else "psc", target="")


def end_session_url(id_token: object) -> str | None:
    """Where the browser ends the provider's session after our logout (RP-Initiated Logout
    1.0 §2: id_token_hint, our client id, the page to come back to), or None when PSC is
    off, there is no ID token, or the provider has no end_session_endpoint."""
    client = current_app.extensions.get("mss.psc")
    if client is None or not isinstance(id_token, str) or not id_token:
        return None
    try:
        if not client.load_server_metadata().get("end_session_endpoint"):
            return None
    except TokenRefused:
        return None  # our session is closed anyway; the provider's lives on
    url = client.create_logout_url(id_token_hint=id_token, client_id=client.client_id)["url"]
    return str(add_params_to_uri(url, [("post_logout_redirect_uri",
                                        mss().url.rstrip("/") + "/connexion")]))
