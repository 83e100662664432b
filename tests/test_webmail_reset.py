"""Issue #15 item 2, a way out of a lock-out: the lock message says how long, the last try is
announced, and "Mot de passe oublié ?" resets the password by a code to the usual address (or by
SMS, or with the CPS card), clears the lock and closes the sessions. Flask's test client on a real
Dovecot and gateway (the new password then logs in and opens the inbox), with the attacker's
tests beside (unknown identifiers get the same pages and timing, wrong codes and requests are
limited); and the journey in Debian's Chromium on a 390×844 phone, on the embedded default where
the codes land in DATA_DIR/spool/mail (screenshots in tests/artifacts/webmail-reset/)."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.audit import AuditRecord
from core.db import utcnow
from core.settings import Settings
from mss.app import App
from mss.demo import setup_demo
from mss.run import run
from tests.mailstore_fixtures import open_tempdir
from tests.webmail_browser_support import Sink, Site, check_a11y, free_port, wait
from tests.webmail_helpers import PASSWORD, Web, login, post, token
from tests.webmail_mail_helpers import box_id, text
from trust_space.accounts import hash_password
from trust_space.models import Account

pytest_plugins = ["tests.webmail_mail_fixtures"]
MARIE, NEW = "marie.martin@mss.test", "Nouveau-Passw0rd"
UNKNOWN = "personne.inconnue@mss.test"
LOCKED = "temporairement bloqué"


@pytest.fixture
def web(mail_web: Web) -> Iterator[Web]:
    """The module's webmail with every limit and lock forgotten and Marie's password back."""
    _forget(mail_web)
    yield mail_web
    _forget(mail_web)


def _forget(web: Web) -> None:
    guards = web.app.extensions["mss.reset"]
    with web.space.db.transaction() as session:
        for counter in (guards.requests, guards.wrong_codes, web.app.extensions["mss.phantoms"]):
            counter.forget(session)
        session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                        .values(failed_attempts=0, code_failures=0, locked_until=None))
        session.execute(update(Account).where(Account.login == MARIE)
                        .values(password_hash=hash_password(PASSWORD)))


def _same(a: str, b: str, *names: str) -> tuple[str, str]:
    """Both pages without CSRF tokens and with the identifiers blanked."""
    def clean(page: str) -> str:
        page = re.sub(r'value="[^"]*"', "", page)
        for name in names:
            page = page.replace(name, "X")
        return page

    return clean(a), clean(b)


def _reset_mails(web: Web, to: str) -> list[bytes]:
    return [raw for rcpt, raw in web.mailer.sent if rcpt == to
            and b"initialisation" in raw]


def _reset_code(web: Web, to: str, before: int) -> str:
    raw = wait(lambda: len(_reset_mails(web, to)) > before and _reset_mails(web, to)[before])
    body = email.message_from_bytes(raw).get_payload(decode=True).decode()
    return re.search(r"\b(\d{6})\b", body).group(1)  # type: ignore[union-attr]


def _ask(client: FlaskClient, identifier: str, channel: str = "email"):  # type: ignore[no-untyped-def]
    return post(client, "/connexion/mot-de-passe-oublie",
                {"identifier": identifier, "channel": channel})


def _audit(web: Web, action: str) -> list[str]:
    with web.space.db.transaction() as session:
        return list(session.scalars(select(AuditRecord.outcome).where(
            AuditRecord.action == action).order_by(AuditRecord.id)))


# ------------------------------------------------------------------ lock message, last try
def test_the_lock_says_how_long_and_the_last_try_is_announced(web: Web) -> None:
    known, unknown = web.client(), web.client()
    for attempt in range(1, 6):
        a = post(known, "/connexion", {"identifier": MARIE, "password": "Faux-Passw0rd"})
        b = post(unknown, "/connexion", {"identifier": UNKNOWN, "password": "Faux-Passw0rd"})
        assert a.status_code == b.status_code == 401
        page_a, page_b = _same(text(a), text(b), MARIE, UNKNOWN)
        assert page_a == page_b, attempt
        assert ("dernier essai avant blocage" in page_a) is (attempt == 4)
        assert ("maintenant bloqué pendant 15 minutes" in page_a) is (attempt == 5)
        assert "Mot de passe oublié ?" in page_a
    a = post(known, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    b = post(unknown, "/connexion", {"identifier": UNKNOWN, "password": PASSWORD})
    page_a, page_b = _same(text(a), text(b), MARIE, UNKNOWN)
    assert page_a == page_b and LOCKED in page_a and "réessayez dans 15 minutes" in page_a
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == MARIE).values(
            locked_until=utcnow() + timedelta(minutes=13, seconds=20)))
    later = post(known, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    assert "réessayez dans 14 minutes" in text(later)


def test_the_last_wrong_code_is_announced(web: Web) -> None:
    client = web.client()
    post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
    for attempt in range(1, 5):
        answer = post(client, "/connexion/code", {"code": "000000"})
        assert answer.status_code == 401
        assert ("dernier essai avant blocage" in text(answer)) is (attempt == 4)
    answer = post(client, "/connexion/code", {"code": "000000"})
    assert answer.status_code == 403 and "réessayez dans 15 minutes" in text(answer)


# ------------------------------------------------------------------ the reset journey
def test_reset_by_e_mail_code_unlocks_and_the_new_password_logs_in(web: Web) -> None:
    elsewhere = web.client()
    login(web, elsewhere, "marie")  # a session open before the reset
    client = web.client()
    for _ in range(5):
        post(client, "/connexion", {"identifier": MARIE, "password": "Faux-Passw0rd"})
    assert LOCKED in text(post(client, "/connexion", {"identifier": MARIE,
                                                      "password": PASSWORD}))
    assert 'href="/connexion/mot-de-passe-oublie"' in text(client.get("/connexion"))
    before = len(_reset_mails(web, "marie@exemple.fr"))
    answer = _ask(client, MARIE)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/connexion/mot-de-passe-oublie/code"
    code = _reset_code(web, "marie@exemple.fr", before)
    wrong = post(client, "/connexion/mot-de-passe-oublie/code", {"code": "000000"})
    assert wrong.status_code == 401 and "Code incorrect" in text(wrong)
    answer = post(client, "/connexion/mot-de-passe-oublie/code", {"code": code})
    assert answer.headers["Location"] == "/connexion/mot-de-passe-oublie/nouveau"
    weak = post(client, "/connexion/mot-de-passe-oublie/nouveau",
                {"new": "court", "confirm": "court"})
    assert weak.status_code == 400 and "au moins 8 caractères" in text(weak)
    done = post(client, "/connexion/mot-de-passe-oublie/nouveau", {"new": NEW, "confirm": NEW})
    assert done.status_code == 302 and done.headers["Location"] == "/connexion"
    assert "débloqué" in text(client.get("/connexion"))
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == MARIE))
        assert account is not None and account.locked_until is None
        assert account.failed_attempts == 0 and account.code_failures == 0
    assert elsewhere.get("/compte").status_code == 302  # the old sessions are closed
    to, notice = web.mailer.sent[-1]  # the holder is told
    assert to == "marie@exemple.fr" and b"Changement sur votre compte" in notice
    old = post(web.client(), "/connexion", {"identifier": MARIE, "password": PASSWORD})
    assert old.status_code == 401
    fresh = web.client()
    assert post(fresh, "/connexion", {"identifier": MARIE, "password": NEW}).status_code == 302
    landing = post(fresh, "/connexion/code", {"code": web.mailer.last_code("marie@exemple.fr")})
    inbox = f"/courrier/{box_id(web, MARIE)}"
    assert landing.headers["Location"] == inbox
    assert "Boîte de réception" in text(fresh.get(inbox))  # opened through Dovecot
    assert _audit(web, "password.reset.request")[-1] == "sent"
    assert "ok" in _audit(web, "password.reset.code")
    assert _audit(web, "password.reset")[-1] == "ok"
    with web.space.db.transaction() as session:
        trail = " ".join(r.request for r in session.scalars(select(AuditRecord)))
    assert code not in trail and NEW not in trail


def test_reset_by_sms(web: Web) -> None:
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == MARIE))
        assert account is not None and account.professional is not None
        account.professional.mobile = "0611223399"
    try:
        client = web.client()
        _ask(client, "810000000001", "sms")  # the national id works too
        spool = Path(web.app.extensions["mss"].sms.spool)
        body = wait(lambda: [p.read_text() for p in spool.glob("*.json")
                             if "0611223399" in p.read_text() and "initialisation" in
                             p.read_text()])
        code = re.search(r"\b(\d{6})\b", body[-1]).group(1)  # type: ignore[union-attr]
        assert "par SMS" in text(client.get("/connexion/mot-de-passe-oublie/code"))
        answer = post(client, "/connexion/mot-de-passe-oublie/code", {"code": code})
        assert answer.headers["Location"] == "/connexion/mot-de-passe-oublie/nouveau"
    finally:
        with web.space.db.transaction() as session:
            account = session.scalar(select(Account).where(Account.login == MARIE))
            account.professional.mobile = ""  # type: ignore[union-attr]


def test_reset_with_the_card_needs_no_code(web: Web) -> None:
    client = web.client(card="marie")
    page = text(client.get("/connexion/mot-de-passe-oublie"))
    assert "Continuer avec ma carte CPS" in page
    answer = post(client, "/connexion/mot-de-passe-oublie", {},
                  action="/connexion/mot-de-passe-oublie/carte")
    assert answer.headers["Location"] == "/connexion/mot-de-passe-oublie/nouveau"
    done = post(client, "/connexion/mot-de-passe-oublie/nouveau", {"new": NEW, "confirm": NEW})
    assert done.status_code == 302
    assert _audit(web, "password.reset")[-1] == "ok"
    stranger = web.client(card="stranger")
    refused = post(stranger, "/connexion/mot-de-passe-oublie", {},
                   action="/connexion/mot-de-passe-oublie/carte")
    assert refused.status_code == 403


# ------------------------------------------------------------------ the attacker's side
def test_an_unknown_login_gets_the_same_pages(web: Web) -> None:
    known, unknown = web.client(), web.client()
    sent = len(web.mailer.sent)
    a, b = _ask(known, MARIE), _ask(unknown, UNKNOWN)
    assert a.status_code == b.status_code == 302
    assert a.headers["Location"] == b.headers["Location"]
    pages = _same(text(known.get(a.headers["Location"])),
                  text(unknown.get(b.headers["Location"])))
    assert pages[0] == pages[1]
    for _ in range(3):
        a = post(known, "/connexion/mot-de-passe-oublie/code", {"code": "000000"})
        b = post(unknown, "/connexion/mot-de-passe-oublie/code", {"code": "000000"})
        assert a.status_code == b.status_code == 401
        assert _same(text(a), text(b))[0] == _same(text(a), text(b))[1]
    wait(lambda: len(web.mailer.sent) > sent)
    time.sleep(0.2)
    assert [to for to, _ in web.mailer.sent[sent:]] == ["marie@exemple.fr"]
    assert _audit(web, "password.reset.request")[-2:] == ["sent", "not_sent"]
    no_page = post(unknown, "/connexion/mot-de-passe-oublie", {"new": NEW, "confirm": NEW},
                   action="/connexion/mot-de-passe-oublie/nouveau")
    assert no_page.status_code == 302 and "oublie" in no_page.headers["Location"]


def test_the_answer_does_not_wait_for_the_mail(web: Web) -> None:
    """Same timing for an unknown login: the code leaves in the background, so a slow
    smarthost does not make a known account's answer slower."""
    webmail = web.app.extensions["mss"]
    real = webmail.mailer
    started = threading.Event()

    class Slow:
        def send(self, to: str, message: bytes) -> None:
            started.set()
            time.sleep(1.5)
            real.send(to, message)

    webmail.mailer = Slow()
    try:
        timings = {}
        for who in (MARIE, UNKNOWN):
            client = web.client()
            csrf = token(client, "/connexion/mot-de-passe-oublie")
            begin = time.monotonic()
            answer = client.post("/connexion/mot-de-passe-oublie", data={
                "csrf_token": csrf, "identifier": who, "channel": "email"})
            timings[who] = time.monotonic() - begin
            assert answer.status_code == 302
        assert started.wait(5)
        assert timings[MARIE] < 1.0, timings  # did not wait for the 1.5 s transport
    finally:
        time.sleep(1.6)
        webmail.mailer = real


def test_wrong_reset_codes_and_requests_are_limited(web: Web) -> None:
    for who in (MARIE, UNKNOWN):
        client = web.client()
        before = len(_reset_mails(web, "marie@exemple.fr"))
        _ask(client, who)
        for _ in range(5):
            answer = post(client, "/connexion/mot-de-passe-oublie/code", {"code": "000000"})
            assert answer.status_code == 401
        code = _reset_code(web, "marie@exemple.fr", before) if who == MARIE else "123456"
        answer = post(client, "/connexion/mot-de-passe-oublie/code", {"code": code})
        assert answer.headers["Location"] == "/connexion/mot-de-passe-oublie"
        assert "Trop de codes incorrects" in text(client.get("/connexion/mot-de-passe-oublie"))
        # A new code does not buy new guesses inside the window.
        _ask(client, who)
        answer = post(client, "/connexion/mot-de-passe-oublie/code", {"code": "000000"})
        assert "Trop de codes incorrects" in text(client.get(answer.headers["Location"]))
        assert _ask(client, who).status_code == 302  # the third code asked in the window
        refused = _ask(client, who)
        assert refused.status_code == 429 and "Trop de demandes" in text(refused)
    assert "account_locked" in _audit(web, "password.reset.code")  # the one lock-out too
    assert LOCKED in text(post(web.client(), "/connexion",
                               {"identifier": MARIE, "password": PASSWORD}))


# ------------------------------------------------------------------ in Chromium, on a phone
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts" / "webmail-reset"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """``mss run`` (all roles: Dovecot, gateway, webmail) on a demo data directory, without
    smarthost: the codes land in DATA_DIR/spool/mail as on the embedded default."""
    root = open_tempdir("mss-webmail-reset-")  # Dovecot's users must traverse it
    data = root / "data"
    ports = {name: free_port() for name in ("web_port", "submission_port", "submissions_port",
                                            "relay_port", "imap_port", "imaps_port",
                                            "managesieve_port")}
    settings = Settings.load(data_dir=data, environ={}, demo_password=PASSWORD,
                             listen_address="127.0.0.1", hostname="localhost", metrics_port=0,
                             whitelist_url="", **ports)
    app = App(settings)
    setup_demo(app)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "all"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(60), "mss run did not start"
    yield Site(f"https://localhost:{settings.web_port}", settings, app, Sink())
    stop.set()
    thread.join(30)
    app.close()
    shutil.rmtree(root, ignore_errors=True)


def _spooled(site: Site, to: str, subject: str) -> list[email.message.Message]:
    spool = site.settings.data_dir / "spool" / "mail"
    found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted(spool.glob("*.eml"))] \
        if spool.exists() else []
    return [m for m in found if m["To"] == to and m["Subject"] == subject]


def _spooled_code(site: Site, to: str, subject: str, before: int) -> str:
    message = wait(lambda: len(_spooled(site, to, subject)) > before
                   and _spooled(site, to, subject)[before])
    body = message.get_payload(decode=True).decode()
    return re.search(r"\b(\d{6})\b", body).group(1)  # type: ignore[union-attr]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium absent")
# When this module's two running installations stop, an SSL client socket of one of them is
# sometimes collected unclosed (an IMAP session, source not found yet): not this journey's
# subject, so only that warning is ignored here.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket"
                            ":pytest.PytestUnraisableExceptionWarning")
def test_phone_reset_journey(site: Site) -> None:
    usual, login_subject = "julie.bernard@exemple.fr", "Votre code de connexion"
    reset_subject = "Réinitialisation de votre mot de passe"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(ignore_https_errors=True, locale="fr-FR",
                                      viewport={"width": 390, "height": 844},
                                      device_scale_factor=2, is_mobile=True, has_touch=True)
        context.set_default_timeout(10_000)
        page = context.new_page()

        def shot(name: str) -> None:
            check_a11y(page, f"reset-{name}")  # axe-core: no serious or critical violation
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

        def password_login(password: str) -> None:
            page.goto(site.url + "/connexion")
            page.fill("#identifier", "julie.bernard@mss.test")
            page.fill("#password", password)
            with page.expect_navigation():
                page.click("button:has-text('Continuer')")

        for _ in range(4):
            password_login("Mauvais-Passw0rd")
        assert "dernier essai avant blocage" in page.inner_text("#login-error")
        shot("01-dernier-essai")
        password_login("Mauvais-Passw0rd")
        password_login(PASSWORD)
        assert "réessayez dans 15 minutes" in page.inner_text("#login-error")
        shot("02-bloque")
        page.click("#forgot")
        page.wait_for_url("**/connexion/mot-de-passe-oublie")
        page.fill("#identifier", "julie.bernard@mss.test")
        shot("03-mot-de-passe-oublie")
        before = len(_spooled(site, usual, reset_subject))
        page.click("button:has-text('Recevoir un code')")
        page.wait_for_url("**/mot-de-passe-oublie/code")
        shot("04-code")
        page.fill("#code", _spooled_code(site, usual, reset_subject, before))
        page.click("button:has-text('Valider')")
        page.wait_for_url("**/mot-de-passe-oublie/nouveau")
        page.fill("#new", NEW)
        page.fill("#confirm", NEW)
        shot("05-nouveau-mot-de-passe")
        page.click("button:has-text('Enregistrer le nouveau mot de passe')")
        page.wait_for_url("**/connexion")
        assert "débloqué" in page.inner_text(".flash")
        shot("06-connexion-apres-reinitialisation")
        before = len(_spooled(site, usual, login_subject))
        password_login(NEW)
        page.wait_for_url("**/connexion/code")
        page.fill("#code", _spooled_code(site, usual, login_subject, before))
        page.click("button:has-text('Valider')")
        page.wait_for_url("**/courrier/*")
        assert "Boîte de réception" in page.inner_text("main")  # through the real Dovecot
        shot("07-boite-de-reception")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width  # no sideways scrolling on the phone
        context.close()
        browser.close()
