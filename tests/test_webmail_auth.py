"""Webmail log-in through Flask's test client: CSRF, headers, cookies, password + code (e-mail,
SMS, TOTP), lock-out without enumeration, card log-in, session timeout and revocation."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pyotp
from sqlalchemy import select, update

from core.audit import AuditRecord
from core.db import utcnow
from tests.webmail_helpers import (
    OPERATOR,
    OPERATOR_SEED,
    PASSWORD,
    Web,
    login,
    login_operator,
    post,
)
from trust_space.models import Account, OtpChannel
from webmail.models import WebSession

pytest_plugins = ["tests.webmail_fixtures"]
MARIE = "marie.martin@mss.test"


def _text(answer) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r'value="[^"]*"', "", answer.get_data(as_text=True))


def test_security_headers_on_pages_and_static(web: Web) -> None:
    client = web.client()
    for path in ("/connexion", "/static/mss.css"):
        answer = client.get(path)
        headers = answer.headers
        answer.close()
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert client.get("/connexion").headers["Cache-Control"] == "no-store"
    page = client.get("/connexion").get_data(as_text=True)
    assert "<script>" not in page and "style=" not in page and 'lang="fr"' in page


def test_forms_without_csrf_token_are_refused(web: Web) -> None:
    client = web.client()
    answer = client.post("/connexion", data={"identifier": MARIE, "password": PASSWORD})
    assert answer.status_code == 400
    assert "Formulaire expiré" in answer.get_data(as_text=True)
    login(web, client)
    for path in ("/deconnexion", "/compte/sessions/deconnexion", "/compte/preferences"):
        assert client.post(path, data={}).status_code == 400
    assert client.get("/compte").status_code == 200  # still logged in


def test_password_and_email_code_login_renews_the_session(web: Web) -> None:
    client = web.client()
    client.get("/connexion")
    before = client.get_cookie("mss_session")
    login(web, client)
    after = client.get_cookie("mss_session")
    assert before is not None and after is not None and after.value != before.value
    assert after.secure and after.http_only and after.same_site == "Lax"
    assert after.expires is None  # dies with the browser
    assert "Marie Martin" in client.get("/compte").get_data(as_text=True)
    with web.space.db.transaction() as session:
        assert session.get(WebSession, before.value) is None
        actions = session.scalars(select(AuditRecord.action).where(
            AuditRecord.target == MARIE).order_by(AuditRecord.id.desc()).limit(3)).all()
    assert "login" in actions and "login.code_sent" in actions


def test_code_is_single_use_and_never_logged(web: Web, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    client = web.client()
    post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    code = web.mailer.last_code("marie@exemple.fr")
    assert post(client, "/connexion/code", {"code": code}).status_code == 302
    post(client, "/compte", {}, action="/deconnexion")
    replay = post(client, "/connexion", {}, action="/connexion/code") if False else \
        client.post("/connexion/code", data={"code": code})
    assert replay.status_code in (302, 400)
    assert client.get("/compte").status_code == 302
    assert code not in caplog.text and PASSWORD not in caplog.text
    with web.space.db.transaction() as session:
        trail = " ".join(r.request for r in session.scalars(select(AuditRecord)))
        stored = " ".join(r.data for r in session.scalars(select(WebSession)))
    assert code not in trail and PASSWORD not in trail and code not in stored


def test_code_expiry_and_attempt_limit() -> None:
    from trust_space.models import Account as Acc
    from webmail.auth import otp

    now = utcnow()
    challenge, code = otp.start(Acc(id=1), OtpChannel.EMAIL, "", b"k", now)
    assert code is not None and len(code) == 6
    later = now + timedelta(seconds=otp.CODE_TTL_SECONDS + 1)
    assert otp.check(challenge, code, b"k", later) is otp.CodeResult.EXPIRED
    for _ in range(otp.MAX_ATTEMPTS):
        assert otp.check(challenge, "x", b"k", now) is otp.CodeResult.WRONG
    assert otp.check(challenge, code, b"k", now) is otp.CodeResult.EXHAUSTED
    assert otp.renew(challenge, b"k", now) is None  # too soon
    assert otp.renew(challenge, b"k", now + timedelta(seconds=61)) is not None


def test_wrong_answers_do_not_tell_whether_an_identifier_exists(web: Web) -> None:
    known, unknown = web.client(), web.client()
    for _ in range(4):
        a = post(known, "/connexion", {"identifier": MARIE, "password": "Faux-Passw0rd"})
        b = post(unknown, "/connexion", {"identifier": "nobody@mss.test",
                                          "password": "Faux-Passw0rd"})
        assert a.status_code == b.status_code == 401
        assert _text(a).replace(MARIE, "X") == _text(b).replace("nobody@mss.test", "X")
    a = post(known, "/connexion", {"identifier": MARIE, "password": "Faux-Passw0rd"})
    b = post(unknown, "/connexion", {"identifier": "nobody@mss.test", "password": "Faux-Pass"})
    a = post(known, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    b = post(unknown, "/connexion", {"identifier": "nobody@mss.test", "password": PASSWORD})
    assert a.status_code == b.status_code == 401
    assert "temporairement bloqué" in _text(a) and "temporairement bloqué" in _text(b)
    assert _text(a).replace(MARIE, "X") == _text(b).replace("nobody@mss.test", "X")
    with web.space.db.transaction() as session:
        outcomes = session.scalars(select(AuditRecord.outcome).where(
            AuditRecord.actor == MARIE, AuditRecord.action == "login.password")).all()
    assert "account_locked" in outcomes


def test_wrong_codes_lock_the_account(web: Web) -> None:
    client = web.client()
    post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    for _ in range(4):
        assert post(client, "/connexion/code", {"code": "000000"}).status_code == 401
    answer = post(client, "/connexion/code", {"code": "000000"})
    assert answer.status_code == 403 and "temporairement bloqué" in _text(answer)
    again = post(web.client(), "/connexion", {"identifier": MARIE, "password": PASSWORD})
    assert again.status_code == 401 and "temporairement bloqué" in _text(again)


def test_code_resend_is_throttled(web: Web) -> None:
    client = web.client()
    post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    answer = post(client, "/connexion/code", {}, action="/connexion/code/renvoi")
    assert answer.status_code == 302
    assert "patientez" in client.get("/connexion/code").get_data(as_text=True)
    assert len([to for to, _ in web.mailer.sent if to == "marie@exemple.fr"]) == 1


def test_sms_code_login(web: Web) -> None:
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == "paul.durand@mss.test")
                        .values(otp_channel=OtpChannel.SMS))
    client = web.client()
    answer = post(client, "/connexion", {"identifier": "810000000002", "password": PASSWORD})
    assert answer.status_code == 302
    assert "•• •• •• •• 09" in client.get("/connexion/code").get_data(as_text=True)
    assert post(client, "/connexion/code",
                {"code": web.sms_code("+33600000009")}).status_code == 302
    assert client.get("/compte").status_code == 200


def test_totp_login_refuses_a_replayed_code(web: Web) -> None:
    client = web.client()
    login_operator(web, client)
    assert client.get("/operateur/inscriptions").status_code == 200
    again = web.client()
    post(again, "/connexion", {"identifier": OPERATOR, "password": PASSWORD})
    replay = post(again, "/connexion/code", {"code": pyotp.TOTP(OPERATOR_SEED).now()})
    assert replay.status_code == 401
    # The audit says what happened: a TOTP code was asked for, none was sent (#15 item 9).
    with web.space.db.transaction() as session:
        actions = set(session.scalars(select(AuditRecord.action).where(
            AuditRecord.actor == OPERATOR)))
    assert "login.totp_asked" in actions and "login.code_sent" not in actions


def test_suspended_and_pending_accounts_cannot_log_in(web: Web) -> None:
    answer = post(web.client(), "/connexion", {"identifier": "sophie.roux@mss.test",
                                               "password": PASSWORD})
    assert answer.status_code == 401 and "suspendu" in _text(answer)
    lps = post(web.client(), "/connexion", {"identifier": "lps.cabinetmartin@mss.test",
                                            "password": PASSWORD})
    assert lps.status_code == 401 and "incorrect" in _text(lps)


def test_card_login(web: Web) -> None:
    client = web.client(card="marie")
    assert "Carte détectée" in client.get("/connexion").get_data(as_text=True)
    answer = post(client, "/connexion", {}, action="/connexion/carte")
    assert answer.status_code == 302
    assert client.get("/compte").status_code == 200


def test_card_refusals_are_clear_french_pages(web: Web) -> None:
    cases = {"stranger": "Aucun compte de messagerie", "revoked": "révoqué",
             "lps": "carte de professionnel"}
    for card, words in cases.items():
        client = web.client(card=card)
        answer = post(client, "/connexion", {}, action="/connexion/carte")
        assert answer.status_code == 403, card
        assert words in answer.get_data(as_text=True), card
        assert client.get("/compte").status_code == 302
    expired = _expired_card(web)
    client = web.client()
    client.environ_base["SSL_CLIENT_CERT"] = expired
    answer = post(client, "/connexion", {}, action="/connexion/carte")
    assert answer.status_code == 403 and "expiré le" in answer.get_data(as_text=True)
    nocard = post(web.client(), "/connexion", {}, action="/connexion/carte")
    assert nocard.status_code == 403 and "Aucune carte CPS" in nocard.get_data(as_text=True)


def _expired_card(web: Web) -> str:
    from certs.pki import CardIdentity

    identity = CardIdentity("810000000001", "Marie", "Martin", "Médecin", MARIE)
    with web.space.db.transaction() as session:
        issued = web.space.pki.issue_card_soft(
            session, identity, not_before=utcnow() - timedelta(days=30),
            not_after=utcnow() - timedelta(days=1))
    return issued.cert_pem().decode()


def test_inactivity_timeout(web: Web) -> None:
    client = web.client()
    login(web, client)
    with web.space.db.transaction() as session:
        session.execute(update(WebSession).values(
            last_seen_at=utcnow() - timedelta(minutes=121)))
    answer = client.get("/compte")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/connexion")
    assert "session a expiré" in client.get("/connexion").get_data(as_text=True)


def test_logout_and_logout_everywhere(web: Web) -> None:
    first, second, third = web.client(), web.client(), web.client()
    for client in (first, second, third):
        login(web, client)
    page = first.get("/compte/sessions").get_data(as_text=True)
    assert page.count("cette session") == 1 and page.count("<tr>") >= 4
    post(first, "/compte/sessions", {"scope": "others"}, action="/compte/sessions/deconnexion")
    assert first.get("/compte").status_code == 200
    assert second.get("/compte").status_code == 302
    post(first, "/compte/sessions", {"scope": "all"}, action="/compte/sessions/deconnexion")
    assert first.get("/compte").status_code == 302
    assert third.get("/compte").status_code == 302
    login(web, third)
    post(third, "/compte", {}, action="/deconnexion")
    assert third.get("/compte").status_code == 302


def test_rate_limit_on_login(web: Web) -> None:
    web.app.config["RATE_LOGIN"] = "3 per minute"
    client = web.client()
    codes = [post(client, "/connexion", {"identifier": "x@mss.test", "password": "y"}).status_code
             for _ in range(4)]
    assert codes[:3] == [401, 401, 401] and codes[3] == 429


# ------------------------------------------------ anonymous visits: no row, a signed cookie
def _rows(web: Web) -> int:
    with web.space.db.transaction() as session:
        return len(session.scalars(select(WebSession.id)).all())


def test_a_flood_of_anonymous_visits_stores_no_session_row(web: Web) -> None:
    before = _rows(web)
    for _ in range(40):  # each one a new visitor without a cookie
        client = web.client()
        assert client.get("/connexion").status_code == 200
        cookie = client.get_cookie("mss_session")
        assert cookie is not None and "." in cookie.value  # signed values, not a row's token
        assert cookie.http_only and cookie.secure and cookie.same_site == "Lax"
    assert _rows(web) == before
    # The visitor's CSRF token, kept in that cookie, still lets the log-in form through; the
    # second step (a pending code) and the log-in itself are on the server.
    client = web.client()
    login(web, client)
    assert "." not in client.get_cookie("mss_session").value  # type: ignore[union-attr]
    assert _rows(web) == before + 1
    # Signing out leaves no row either (the goodbye message rides in the cookie).
    post(client, "/compte", {}, action="/deconnexion")
    assert _rows(web) == before
    assert client.get("/compte").status_code == 302


def test_an_altered_or_foreign_anonymous_cookie_is_a_new_visit(web: Web) -> None:
    from itsdangerous import URLSafeTimedSerializer

    before = _rows(web)
    client = web.client()
    client.get("/connexion")
    value = client.get_cookie("mss_session").value  # type: ignore[union-attr]
    payload, _, signature = value.rpartition(".")
    forged = [
        payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:],  # altered
        URLSafeTimedSerializer("another key", salt="mss anonymous session").dumps(
            {"csrf_token": "x" * 40}),  # signed by someone else
        # Signed with our key but carrying what must stay on the server (a logged-in user)
        URLSafeTimedSerializer(web.app.secret_key, salt="mss anonymous session").dumps(
            {"csrf_token": "x" * 40, "_user_id": "1"}),
        "not.base64.at-all\x00",
    ]
    for cookie in forged:
        attacker = web.client()
        attacker.set_cookie("mss_session", cookie, domain="localhost")
        answer = attacker.post("/connexion", data={
            "csrf_token": "x" * 40, "identifier": MARIE, "password": PASSWORD})
        assert answer.status_code == 400, cookie
        assert "Formulaire expiré" in answer.get_data(as_text=True)
        assert attacker.get("/compte").status_code == 302
    assert _rows(web) == before


def test_an_anonymous_cookie_older_than_the_timeout_is_refused(web: Web) -> None:
    from itsdangerous import TimestampSigner, URLSafeTimedSerializer

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return super().get_timestamp() - 121 * 60  # the timeout is 120 minutes

    client = web.client()
    form = client.get("/connexion").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
    assert token is not None
    raw = client.get_cookie("mss_session").value  # type: ignore[union-attr]
    data = URLSafeTimedSerializer(web.app.secret_key, salt="mss anonymous session").loads(raw)
    old = URLSafeTimedSerializer(web.app.secret_key, salt="mss anonymous session",
                                 signer=Past).dumps(data)
    domain = client.get_cookie("mss_session").domain  # type: ignore[union-attr]
    client.set_cookie("mss_session", old, domain=domain)
    answer = client.post("/connexion", data={
        "csrf_token": token.group(1), "identifier": MARIE, "password": PASSWORD})
    assert answer.status_code == 400 and "Formulaire expiré" in answer.get_data(as_text=True)
    # The same values signed now pass: only the age was refused.
    client.set_cookie("mss_session", raw, domain=domain)
    answer = client.post("/connexion", data={
        "csrf_token": token.group(1), "identifier": MARIE, "password": PASSWORD})
    assert answer.status_code == 302
