"""Se connecter avec Pro Santé Connect (issue #16), through the real webmail (Flask test client)
against the real stand-in (panva's oidc-provider on loopback, ``mss.psc_standin``): its sign-in
and consent pages are driven with ``requests`` as a browser would. The people are
``tests.mailstore_fixtures``' (Marie, Sophie suspended, Hugo's mailbox suspended, Louis locked
out of passwords); Léa Roux (``NEWCOMER``) is known to PSC and not to the directory.

Attacker's and careless cases: a replayed or foreign state, an authorization request whose
nonce was stripped or changed, a code issued to another service, an ID token issued to another
service, an expired ID token, a weaker acr than required, "Refuser" on the consent page, the
provider down, a forged ``iss`` (RFC 9207), a forged identity field at registration."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from core.audit import AuditRecord
from core.settings import Settings
from mss.app import App
from mss.psc_standin import NEWCOMER, OTHER_CLIENT, PscStandIn, client_configs, demo_settings
from mss.psc_standin import sign_in as standin_sign_in
from tests.mailstore_fixtures import PEOPLE, TrustSpace, build, free_port, make_settings
from tests.webmail_helpers import PASSWORD, RecordingMailer, post, token
from trust_space.models import Account, Mailbox, Professional
from webmail import create_app
from webmail.auth.sms import FileSmsProvider
from webmail.models import WebSession

LEA = NEWCOMER["national_id"]


@dataclass
class Psc:
    space: TrustSpace
    standin: PscStandIn

    @property
    def settings(self) -> Settings:
        return self.space.settings


@pytest.fixture(scope="module")
def psc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Psc]:
    data = tmp_path_factory.mktemp("psc") / "data"
    data.mkdir()
    settings = make_settings(data, web_port=free_port())
    space = build(settings)
    space.settings = settings.replace(**demo_settings(settings, free_port()))
    with space.db.transaction() as session:
        for pro in session.scalars(select(Professional)):
            pro.usual_email = f"{pro.first_name.lower()}@exemple.fr"
    standin = PscStandIn(App(space.settings))
    standin.start()
    yield Psc(space, standin)
    standin.stop()
    standin.app.close()
    space.db.dispose()


def _app(psc: Psc, tmp_path: Path, **changes: object) -> Flask:
    return create_app(psc.settings.replace(**changes), psc.space.db,
                      {"TESTING": True, "RATE_LOGIN": "1000 per minute",
                       "RATE_REGISTER": "1000 per minute"},
                      mailer=RecordingMailer(), sms=FileSmsProvider(tmp_path / "sms"),
                      acl_sync=lambda: None)


@pytest.fixture
def app(psc: Psc, tmp_path: Path) -> Flask:
    return _app(psc, tmp_path)


def _client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
    return client


def _browser(settings: Settings) -> requests.Session:
    """The browser's side at the provider (its cookies: the provider's session)."""
    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE would replace ``verify``
    http.verify = str(settings.pki_dir / "ca.pem")
    return http


def start(client: FlaskClient, path: str = "/connexion/psc", **form: str) -> str:
    """Press "Se connecter avec Pro Santé Connect": the provider's URL we are sent to."""
    answer = client.post(path, data={"csrf_token": token(client, "/connexion"), **form})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return str(answer.headers["Location"])


def provider_pages(http: requests.Session, url: str, national_id: str | None = None, *,
                   consent: str = "confirm") -> tuple[str, list[str]]:
    """Follow the provider's pages as a browser: sign in with ``national_id`` and the e-CPS
    code (the demo password) when asked, then "Autoriser" (``consent="abort"``: "Refuser").
    Returns the URL the provider sends back to the webmail, and the pages it showed."""
    shown: list[str] = []
    answer = http.get(url, allow_redirects=False, timeout=10)
    for _ in range(12):
        location = answer.headers.get("Location")
        if location:
            where = urljoin(answer.url, location)
            if "/connexion/psc/retour" in where:
                return where, shown
            answer = http.get(where, allow_redirects=False, timeout=10)
            continue
        assert answer.status_code == 200, answer.text[:300]
        actions = dict((step, action) for action, step in re.findall(
            r'action="(/interaction/[\w-]+/(login|confirm|abort))"', answer.text))
        if "login" in actions:
            shown.append("login")
            assert national_id is not None, "the provider asks to sign in"
            answer = http.post(urljoin(answer.url, actions["login"]), allow_redirects=False,
                               data={"national_id": national_id, "code": PASSWORD}, timeout=10)
        else:
            shown.append("consent")
            answer = http.post(urljoin(answer.url, actions[consent]), allow_redirects=False,
                               timeout=10)
    raise AssertionError(f"the provider never came back: {shown}")


def back(client: FlaskClient, url: str):  # type: ignore[no-untyped-def]
    """The browser arriving at our callback with the provider's answer."""
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client: FlaskClient, settings: Settings, who: str = PEOPLE["marie"].national_id,
            http: requests.Session | None = None) -> str:
    """The whole round trip up to the provider's answer (not yet given to the webmail)."""
    where, _shown = provider_pages(http or _browser(settings), start(client), who)
    return where


def _with_params(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def _last_audit(psc: Psc, action: str) -> AuditRecord:
    with psc.space.db.transaction() as session:
        row = session.scalars(select(AuditRecord).where(AuditRecord.action == action)
                              .order_by(AuditRecord.id.desc())).first()
        assert row is not None, action
        session.expunge(row)
        return row


def _refused(answer, status: int, words: str) -> str:  # type: ignore[no-untyped-def]
    page = answer.get_data(as_text=True)
    assert answer.status_code == status, page
    assert "Connexion avec Pro Santé Connect refusée" in page and words in page, page
    assert "Traceback" not in page
    return page


# ---------------------------------------------------------------- the pages
def test_pages_offering_psc_move_to_the_public_host_name(app: Flask, psc: Psc) -> None:
    """PSC sends the browser back to the public address: a log-in started under another name
    would lose its session (and state). GET pages move; forms and the public name do not."""
    client = _client(app)
    public = app.extensions["mss"].url.rstrip("/")
    assert "//localhost:" in public
    moved = client.get("/connexion?next=/courrier/INBOX", base_url="https://127.0.0.1:8443")
    assert moved.status_code == 302
    assert moved.headers["Location"] == f"{public}/connexion?next=/courrier/INBOX"
    wizard = client.get("/inscription", base_url="https://127.0.0.1:8443")
    assert wizard.headers["Location"] == f"{public}/inscription"
    assert client.get("/connexion", base_url="https://localhost:8443").status_code == 200
    posted = client.post("/connexion", base_url="https://127.0.0.1:8443", data={})
    assert posted.status_code != 302 or "localhost" not in posted.headers.get("Location", "")


def test_login_page_offers_psc_first(app: Flask, psc: Psc) -> None:
    answer = _client(app).get("/connexion")
    page = answer.get_data(as_text=True)
    order = [page.index(title) for title in ("Avec Pro Santé Connect", "Avec ma carte CPS",
                                             "Avec mon identifiant et mon mot de passe")]
    assert order == sorted(order)
    form = re.search(r'<form method="post" action="/connexion/psc">(.*?)</form>', page, re.S)
    assert form and 'name="csrf_token"' in form.group(1)
    assert "Se connecter avec Pro Santé Connect" in form.group(1)
    # This form and the log-out (on every page) are redirected to the provider: CSP
    # form-action must allow it (Chromium silently stops the navigation otherwise).
    assert f"form-action 'self' {psc.settings.oidc_issuer}" in \
        answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]


def test_without_psc_the_pages_are_as_before(psc: Psc, tmp_path: Path) -> None:
    client = _client(_app(psc, tmp_path, oidc_issuer=""))
    answer = client.get("/connexion")
    assert "Pro Santé Connect" not in answer.get_data(as_text=True)
    assert "form-action 'self';" not in answer.headers["Content-Security-Policy"]
    assert answer.headers["Content-Security-Policy"].endswith("form-action 'self'")
    assert client.post("/connexion/psc").status_code in (400, 404)
    assert client.get("/connexion/psc/retour?code=x&state=y").status_code == 404
    assert "with-psc" not in client.get("/inscription").get_data(as_text=True)


def test_attack_start_needs_our_form(app: Flask) -> None:
    """Only our own page starts a sign-in: no CSRF token, no redirect (and no GET)."""
    client = _client(app)
    client.get("/connexion")
    answer = client.post("/connexion/psc")
    assert answer.status_code == 400 and "Formulaire expiré" in answer.get_data(as_text=True)
    assert client.get("/connexion/psc").status_code == 405


def test_authorization_request(app: Flask, psc: Psc) -> None:
    """Code flow with PKCE S256, state, nonce and acr_values; state, nonce and verifier stay
    in the server-side session (the cookie is a random token)."""
    client = _client(app)
    url = start(client)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith(psc.settings.oidc_issuer + "/")
    assert query["response_type"] == "code" and query["client_id"] == "mss-webmail"
    assert query["redirect_uri"] == \
        f"https://localhost:{psc.settings.web_port}/connexion/psc/retour"
    assert query["scope"] == "openid scope_all" and query["acr_values"] == "eidas1"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20
    with client.session_transaction() as sess:
        kept = sess[f"_state_psc_{query['state']}"]["data"]
    assert kept["nonce"] == query["nonce"] and len(kept["code_verifier"]) >= 43
    cookie = client.get_cookie("mss_session")
    assert cookie is not None
    for secret in (query["state"], query["nonce"], kept["code_verifier"]):
        assert secret not in cookie.value


# ---------------------------------------------------------------- logging in
def test_marie_logs_in_with_psc(app: Flask, psc: Psc, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(app)
    where, shown = provider_pages(_browser(psc.settings), start(client),
                                  PEOPLE["marie"].national_id)
    assert shown == ["login", "consent"]
    answer = back(client, where)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert answer.headers["Location"].startswith("/courrier/")  # her Boîte de réception
    with client.session_transaction() as sess:
        assert sess["login_method"] == "psc"
        id_token = sess["psc_id_token"]
        assert not [key for key in sess if key.startswith("_state_psc_")]
    assert id_token.count(".") == 2
    cookie = client.get_cookie("mss_session")
    assert cookie is not None and id_token not in cookie.value and len(cookie.value) < 60
    with psc.space.db.transaction() as session:
        row = session.scalars(select(WebSession).order_by(WebSession.created_at.desc())).first()
        assert row is not None and row.login_method == "psc"
    ok = _last_audit(psc, "login.psc")
    assert ok.outcome == "ok" and ok.actor == "marie.martin@mss.test"
    assert json.loads(ok.request)["acr"] == "eidas1"
    login = _last_audit(psc, "login")
    assert login.actor == "marie.martin@mss.test" and json.loads(login.request)["method"] == "psc"
    code = parse_qs(urlsplit(where).query)["code"][0]
    assert "code_verifier" not in caplog.text  # Authlib logs it at DEBUG: silenced
    for secret in (id_token, code):  # nothing of the tokens in the logs (CONVENTIONS 12)
        assert secret not in caplog.text
        assert secret not in ok.request and secret not in login.request


def test_next_is_followed_only_on_this_site(app: Flask, psc: Psc) -> None:
    for wanted, landing in (("/compte", "/compte"), ("//evil.example/x", "/courrier/")):
        client = _client(app)
        url = start(client, "/connexion/psc?" + urlencode({"next": wanted}))
        where, _shown = provider_pages(_browser(psc.settings), url, PEOPLE["marie"].national_id)
        answer = back(client, where)
        assert answer.status_code == 302 and answer.headers["Location"].startswith(landing)


def test_card_rules_for_accounts(app: Flask, psc: Psc) -> None:
    """Suspended account: refused; mailbox suspended: refused as by the card; locked out of
    passwords only (Louis): PSC opens, as the card does (a strong log-in)."""
    for who, status, words, reason in (
            ("sophie", 403, "Compte suspendu", "account_suspended"),
            ("hugo", 403, "suspendue par l", "mailbox_suspended")):
        client = _client(app)
        answer = back(client, sign_in(client, psc.settings, PEOPLE[who].national_id))
        _refused(answer, status, words)
        assert _last_audit(psc, "login.psc").outcome == reason
        assert _last_audit(psc, "login.psc").actor == PEOPLE[who].national_id
        with client.session_transaction() as sess:
            assert "_user_id" not in sess
    client = _client(app)
    answer = back(client, sign_in(client, psc.settings, PEOPLE["louis"].national_id))
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/courrier/")


# ---------------------------------------------------------------- refusals
def test_attack_replayed_state_is_refused(app: Flask, psc: Psc) -> None:
    client = _client(app)
    where = sign_in(client, psc.settings)
    assert back(client, where).status_code == 302
    client.post("/deconnexion", data={"csrf_token": token(client, "/compte")})
    _refused(back(client, where), 400, "ne correspond à aucune connexion en cours")
    assert _last_audit(psc, "login.psc").outcome == "state"


def test_attack_foreign_or_missing_state_is_refused(app: Flask, psc: Psc) -> None:
    """Login CSRF: an answer obtained in the attacker's browser, planted in the victim's."""
    attacker, victim = _client(app), _client(app)
    where = sign_in(attacker, psc.settings)
    victim.get("/connexion")
    _refused(back(victim, where), 400, "ne correspond à aucune connexion en cours")
    with victim.session_transaction() as sess:
        assert "_user_id" not in sess
    _refused(back(victim, _with_params(where, state=None)), 400, "aucune connexion en cours")
    assert _last_audit(psc, "login.psc").outcome == "state"


@pytest.mark.parametrize("nonce", [None, "un-autre-nonce-que-celui-de-la-session"])
def test_attack_nonce_missing_or_wrong(app: Flask, psc: Psc, nonce: str | None) -> None:
    """The authorization request tampered with on its way (nonce stripped or replaced): the
    ID token does not carry the session's nonce."""
    client = _client(app)
    url = _with_params(start(client), nonce=nonce)
    where, _shown = provider_pages(_browser(psc.settings), url, PEOPLE["marie"].national_id)
    _refused(back(client, where), 400, "ne correspond pas à la connexion demandée")
    assert _last_audit(psc, "login.psc").outcome == "nonce"
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


def test_attack_code_of_another_service(app: Flask, psc: Psc) -> None:
    """A code the provider issued to another client, put into our callback with a state of
    ours: the provider refuses to exchange it with our credentials."""
    client = _client(app)
    ours = start(client)
    other = [c for c in client_configs(psc.settings) if c["client_id"] == OTHER_CLIENT][0]
    theirs = _with_params(ours, client_id=OTHER_CLIENT, redirect_uri=other["redirect_uris"][0])
    http = _browser(psc.settings)
    answer = http.get(theirs, allow_redirects=False, timeout=10)
    where = None
    for _ in range(12):  # their redirect URI is not ours: read the code from the Location
        location = urljoin(answer.url, answer.headers.get("Location", ""))
        if location.startswith(other["redirect_uris"][0]):
            where = location
            break
        if answer.status_code in (302, 303):
            answer = http.get(location, allow_redirects=False, timeout=10)
            continue
        step = re.search(r'action="(/interaction/[\w-]+/(?:login|confirm))"', answer.text)
        assert step, answer.text[:300]
        data = {"national_id": PEOPLE["marie"].national_id, "code": PASSWORD} \
            if step.group(1).endswith("login") else {}
        answer = http.post(urljoin(answer.url, step.group(1)), data=data,
                           allow_redirects=False, timeout=10)
    assert where is not None
    planted = f"/connexion/psc/retour?{urlsplit(where).query}"
    _refused(client.get(planted), 400, "n&#39;a pas confirmé cette connexion")
    assert _last_audit(psc, "login.psc").outcome == "token"


def test_attack_id_token_of_another_service(app: Flask, psc: Psc) -> None:
    """An ID token the provider signed for another service (``autre-service``), checked as
    the callback checks ours (same Authlib call, same options): refused for its audience."""
    from joserfc.errors import JoseError

    from webmail.auth import psc as psc_view

    tokens = standin_sign_in(psc.settings, PEOPLE["marie"].national_id, PASSWORD,
                             client_id=OTHER_CLIENT, scope="openid scope_all")
    with app.test_request_context("/connexion/psc/retour"):
        client = app.extensions["mss.psc"]
        with pytest.raises(JoseError) as refused:
            client.parse_id_token(tokens, nonce="sans importance",
                                  claims_options=psc_view._claims_options(client),
                                  leeway=psc_view.LEEWAY)
        assert psc_view._id_token_refusal(refused.value).reason == "audience"


def test_id_token_too_weak(psc: Psc, tmp_path: Path) -> None:
    """mss asks eidas2; the provider signs in at eidas1 only."""
    client = _client(_app(psc, tmp_path, oidc_acr="eidas2"))
    url = start(client)
    assert parse_qs(urlsplit(url).query)["acr_values"] == ["eidas2"]
    where, _shown = provider_pages(_browser(psc.settings), url, PEOPLE["marie"].national_id)
    _refused(back(client, where), 403, "n&#39;atteint pas le niveau demandé")
    assert _last_audit(psc, "login.psc").outcome == "acr"


def test_expired_id_token(psc: Psc, tmp_path: Path) -> None:
    """A provider whose ID tokens are expired when they arrive (its clock ten minutes
    behind ours, beyond the leeway): a second stand-in on its own port."""
    late = psc.settings.replace(**demo_settings(psc.settings, free_port()))
    standin = PscStandIn(App(late), id_token_seconds=-600)
    standin.start()
    try:
        client = _client(_app(psc, tmp_path, oidc_issuer=late.oidc_issuer))
        where, _shown = provider_pages(_browser(late), start(client),
                                       PEOPLE["marie"].national_id)
        _refused(back(client, where), 400, "a expiré")
    finally:
        standin.stop()
        standin.app.close()
    assert _last_audit(psc, "login.psc").outcome == "expired"


def test_refused_on_the_consent_page(app: Flask, psc: Psc) -> None:
    client = _client(app)
    where, shown = provider_pages(_browser(psc.settings), start(client),
                                  PEOPLE["marie"].national_id, consent="abort")
    assert shown == ["login", "consent"] and "error=access_denied" in where
    _refused(back(client, where), 403, "Vous avez refusé de transmettre votre identité")
    assert _last_audit(psc, "login.psc").outcome == "denied"
    # The pending state is gone with it.
    _refused(back(client, where.replace("error=access_denied", "code=x")), 400,
             "aucune connexion en cours")


def test_attack_provider_error_text_is_not_echoed(app: Flask, psc: Psc) -> None:
    client = _client(app)
    client.get("/connexion")
    answer = client.get("/connexion/psc/retour?error=%3Cscript%3Ealert(1)%3C/script%3E")
    page = _refused(answer, 400, "erreur inconnue")
    assert "alert(1)" not in page
    _refused(client.get("/connexion/psc/retour?error=temporarily_unavailable"), 400,
             "(temporarily_unavailable)")
    assert _last_audit(psc, "login.psc").outcome == "provider_error"


def test_attack_answer_from_another_issuer(app: Flask, psc: Psc) -> None:
    """RFC 9207: an ``iss`` that is not our provider's (mix-up attack) is refused."""
    client = _client(app)
    where = sign_in(client, psc.settings)
    assert parse_qs(urlsplit(where).query)["iss"] == [psc.settings.oidc_issuer]
    _refused(back(client, _with_params(where, iss="https://psc.exemple.invalid")), 400,
             "ne vient pas du fournisseur")
    assert _last_audit(psc, "login.psc").outcome == "issuer"


def test_provider_unreachable(psc: Psc, tmp_path: Path) -> None:
    client = _client(_app(psc, tmp_path, oidc_issuer=f"https://localhost:{free_port()}"))
    client.get("/connexion")
    answer = client.post("/connexion/psc", data={"csrf_token": token(client, "/connexion")})
    _refused(answer, 503, "Pro Santé Connect ne répond pas")
    assert _last_audit(psc, "login.psc").outcome == "unavailable"


# ---------------------------------------------------------------- registration
def _identity_values(**changes: str) -> dict[str, str]:
    values = {"civility": "Dr", "email": "lea.roux@exemple.fr",
              "email_confirm": "lea.roux@exemple.fr", "birth_day": "3", "birth_month": "5",
              "specialty": "", "place_of_practice": "Cabinet du Port",
              "address": "1 quai du Port", "postal_code": "64100", "city": "Bayonne",
              "phone": "05 59 00 00 00", "mobile": ""}
    values.update(changes)
    return values


def _input(page: str, name: str) -> str:
    found = re.search(rf'<input[^>]*id="{name}"[^>]*>', page)
    assert found, name
    return found.group(0)


def test_newcomer_is_offered_registration_with_her_identity(app: Flask, psc: Psc) -> None:
    client = _client(app)
    page = _refused(back(client, sign_in(client, psc.settings, LEA)), 403,
                    "Aucun compte de messagerie n&#39;est associé à votre identité")
    assert "Léa Roux" in page and LEA in page
    form = re.search(r'<form method="post" action="/inscription"[^>]*>(.*?)</form>', page, re.S)
    assert form and 'name="card" value="psc"' in form.group(1)
    assert "Créer mon compte avec Pro Santé Connect" in form.group(1)
    assert 'name="csrf_token"' in form.group(1)
    refusal = _last_audit(psc, "login.psc")
    assert refusal.outcome == "not_registered" and refusal.actor == LEA
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.group(1))
    assert csrf
    answer = client.post("/inscription", data={"csrf_token": csrf.group(1), "card": "psc"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identite")
    page = client.get("/inscription/identite").get_data(as_text=True)
    assert "transmis par Pro Santé Connect" in page and "card-fields.css" in page
    assert '<span class="card-tag">transmis par PSC</span>' in page
    assert '<li class="done">Pro Santé Connect</li>' in page  # the first step's name
    for name, value in (("last_name", "Roux"), ("first_name", "Léa"),
                        ("profession", "Médecin"), ("id_kind", "RPPS"),
                        ("id_number", LEA[1:])):
        tag = _input(page, name)
        assert "readonly" in tag and f'value="{value}"' in tag, tag
    civility = re.search(r'<select[^>]*id="civility"[^>]*>.*?</select>', page, re.S)
    assert civility and "readonly" not in civility.group(0)
    assert '<option selected value="Dr">' in civility.group(0)  # from SubjectRefPro
    # A forged number is refused, and PSC's is kept.
    answer = post(client, "/inscription/identite",
                  {**_identity_values(), "last_name": "Roux", "first_name": "Léa",
                   "profession": "Médecin", "id_kind": "rpps", "id_number": "10000000001"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "transmise par Pro Santé Connect : elle ne peut pas être modifiée" in page
    # Omitted identity fields are PSC's; the wizard ends with her RPPS.
    answer = post(client, "/inscription/identite", _identity_values())
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identifiant")
    post(client, "/inscription/identifiant",
         {"password": "Psc-Passw0rd", "confirm": "Psc-Passw0rd"})
    assert post(client, "/inscription/adresse", {"cgu": "y"}).status_code == 302
    request = json.loads(_last_audit(psc, "registration.request").request)
    assert request["proof"] == "psc" and request["card"] is True
    with psc.space.db.transaction() as session:
        pro = session.scalar(select(Professional).where(Professional.rpps == LEA[1:]))
        assert pro is not None and (pro.first_name, pro.last_name) == ("Léa", "Roux")
        assert pro.profession == "Médecin"
        # Leave Léa unregistered for the other tests of this module.
        session.execute(delete(Account).where(Account.professional_id == pro.id))
        session.execute(delete(Mailbox).where(Mailbox.professional_id == pro.id))
        session.execute(delete(Professional).where(Professional.id == pro.id))


def test_registration_starts_with_psc(app: Flask, psc: Psc) -> None:
    """The wizard's first step offers PSC: straight to the identity step, or told at once
    that an account exists."""
    client = _client(app)
    page = client.get("/inscription").get_data(as_text=True)
    button = re.search(r'<button[^>]*id="with-psc"[^>]*>', page)
    assert button and 'formaction="/connexion/psc"' in button.group(0)
    assert 'name="purpose" value="inscription"' in button.group(0)
    assert page.index("with-psc") < page.index("with-card")
    http = _browser(psc.settings)
    where, _shown = provider_pages(http, start(client, purpose="inscription"), LEA)
    answer = back(client, where)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identite")
    assert 'value="Roux"' in client.get("/inscription/identite").get_data(as_text=True)
    assert _last_audit(psc, "registration.psc").actor == LEA
    # Marie already has an account: said at once, with the way to log in.
    client = _client(app)
    where, _shown = provider_pages(_browser(psc.settings),
                                   start(client, purpose="inscription"),
                                   PEOPLE["marie"].national_id)
    answer = back(client, where)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 409
    assert "Un compte existe déjà pour votre identité Pro Santé Connect" in page
    assert 'action="/connexion/psc"' in page and 'name="email"' not in page


def test_attack_registration_from_psc_needs_psc(app: Flask) -> None:
    """"card=psc" without an identity PSC gave in this session starts nothing."""
    client = _client(app)
    answer = post(client, "/inscription", {"card": "psc"})
    assert answer.status_code == 400
    assert "Votre identité Pro Santé Connect n&#39;est plus disponible" in \
        answer.get_data(as_text=True)
    assert client.get("/inscription/identite").headers["Location"].endswith("/inscription")


# ---------------------------------------------------------------- logging out
def test_logout_ends_the_provider_session(app: Flask, psc: Psc) -> None:
    http = _browser(psc.settings)
    client = _client(app)
    where, shown = provider_pages(http, start(client), PEOPLE["marie"].national_id)
    assert shown == ["login", "consent"]
    back(client, where)
    # Same browser, no logout: the provider's session signs in without asking.
    again = _client(app)
    where, shown = provider_pages(http, start(again))
    assert shown == []
    assert back(again, where).status_code == 302
    with again.session_transaction() as sess:
        id_token = sess["psc_id_token"]
    answer = again.post("/deconnexion", data={"csrf_token": token(again, "/compte")})
    assert answer.status_code == 302
    end = urlsplit(answer.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(end.query).items()}
    assert answer.headers["Location"].startswith(psc.settings.oidc_issuer + "/session/end")
    assert query["id_token_hint"] == id_token and query["client_id"] == "mss-webmail"
    assert query["post_logout_redirect_uri"] == \
        f"https://localhost:{psc.settings.web_port}/connexion"
    with again.session_transaction() as sess:
        assert "_user_id" not in sess and "psc_id_token" not in sess
    assert json.loads(_last_audit(psc, "logout").request)["provider"] is True
    # The provider's logout page, "Se déconnecter", then back to our log-in page.
    page = http.get(answer.headers["Location"], timeout=10)
    assert "Se déconnecter" in page.text
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert form
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    done = http.post(urljoin(page.url, form.group(1)), data={**fields, "logout": "yes"},
                     allow_redirects=False, timeout=10)
    assert done.headers["Location"].startswith(query["post_logout_redirect_uri"])
    # A new PSC log-in in this browser asks to sign in again.
    third = _client(app)
    _where, shown = provider_pages(http, start(third), PEOPLE["marie"].national_id)
    assert shown[0] == "login"


def test_other_logouts_stay_here(app: Flask, psc: Psc) -> None:
    """A session not opened by PSC logs out as before."""
    from tests.webmail_helpers import Web, login

    web = Web(psc.space, app, app.extensions["mss"].mailer, Path("/nonexistent"))
    client = _client(app)
    login(web, client)
    answer = client.post("/deconnexion", data={"csrf_token": token(client, "/compte")})
    assert answer.status_code == 302 and answer.headers["Location"] == "/connexion"


def test_mutual_tls_client_authentication(psc: Psc, tmp_path: Path) -> None:
    """``tls_client_auth`` (RFC 8705 §2.1): the client id in the token request's form, no
    secret, our certificate on the TLS session."""
    crt, key = psc.space.cards["lps"]
    app = _app(psc, tmp_path, oidc_client_secret="", oidc_client_cert=str(crt),
               oidc_client_key=str(key))
    client = app.extensions["mss.psc"]
    with app.test_request_context("/"):
        with client._get_oauth_client() as session:
            assert session.cert == (str(crt), str(key)) and session.trust_env is False
            assert session.verify == str(psc.settings.pki_dir / "ca.pem")
            auth = session.client_auth(session.token_endpoint_auth_method)
            _uri, headers, body = auth.prepare("POST", "https://psc/token", {},
                                               "grant_type=authorization_code&code=c")
    assert "Authorization" not in headers and "client_id=mss-webmail" in body
    assert "client_secret" not in body
