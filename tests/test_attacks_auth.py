"""Attacks on authentication (issue #14, items 2 and 4), each through the real service.

- Item 2: a personal mailbox's web password is not an IMAP/SMTP password. The real Dovecot and
  the real gateway (``tests.gateway_fixtures``) with the default settings refuse it and take
  application passwords; an operator never logs in over IMAP/SMTP with a password, even when
  ``imap_smtp_web_password`` re-allows the web password for everybody else.
- Item 4: wrong one-time codes must not be forgiven by a correct password (password → 4 wrong
  codes → password → 4 wrong codes … used to never lock).
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
import shutil
import smtplib
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import create_engine, delete, select, text, update

from core.audit import AuditRecord
from core.db import Database, utcnow
from core.settings import Settings
from mailstore.credentials import master_credentials
from tests.gateway_fixtures import (
    GATEWAY_DEFAULTS,
    Operator,
    build_operator,
    start_operator,
    stop_operator,
)
from tests.mailstore_fixtures import TrustSpace, open_tempdir
from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD, Web, post
from trust_space import app_passwords
from trust_space.accounts import hash_password
from trust_space.models import (
    Account,
    AccountKind,
    AppPassword,
    Mailbox,
    MailboxKind,
    MailboxState,
)

pytest_plugins = ["tests.webmail_fixtures"]
MARIE = "marie.martin@mss.test"
LOCKED = "temporairement bloqué"


def _text(answer) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r'value="[^"]*"', "", answer.get_data(as_text=True))


def _account(web: Web, login: str) -> Account:
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == login))
        assert account is not None
        session.expunge(account)
        return account


def _expire_lock(web: Web, login: str) -> None:
    """What ``login_lock_minutes`` of waiting does: the lock lies in the past."""
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == login)
                        .values(locked_until=utcnow() - timedelta(seconds=1)))


def test_a_correct_password_does_not_forgive_wrong_codes(web: Web) -> None:
    client = web.client()
    assert post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    for _ in range(4):
        assert post(client, "/connexion/code", {"code": "000000"}).status_code == 401
    # The attacker knows the password and starts again, hoping for 4 more guesses.
    again = web.client()
    assert post(again, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    assert _account(web, MARIE).code_failures == 4
    answer = post(again, "/connexion/code", {"code": "000000"})
    assert answer.status_code == 403 and LOCKED in _text(answer)
    locked = _account(web, MARIE)
    assert locked.locked_until is not None and locked.locked_until > utcnow()
    # Locked: neither the password nor a right code gets in now.
    refused = post(web.client(), "/connexion", {"identifier": MARIE, "password": PASSWORD})
    assert refused.status_code == 401 and LOCKED in _text(refused)
    with web.space.db.transaction() as session:
        outcomes = session.scalars(select(AuditRecord.outcome).where(
            AuditRecord.actor == MARIE, AuditRecord.action == "login.code")).all()
    assert outcomes.count("wrong") >= 4 and "account_locked" in outcomes


def test_after_the_lock_expires_the_right_password_and_code_log_in(web: Web) -> None:
    client = web.client()
    for _ in range(2):  # 3 + 2 wrong codes over two password logins
        post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
        for _ in range(3):
            if post(client, "/connexion/code", {"code": "000000"}).status_code == 403:
                break
    assert _account(web, MARIE).locked_until is not None
    _expire_lock(web, MARIE)
    fresh = web.client()
    assert post(fresh, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    assert _account(web, MARIE).code_failures == 0  # the expiry started the count again
    assert post(fresh, "/connexion/code", {"code": "000000"}).status_code == 401
    code = web.mailer.last_code("marie@exemple.fr")
    answer = post(fresh, "/connexion/code", {"code": code})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/courrier/")
    after = _account(web, MARIE)
    assert after.code_failures == 0 and after.failed_attempts == 0


def test_operator_totp_guesses_add_up_across_password_logins(web: Web) -> None:
    from webmail.models import TotpUse

    with web.space.db.transaction() as session:
        session.execute(delete(TotpUse))
    right = pyotp.TOTP(OPERATOR_SEED).now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    statuses: list[int | str] = []
    while len(statuses) < 6 and 403 not in statuses:  # 2 wrong TOTP codes per password login
        client = web.client()
        if post(client, "/connexion", {"identifier": OPERATOR, "password": PASSWORD}
                ).status_code != 302:
            statuses.append("password_refused")
            break
        for _ in range(2):
            statuses.append(post(client, "/connexion/code", {"code": wrong}).status_code)
            if statuses[-1] == 403:
                break
    assert statuses == [401, 401, 401, 401, 403]
    assert _account(web, OPERATOR).locked_until is not None
    _expire_lock(web, OPERATOR)
    client = web.client()
    assert post(client, "/connexion", {"identifier": OPERATOR, "password": PASSWORD}
                ).status_code == 302
    assert post(client, "/connexion/code", {"code": right}).status_code == 302
    assert client.get("/operateur/inscriptions").status_code == 200


# ---------------------------------------------------------------------- item 2: IMAP / SMTP
EXPLOITANT = "exploitant@mss.test"  # an operator account that also has a published mailbox
LPS = "lps.cabinetmartin@mss.test"


def _add_operator_with_mailbox(space: TrustSpace) -> str:
    """The worst case for the rule "operators never use a password over IMAP/SMTP": a mailbox
    Dovecot would open, and an application password row written behind mss's back. Returns
    that application password."""
    password = f"opexploi-{'a' * app_passwords.SECRET_LENGTH}"
    with space.db.transaction() as session:
        box = Mailbox(address=EXPLOITANT, kind=MailboxKind.PERSONAL,
                      state=MailboxState.PUBLISHED, display_name="Exploitant")
        account = Account(login=EXPLOITANT, kind=AccountKind.PROFESSIONAL, is_operator=True,
                          mailbox=box, password_hash=hash_password(PASSWORD), failed_attempts=0)
        session.add_all([box, account])
        session.flush()
        session.add(AppPassword(account_id=account.id, name="forgé", prefix="opexploi",
                                secret_hash=app_passwords.hash_app_password(password)))
    return password


@pytest.fixture(scope="module")
def strict() -> Iterator[Operator]:
    """mss.test with the default settings: application passwords only on IMAP/SMTP."""
    root = open_tempdir("mss-attack-auth-")
    space = build_operator(root, "mss.test", "Operateur Un", imap_smtp_web_password=False)
    assert space.settings.imap_smtp_web_password is False
    op = start_operator(space)
    op.exploitant_password = _add_operator_with_mailbox(space)  # type: ignore[attr-defined]
    yield op
    stop_operator(op)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def lenient(strict: Operator) -> Iterator[Operator]:
    """A second installation on the same database with ``imap_smtp_web_password`` on."""
    settings = strict.space.sibling_settings(imap_smtp_web_password=True, **GATEWAY_DEFAULTS)
    shutil.copy(strict.settings.data_dir / "secret.key", settings.data_dir / "secret.key")
    space = TrustSpace(settings, Database(settings.effective_database_url), strict.space.pki,
                       strict.space.domain, cards=strict.space.cards)
    op = start_operator(space)
    yield op
    stop_operator(op)


@pytest.fixture(autouse=True)
def _unlocked(request: pytest.FixtureRequest) -> None:
    if "strict" in request.fixturenames:
        space = request.getfixturevalue("strict").space
        with space.db.transaction() as session:
            session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                            .values(failed_attempts=0, code_failures=0, locked_until=None))


def _imap_login(op: Operator, login: str, password: str) -> bool:
    conn = op.space.imaps()
    try:
        conn.login(login, password)
    except imaplib.IMAP4.error:
        conn.shutdown()
        return False
    try:
        return conn.select("INBOX", readonly=True)[0] == "OK"
    finally:
        conn.logout()


def _smtp_login(op: Operator, login: str, password: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", op.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=op.client_context())
        try:
            code, text = smtp.login(login, password)
        except smtplib.SMTPAuthenticationError as refused:
            code, text = refused.smtp_code, refused.smtp_error
        return code, text.decode()


def _new_app_password(op: Operator, login: str, name: str) -> str:
    with op.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == login))
        assert account is not None
        _row, password = app_passwords.create(session, account, name)
    return password


def test_the_web_password_alone_is_refused_on_imap_and_smtp(strict: Operator) -> None:
    marie = strict.space.address("marie")
    assert not _imap_login(strict, marie, PASSWORD)
    assert not _imap_login(strict, "810000000001", PASSWORD)  # national id, same rule
    # %w is SQL-escaped by Dovecot: a quote in the password is just a wrong password.
    assert not _imap_login(strict, marie, "abcdefgh-' OR '1'='1")
    assert _imap_login(strict, strict.space.address("lps"), PASSWORD)  # Dovecot still fine
    code, text = _smtp_login(strict, marie, PASSWORD)
    assert code == 535 and "mot de passe d'application" in text
    with strict.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == marie))
        assert account is not None and account.failed_attempts >= 1  # counted (gateway)
        outcome = session.scalar(select(AuditRecord.outcome).where(
            AuditRecord.action == "smtp.auth", AuditRecord.actor == marie)
            .order_by(AuditRecord.id.desc()))
    assert outcome == "authentication_failed"


def test_an_app_password_works_until_it_is_revoked(strict: Operator) -> None:
    marie = strict.space.address("marie")
    password = _new_app_password(strict, marie, "Thunderbird bureau")
    assert len(password) == 35 and password[8] == "-"
    assert _imap_login(strict, marie, password)
    assert _smtp_login(strict, marie, password)[0] == 235
    assert not _imap_login(strict, marie, password[:-1] + ("b" if password[-1] != "b" else "c"))
    with strict.space.db.transaction() as session:
        row = session.scalar(select(AppPassword).where(AppPassword.name == "Thunderbird bureau"))
        assert row is not None and row.last_used_at is not None
        prefix = row.prefix
        records = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "smtp.auth", AuditRecord.actor == marie)).all()
        dumped = json.dumps([(r.outcome, r.request) for r in records], default=str)
        account = session.scalar(select(Account).where(Account.login == marie))
        assert account is not None
        app_passwords.revoke(session, account, prefix)
    assert password not in dumped and password[9:] not in dumped  # never the secret
    assert "Thunderbird bureau" in dumped and prefix in dumped
    assert not _imap_login(strict, marie, password)
    assert _smtp_login(strict, marie, password)[0] == 535


def test_one_account_s_app_password_does_not_open_another(strict: Operator) -> None:
    password = _new_app_password(strict, strict.space.address("paul"), "Téléphone")
    assert not _imap_login(strict, strict.space.address("julie"), password)
    assert _smtp_login(strict, strict.space.address("julie"), password)[0] == 535
    assert _imap_login(strict, strict.space.address("paul"), password)


def test_wrong_app_passwords_lock_smtp_and_imap(strict: Operator) -> None:
    emma = strict.space.address("emma")
    password = _new_app_password(strict, emma, "Logiciel du cabinet")
    for _ in range(strict.settings.login_max_failures):
        assert _smtp_login(strict, emma, password[:9] + "x" * 26)[0] == 535
    assert _smtp_login(strict, emma, password)[0] == 535  # locked: even the right one
    assert not _imap_login(strict, emma, password)  # the same lock (Dovecot's WHERE)


def test_an_operator_never_logs_in_with_a_password(strict: Operator, lenient: Operator) -> None:
    forged = strict.exploitant_password  # type: ignore[attr-defined]
    for op in (strict, lenient):
        for password in (PASSWORD, forged):
            assert not _imap_login(op, EXPLOITANT, password)
            assert _smtp_login(op, EXPLOITANT, password)[0] == 535
    with strict.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == EXPLOITANT))
        assert account is not None
        with pytest.raises(app_passwords.AppPasswordError) as refused:
            app_passwords.create(session, account, "Thunderbird")
    assert refused.value.code == "app_password_not_allowed"


def test_the_setting_re_allows_the_web_password(strict: Operator, lenient: Operator) -> None:
    julie = strict.space.address("julie")
    assert not _imap_login(strict, julie, PASSWORD)
    assert _imap_login(lenient, julie, PASSWORD)
    assert _smtp_login(lenient, julie, PASSWORD)[0] == 235
    assert _smtp_login(strict, julie, PASSWORD)[0] == 535


def test_practice_software_and_the_webmail_keep_their_credentials(strict: Operator) -> None:
    # An applicative account has no web log-in: its password is its IMAP/SMTP credential.
    assert _imap_login(strict, LPS, PASSWORD)
    assert _smtp_login(strict, LPS, PASSWORD)[0] == 235
    # The webmail opens a mailbox as Dovecot's master user (the target check still passes)…
    creds = master_credentials(strict.settings)
    assert _imap_login(strict, creds.login_for(strict.space.address("marie")), creds.secret)
    # …and submits as its service account for a user (PLAIN with an authzid).
    service = f"webmail@{strict.space.domain}"
    secret = (strict.settings.data_dir / "webmail.secret").read_text().strip()
    with smtplib.SMTP("127.0.0.1", strict.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=strict.client_context())
        smtp.ehlo()
        blob = base64.b64encode(f"marie.martin@mss.test\0{service}\0{secret}".encode())
        assert smtp.docmd("AUTH", f"PLAIN {blob.decode()}")[0] == 235


# ---------------------------------------------------------------------- the CLI and the demo
@pytest.fixture(scope="module")
def demo_dir() -> Iterator[Path]:
    from tests.test_cli import mss

    root = open_tempdir("mss-attack-auth-demo-")
    result = mss(root, "demo")
    assert result.returncode == 0, result.stderr
    assert "Mot de passe d'application IMAP/SMTP" in result.stdout
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_demo_gives_marie_an_app_password_for_a_real_imap_client(demo_dir: Path) -> None:
    from mailstore.service import DovecotService
    from tests.mailstore_fixtures import TEST_OPTIONS, free_port
    from tests.test_cli import mss

    path = demo_dir / "demo" / "marie.martin@mss.test.app-password"
    assert path.stat().st_mode & 0o777 == 0o600
    password = path.read_text().strip()
    assert password not in mss(demo_dir, "demo").stdout  # shown as a path, never in clear
    assert path.read_text().strip() == password  # the rerun kept it
    settings = Settings.load(data_dir=demo_dir, environ={}, imap_port=free_port(),
                             imaps_port=free_port(), managesieve_port=free_port())
    db = Database(settings.effective_database_url)
    dovecot = DovecotService(settings, db, options=TEST_OPTIONS)
    dovecot.start()
    try:
        context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
        context.check_hostname = False
        for secret, works in ((password, True), ((demo_dir / "demo-password").read_text(), False)):
            conn = imaplib.IMAP4_SSL("127.0.0.1", settings.imaps_port, ssl_context=context,
                                     timeout=10)
            try:
                assert conn.login("marie.martin@mss.test", secret.strip())[0] == "OK"
                assert works
                conn.logout()
            except imaplib.IMAP4.error:
                conn.shutdown()
                assert not works
    finally:
        dovecot.stop()
        db.dispose()


def test_cli_creates_lists_and_revokes_app_passwords(demo_dir: Path) -> None:
    from tests.test_cli import assert_clean_error, mss

    login = "paul.durand@mss.test"
    created = mss(demo_dir, "account", "app-password", "create", login, "--name",
                  "Logiciel du cabinet")
    assert created.returncode == 0, created.stderr
    password = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[a-z2-9]{8}-[a-z2-9]{26}", password)
    prefix = password[:8]
    listed = mss(demo_dir, "account", "app-password", "list", login).stdout
    assert prefix in listed and "Logiciel du cabinet" in listed and "jamais" in listed
    assert password[9:] not in listed
    assert_clean_error(mss(demo_dir, "account", "app-password", "create", login, "--name",
                           "logiciel du CABINET"), "déjà")
    assert_clean_error(mss(demo_dir, "account", "app-password", "create",
                           "operateur@mss.test", "--name", "x"), "opérateur")
    assert_clean_error(mss(demo_dir, "account", "app-password", "create", "nobody@mss.test",
                           "--name", "x"), "compte inconnu")
    assert_clean_error(mss(demo_dir, "account", "app-password", "create", login, "--name",
                           " "), "nom")
    revoked = mss(demo_dir, "account", "app-password", "revoke", login, prefix)
    assert revoked.returncode == 0 and "révoqué" in revoked.stdout
    assert prefix not in mss(demo_dir, "account", "app-password", "list", login).stdout
    assert_clean_error(mss(demo_dir, "account", "app-password", "revoke", login, prefix),
                       "Aucun mot de passe d'application actif")
    engine = create_engine(f"sqlite:///{demo_dir / 'mss.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT action, request FROM audit_record WHERE target = :t "
                                 "AND action LIKE 'account.app_password.%'"), {"t": login}).all()
    engine.dispose()
    assert [r[0] for r in rows] == ["account.app_password.create", "account.app_password.revoke"]
    assert all(prefix in r[1] and password[9:] not in r[1] for r in rows)


# ---------------------------------------------------------------------- Mon compte (HTTP)
APP_PAGE = "/compte/mots-de-passe-application"


def _login_marie(web: Web):  # type: ignore[no-untyped-def]
    from tests.webmail_helpers import login

    client = web.client()
    login(web, client)
    return client


def test_mon_compte_creates_an_app_password_after_re_authentication(web: Web) -> None:
    client = _login_marie(web)
    assert "Mots de passe d'application" in client.get(APP_PAGE).get_data(as_text=True)
    wrong = post(client, APP_PAGE, {"name": "Thunderbird", "password": "Faux-Passw0rd"})
    assert wrong.status_code == 401 and "Mot de passe incorrect" in _text(wrong)
    assert _account(web, MARIE).failed_attempts == 1  # counted like at the log-in page
    missing = post(client, APP_PAGE, {"name": "Thunderbird"})
    assert missing.status_code == 401
    assert client.post(APP_PAGE, data={"name": "x", "password": PASSWORD}).status_code == 400
    made = post(client, APP_PAGE, {"name": "Thunderbird", "password": PASSWORD})
    page = made.get_data(as_text=True)
    assert made.status_code == 200 and "il ne sera plus jamais affiché" in page
    secret = re.search(r'id="app-password-secret">([a-z2-9]{8}-[a-z2-9]{26})<', page)
    assert secret is not None
    assert str(web.space.settings.imaps_port) in page and "marie.martin@mss.test" in page
    again = client.get(APP_PAGE).get_data(as_text=True)
    assert secret.group(1) not in again and secret.group(1)[:8] in again  # once only
    assert made.headers["Cache-Control"] == "no-store"
    with web.space.db.transaction() as session:
        requests = session.scalars(select(AuditRecord.request).where(
            AuditRecord.action == "account.app_password.create",
            AuditRecord.target == MARIE)).all()
    assert any(secret.group(1)[:8] in r for r in requests)
    assert not any(secret.group(1)[9:] in r for r in requests)
    # An application password is for IMAP/SMTP only: it does not open the webmail.
    refused = post(web.client(), "/connexion", {"identifier": MARIE, "password": secret.group(1)})
    assert refused.status_code == 401


def test_mon_compte_revokes_after_confirmation_and_only_its_own(web: Web) -> None:
    client = _login_marie(web)
    made = post(client, APP_PAGE, {"name": "Logiciel du cabinet", "password": PASSWORD})
    prefix = re.search(r'id="app-password-secret">([a-z2-9]{8})-', made.get_data(as_text=True))
    assert prefix is not None
    confirm = f"{APP_PAGE}/{prefix.group(1)}/revoquer"
    assert "Révoquer « Logiciel du cabinet » ?" in client.get(confirm).get_data(as_text=True)
    assert client.post(confirm, data={}).status_code == 400  # no CSRF token
    julie = web.client()
    from tests.webmail_helpers import login

    login(web, julie, "julie")
    assert julie.get(confirm).status_code == 404  # Marie's prefix is nobody's for Julie
    assert post(julie, APP_PAGE, {}, action=confirm).status_code == 404
    done = post(client, confirm, {})
    assert done.status_code == 302
    listing = client.get(APP_PAGE).get_data(as_text=True)
    assert "révoqué" in listing and f"<code>{prefix.group(1)}</code>" not in listing
    with web.space.db.transaction() as session:
        row = session.scalar(select(AppPassword).where(AppPassword.prefix == prefix.group(1)))
        assert row is not None and row.revoked_at is not None


def test_an_operator_gets_no_app_password_form(web: Web) -> None:
    from tests.webmail_helpers import login_operator

    client = web.client()
    login_operator(web, client)
    page = client.get(APP_PAGE).get_data(as_text=True)
    assert "ne se connectent jamais en IMAP/SMTP" in page and 'name="name"' not in page
    refused = post(client, APP_PAGE, {"name": "x", "password": PASSWORD},
                   action=APP_PAGE)
    assert refused.status_code == 400


# ---------------------------------------------------------------------- Mon compte (browser)
@pytest.fixture(scope="module")
def running_demo() -> Iterator[tuple[str, Settings, object]]:
    """``mss run`` (all roles) on a fresh demo data directory, default settings, with a real
    SMTP sink as the smarthost (the one-time codes go there)."""
    import threading

    from aiosmtpd.controller import Controller

    from mss.app import App
    from mss.demo import setup_demo
    from mss.run import run
    from tests.webmail_browser_support import Sink, free_port

    root = open_tempdir("mss-attack-auth-browser-")
    sink, smtp_port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    ports = {name: free_port() for name in ("web_port", "submission_port", "submissions_port",
                                            "relay_port", "imap_port", "imaps_port",
                                            "managesieve_port")}
    settings = Settings.load(data_dir=root / "data", environ={}, demo_password=PASSWORD,
                             listen_address="127.0.0.1", hostname="localhost", metrics_port=0,
                             smarthost=f"127.0.0.1:{smtp_port}", whitelist_url="", **ports)
    assert settings.imap_smtp_web_password is False
    app = App(settings)
    setup_demo(app)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "all"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(60), "mss run did not start"
    yield f"https://localhost:{settings.web_port}", settings, sink
    stop.set()
    thread.join(30)
    controller.stop()
    app.close()
    shutil.rmtree(root, ignore_errors=True)


def _imaps_login(settings: Settings, login: str, password: str) -> bool:
    context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
    conn = imaplib.IMAP4_SSL("localhost", settings.imaps_port, ssl_context=context, timeout=10)
    try:
        conn.login(login, password)
    except imaplib.IMAP4.error:
        conn.shutdown()
        return False
    ok = conn.select("INBOX", readonly=True)[0] == "OK"
    conn.logout()
    return ok


def test_browser_creates_an_app_password_that_imap_accepts(running_demo) -> None:  # type: ignore[no-untyped-def]
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.webmail_browser_support import wait

    url, settings, sink = running_demo
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("chromium absent")
    assert not _imaps_login(settings, MARIE, PASSWORD)  # the web password alone: refused
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = browser.new_context(ignore_https_errors=True, locale="fr-FR")
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(url + "/connexion")
        page.fill("#identifier", MARIE)
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Continuer')")
        page.wait_for_url("**/connexion/code")
        mail = wait(lambda: [m for _rcpt, m in sink.messages])  # the only code sent
        body = mail[-1].get_payload(decode=True).decode()
        page.fill("#code", re.search(r"\b(\d{6})\b", body).group(1))  # type: ignore[union-attr]
        page.click("button:has-text('Valider')")
        page.wait_for_url(lambda address: "/connexion" not in address)
        page.goto(url + "/compte")
        page.click("a:has-text(\"Mots de passe d'application\")")
        page.wait_for_url("**/compte/mots-de-passe-application")
        page.fill("#name", "Thunderbird bureau")
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Créer')")
        secret = page.inner_text("#app-password-secret").strip()
        shown = page.inner_text("#app-password-created")
        assert "plus jamais affiché" in shown and str(settings.imaps_port) in shown
        assert _imaps_login(settings, MARIE, secret)
        page.goto(url + "/compte/mots-de-passe-application")
        assert secret not in page.content()
        row = page.locator("#app-passwords tr", has_text="Thunderbird bureau")
        assert "jamais" in row.inner_text()  # Dovecot's SQL passdb only reads
        context_smtp = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
        with smtplib.SMTP("localhost", settings.submission_port, timeout=30) as smtp:
            smtp.starttls(context=context_smtp)
            assert smtp.login(MARIE, secret)[0] == 235
        page.reload()
        assert "jamais" not in row.inner_text()  # the gateway recorded its use
        row.locator("a:has-text('Révoquer')").click()
        page.click("#confirm-revoke")
        page.wait_for_url("**/compte/mots-de-passe-application")
        assert "révoqué" in page.inner_text("main")
        assert not _imaps_login(settings, MARIE, secret)
        context.close()
        browser.close()


# ---------------------------------------------------------------------- the same on PostgreSQL
@pytest.fixture(scope="module")
def pg_strict(pg_url: str, mailstore_space: TrustSpace) -> Iterator[TrustSpace]:
    """Dovecot's pgsql passdb on a database of its own, default settings."""
    import os

    from mailstore.service import DovecotService
    from tests.mailstore_fixtures import TEST_OPTIONS, build

    name = f"mss_attack_auth_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    settings = mailstore_space.sibling_settings(
        database_url=pg_url.rsplit("/", 1)[0] + "/" + name, imap_smtp_web_password=False)
    shutil.rmtree(settings.pki_dir)
    space = build(settings)
    service = DovecotService(settings, space.db, options=TEST_OPTIONS)
    service.start()
    yield space
    service.stop()
    space.db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
    shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


@pytest.mark.postgres
def test_pgsql_passdb_takes_app_passwords_only(pg_strict: TrustSpace) -> None:
    marie = pg_strict.address("marie")

    def login(user: str, password: str) -> bool:
        conn = pg_strict.imaps()
        try:
            conn.login(user, password)
        except imaplib.IMAP4.error:
            conn.shutdown()
            return False
        conn.logout()
        return True

    with pg_strict.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == marie))
        assert account is not None
        _row, password = app_passwords.create(session, account, "Thunderbird")
    assert not login(marie, PASSWORD)
    assert login(marie, password) and login(pg_strict.address("lps"), PASSWORD)
    creds = master_credentials(pg_strict.settings)
    assert login(creds.login_for(marie), creds.secret)
    with pg_strict.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == marie))
        assert account is not None
        app_passwords.revoke(session, account, "Thunderbird")
    assert not login(marie, password)
