"""The webmail in a real browser: Debian's Chromium driven by Playwright, against the webmail
served over HTTPS by ``mss run`` (role webmail) on the demo data directory, with a real SMTP
sink (aiosmtpd) as the smarthost and the file SMS spool. Screenshots of every page go to
tests/artifacts/webmail/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import delete, update

from core.settings import Settings
from mss.app import App
from mss.demo import setup_demo
from mss.run import run
from tests.webmail_browser_support import (
    Sink,
    Site,
    check_a11y,
    free_port,
    stranger_card,
    wait,
)
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, OtpChannel
from webmail.auth import otp

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium absent")
ARTIFACTS = Path(__file__).parent / "artifacts" / "webmail"
PASSWORD = "Demo-Passw0rd"
OPERATOR, OPERATOR_SEED = "operateur@mss.test", "KRUGS4ZANFZSA4TFMNZGK5DTMVRXEZLU"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("webmail-browser") / "data"
    sink, smtp_port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    settings = Settings.load(data_dir=data, environ={}, demo_password=PASSWORD,
                             web_port=free_port(), smarthost=f"127.0.0.1:{smtp_port}",
                             listen_address="127.0.0.1", hostname="localhost")
    app = App(settings)
    setup_demo(app)
    _operator(app)
    # Only this module's numbered shots: the folder is shared with the mail journeys (mail-*)
    # and other modules start this fixture too.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("[0-9][0-9]-*.png"):
        old.unlink()
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "webmail"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(30), "webmail did not start"
    yield Site(f"https://localhost:{settings.web_port}", settings, app, sink)
    stop.set()
    thread.join(20)
    controller.stop()
    app.close()


def _operator(app: App) -> None:
    """The operator account the demo does not create yet (see the report to the lead)."""
    with app.db.transaction() as session:
        # `mss demo` already creates this operator: replace it with a known TOTP seed.
        session.execute(delete(Account).where(Account.login == OPERATOR))
        session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                            password_hash=hash_password(PASSWORD), failed_attempts=0,
                            otp_channel=OtpChannel.TOTP,
                            totp_secret=otp.seal_seed(OPERATOR_SEED, app.settings.secret())))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _context(browser, site: Site, card: str | None = None, **kwargs):  # type: ignore[no-untyped-def]
    certs = []
    if card is not None:
        certs = [{"origin": site.url, "certPath": str(card), "keyPath": str(card)[:-4] + ".key"}]
    context = browser.new_context(ignore_https_errors=True, client_certificates=certs,
                                  locale="fr-FR", viewport={"width": 1280, "height": 800},
                                  **kwargs)
    context.set_default_timeout(10_000)
    return context


def shot(site: Site, page, name: str) -> None:  # type: ignore[no-untyped-def]
    """A screenshot of the page, and axe-core on it: no serious or critical violation."""
    check_a11y(page, name)
    site.shots.append(name)
    page.screenshot(path=str(ARTIFACTS / f"{len(site.shots):02d}-{name}.png"), full_page=True)


INBOX = "**/courrier/*"  # where every login of a professional lands (issue #15 item 3)


def _card(site: Site, who: str) -> Path:
    return site.settings.demo_dir / f"{who}@mss.test.crt"


def password_login(site: Site, page, login: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/connexion")
    page.fill("#identifier", login)
    page.fill("#password", password)
    page.click("button:has-text('Continuer')")


def email_login(site: Site, page, login: str, usual: str,  # type: ignore[no-untyped-def]
                password: str = PASSWORD) -> None:
    before = len(site.mails_to(usual))
    password_login(site, page, login, password)
    page.wait_for_url("**/connexion/code")
    page.fill("#code", site.wait_code(usual, before))
    page.click("button:has-text('Valider')")
    page.wait_for_url(INBOX)


def logout(page) -> None:  # type: ignore[no-untyped-def]
    page.click("button:has-text('Se déconnecter')")
    page.wait_for_url("**/connexion")


def test_card_login_and_card_refusal(site: Site, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site, _card(site, "marie.martin"))
    page = context.new_page()
    page.goto(site.url + "/connexion")
    assert "Carte détectée" in page.inner_text("main")
    shot(site, page, "connexion-carte-detectee")
    page.click("#card-login")
    page.wait_for_url(INBOX)  # issue #15 item 3: the inbox, not Mon compte
    assert "Marie Martin" in page.inner_text("header")
    page.goto(site.url + "/compte")
    shot(site, page, "mon-compte")
    page.goto(site.url + "/inscription")
    page.click("#with-card")
    # Issue #15 item 10: her card has an account: told at once, before any form (the
    # greyed card fields: tests/test_webmail_operator_browser.py, with an unregistered card).
    assert "Un compte existe déjà pour cette carte" in page.inner_text("#account-exists")
    context.close()
    stranger = _context(browser, site, stranger_card(tmp_path))
    page = stranger.new_page()
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    assert page.inner_text("h1") == "Certificat refusé"
    assert "n'a pas été émis par une autorité" in page.inner_text("main")
    shot(site, page, "carte-inconnue")
    stranger.close()


def test_password_and_email_code_then_sms_code(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site)
    page = context.new_page()
    page.goto(site.url + "/")
    shot(site, page, "connexion")
    before = len(site.mails_to("julie.bernard@exemple.fr"))
    password_login(site, page, "julie.bernard@mss.test")
    page.wait_for_url("**/connexion/code")
    shot(site, page, "code-courriel")
    code = site.wait_code("julie.bernard@exemple.fr", before)
    assert "Votre code de connexion" == site.mails_to("julie.bernard@exemple.fr")[-1]["Subject"]
    page.fill("#code", code)
    page.click("button:has-text('Valider')")
    page.wait_for_url(INBOX)
    page.goto(site.url + "/compte")
    page.click("a:has-text('Code de connexion')")
    page.check("input[value=sms]")
    page.fill("#mobile", "06 00 00 00 03")
    page.fill("#password", PASSWORD)  # issue #15 item 1: the password again
    page.click("button:has-text('Enregistrer')")
    page.wait_for_url("**/compte/confirmer")  # the new number is proven before it is used
    shot(site, page, "compte-code-de-connexion")
    page.fill("#code", site.sms_code("06 00 00 00 03"))
    page.click("button:has-text('Confirmer')")
    assert "enregistré" in page.inner_text(".flash")
    logout(page)
    password_login(site, page, "0640000003")  # the ADELI national id
    page.wait_for_url("**/connexion/code")
    assert "par SMS" in page.inner_text("main")
    page.fill("#code", site.sms_code("06 00 00 00 03"))
    page.click("button:has-text('Valider')")
    page.wait_for_url(INBOX)
    context.close()


def test_totp_enrolment_and_login(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site)
    page = context.new_page()
    email_login(site, page, "paul.durand@mss.test", "paul.durand@exemple.fr")
    page.goto(site.url + "/compte/code/application")
    seed = page.inner_text("#totp-secret")
    assert page.locator("img.qr").evaluate("img => img.naturalWidth") > 0
    shot(site, page, "compte-totp")
    page.fill("#code", pyotp.TOTP(seed).now())
    page.fill("#password", PASSWORD)  # issue #15 item 1: the password again
    page.click("button:has-text('Activer')")
    assert "activée" in page.inner_text(".flash")
    logout(page)
    password_login(site, page, "paul.durand@mss.test")
    page.wait_for_url("**/connexion/code")
    assert "application d'authentification" in page.inner_text("main")
    page.fill("#code", pyotp.TOTP(seed).at(time.time() + 30))  # next step: not a replay
    page.click("button:has-text('Valider')")
    page.wait_for_url(INBOX)
    context.close()


def test_lockout_after_repeated_failures(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site)
    page = context.new_page()
    for _ in range(5):
        password_login(site, page, "marie.martin@mss.test", "Mauvais-Passw0rd")
        assert "incorrect" in page.inner_text("#login-error")
    password_login(site, page, "marie.martin@mss.test")
    assert "temporairement bloqué" in page.inner_text("#login-error")
    shot(site, page, "compte-bloque")
    for _ in range(6):
        password_login(site, page, "personne@mss.test", "Mauvais-Passw0rd")
    assert "temporairement bloqué" in page.inner_text("#login-error")
    with site.app.db.transaction() as session:
        session.execute(update(Account).values(failed_attempts=0, locked_until=None))
    context.close()


def _fill_identity(page, **changes: str) -> None:  # type: ignore[no-untyped-def]
    values = {"civility": "Dr", "last_name": "Martin", "first_name": "Marie",
              "email": "marie.bis@exemple.fr", "email_confirm": "marie.bis@exemple.fr",
              "birth_day": "12", "birth_month": "3", "profession": "Pharmacien",
              "id_number": "10000000077", "specialty": "Officine",
              "place_of_practice": "Officine des Halles", "address": "2 rue des Halles",
              "postal_code": "64000", "city": "Pau", "mobile": "06 11 22 33 44"}
    values.update(changes)
    for name, value in values.items():
        if name in ("civility", "birth_day", "birth_month", "profession"):
            page.select_option(f"#{name}", value)
        else:
            page.fill(f"#{name}", value)


def test_registration_wizard_and_operator_validation(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site)
    page = context.new_page()
    page.goto(site.url + "/inscription")
    shot(site, page, "inscription-1-carte")
    page.click("#without-card")
    _fill_identity(page, id_number="1234", mobile="")
    page.click("button:has-text('Continuer')")
    assert "Le numéro RPPS comporte 11 chiffres." in page.inner_text("#id_number-err")
    assert "au moins un numéro" in page.inner_text("#phone-err")
    assert page.input_value("#place_of_practice") == "Officine des Halles"
    shot(site, page, "inscription-2-erreurs")
    page.fill("#id_number", "10000000077")
    page.fill("#mobile", "06 11 22 33 44")
    page.click("button:has-text('Continuer')")
    page.wait_for_url("**/inscription/verification")  # no card: a code proves who asks
    shot(site, page, "inscription-2-verification")
    page.fill("#code", site.wait_code("marie.bis@exemple.fr", 0))
    page.click("#verify")
    page.wait_for_url("**/inscription/identifiant")
    assert page.inner_text("#proposed") == "marie.martin2@mss.test"  # collision suffix
    page.fill("#password", "faible")
    assert page.inner_text("#password-strength") == "Mot de passe trop faible"
    shot(site, page, "inscription-3-mot-de-passe-faible")
    page.fill("#password", "Pharma-Halles1")
    assert "ok" in (page.get_attribute("#password-strength", "class") or "")
    page.fill("#confirm", "Pharma-Halles1")
    shot(site, page, "inscription-3-identifiant")
    page.click("button:has-text('Continuer')")
    page.wait_for_url("**/inscription/adresse")
    page.check("#pharmacy")
    page.fill("#pharmacy_name", "du Centre")
    page.fill("#finess", "640000077")
    page.check("#cgu")
    shot(site, page, "inscription-4-adresse")
    page.click("button:has-text('Créer mon compte')")
    page.wait_for_url("**/inscription/terminee")
    assert "pharma.ducentre2.64000@mss.test" in page.inner_text("main")
    shot(site, page, "inscription-terminee")
    wait(lambda: site.mails_to("marie.bis@exemple.fr"))
    _operator_validates(site, page, "marie.martin2@mss.test")
    assert "ouverte" in wait(lambda: len(site.mails_to("marie.bis@exemple.fr")) > 2
                              and site.mails_to("marie.bis@exemple.fr")[-1]["Subject"])
    email_login(site, page, "marie.martin2@mss.test", "marie.bis@exemple.fr", "Pharma-Halles1")
    page.goto(site.url + "/organisations")
    assert "Pharmacie du Centre" in page.inner_text("main")
    context.close()


def _operator_validates(site: Site, page, address: str) -> None:  # type: ignore[no-untyped-def]
    password_login(site, page, OPERATOR)
    page.wait_for_url("**/connexion/code")
    page.fill("#code", pyotp.TOTP(OPERATOR_SEED).now())
    page.click("button:has-text('Valider')")
    page.goto(site.url + "/operateur/inscriptions")
    assert address in page.inner_text("main")
    shot(site, page, "operateur-inscriptions")
    page.click("button:has-text('Valider et publier')")
    assert "validée et publiée" in page.inner_text(".flash")
    logout(page)


def test_liste_rouge_and_collaborator(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    marie_ctx = _context(browser, site, _card(site, "marie.martin"))
    marie = marie_ctx.new_page()
    marie.goto(site.url + "/connexion")
    marie.click("#card-login")
    marie.goto(site.url + "/compte/preferences")
    marie.check("#liste_rouge")
    marie.click("button:has-text('Enregistrer mes préférences')")
    shot(site, marie, "compte-preferences")
    paul_ctx = _context(browser, site, _card(site, "paul.durand"))
    paul = paul_ctx.new_page()
    paul.goto(site.url + "/connexion")
    paul.click("#card-login")
    paul.click("a:has-text('Boîtes organisationnelles')")
    shot(site, paul, "organisations")
    paul.click("a:has-text('Pharmacie du Centre')")
    paul.fill("#q", "Martin")
    paul.click("button:has-text('Rechercher')")
    assert "marie.martin@mss.test" not in paul.inner_text("main")  # liste rouge
    marie.uncheck("#liste_rouge")
    marie.click("button:has-text('Enregistrer mes préférences')")
    paul.click("button:has-text('Rechercher')")
    row = paul.locator("tr", has_text="marie.martin@mss.test")
    row.locator("select").select_option("manager")
    shot(site, paul, "organisation-recherche")
    row.locator("button:has-text('Ajouter')").click()
    assert "Marie Martin est maintenant collaborateur (Gestionnaire)" in paul.inner_text(".flash")
    assert paul.locator("tr", has_text="Marie Martin").count() == 1
    shot(site, paul, "organisation-collaborateurs")
    marie.goto(site.url + "/compte/sessions")
    shot(site, marie, "compte-sessions")
    marie_ctx.close()
    paul_ctx.close()


def test_phone_width_pages(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = _context(browser, site)
    context.close()
    phone = browser.new_context(ignore_https_errors=True, locale="fr-FR",
                                viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    for path, name in (("/connexion", "mobile-connexion"), ("/inscription", "mobile-inscription")):
        page.goto(site.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(site, page, name)
    with page.expect_navigation():  # a form submit: evaluating mid-navigation sees no document
        page.click("#without-card")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(site, page, "mobile-inscription-identite")
    phone.close()
