"""The "Pairs" page (issue #20, the trust space's health) in Debian's Chromium, served by
``mss run --role webmail`` (which hands the page its checking function) on our operator of
tests/peer_probe_support.py, whose peers' relays really run on loopback: desktop 1366×850 and
phone 390×844, axe-core on each, nothing wider than the screen, and "Vérifier maintenant"
probing one peer for real. Screenshots: tests/artifacts/peers-*.png."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from core.db import utcnow
from gateway import probe
from mss.run import run
from tests.peer_probe_support import Scene, scene_fixture, seed_traffic
from tests.webmail_browser_support import check_a11y, free_port
from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, OtpChannel
from webmail.auth import otp

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium absent")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP, PHONE = {"width": 1366, "height": 850}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Scene, str]]:
    scenes = scene_fixture(tmp_path_factory.mktemp("pairs-navigateur"), web_port=free_port(),
                           listen_address="127.0.0.1")
    scene = next(scenes)
    db = scene.app.db
    with db.transaction() as session:
        session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                            password_hash=hash_password(PASSWORD), failed_attempts=0,
                            otp_channel=OtpChannel.TOTP,
                            totp_secret=otp.seal_seed(OPERATOR_SEED, scene.settings.secret())))
    seed_traffic(db, "sain.test", scene.relays["ok"].dn, utcnow())
    probe.check(db, scene.settings, requested_by="test", actor="test", timeout=2)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(scene.app, "webmail"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    try:
        assert ready.wait(30), "webmail did not start"
        yield scene, f"https://localhost:{scene.settings.web_port}"
    finally:
        stop.set()
        thread.join(20)
        scenes.close()  # the relays stop, the operator's database closes


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _logged_in(chromium: Any, site: tuple[Scene, str], viewport: dict[str, int]) -> Any:
    import pyotp

    from webmail.models import TotpUse

    scene, url = site
    context = chromium.new_context(ignore_https_errors=True, locale="fr-FR", viewport=viewport,
                                   is_mobile=viewport is PHONE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    with scene.app.db.transaction() as session:
        session.execute(delete(TotpUse))  # the replay guard: this module logs in twice
    page.goto(url + "/connexion")
    page.fill("#identifier", OPERATOR)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Continuer')")
    page.wait_for_url("**/connexion/code")
    page.fill("#code", pyotp.TOTP(OPERATOR_SEED).now())
    page.click("button:has-text('Valider')")
    page.wait_for_url("**/operateur/**")
    page.goto(url + "/operateur/pairs")
    return page


def _shot(page: Any, name: str) -> None:
    """axe-core, nothing wider than the screen, then a full-page screenshot."""
    check_a11y(page, f"peers-{name}")
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, name
    page.screenshot(path=str(ARTIFACTS / f"peers-{name}.png"), full_page=True)


def test_the_page_on_a_desktop(chromium: Any, site: tuple[Scene, str]) -> None:
    page = _logged_in(chromium, site, DESKTOP)
    assert page.get_attribute("nav.ops-tabs a:has-text('Pairs')", "aria-current") == "page"
    summary = page.inner_text(".peers-summary")
    assert "4 en bon état" in summary and "8 en échec" in summary
    cards = page.locator(".peer-list > li")
    assert cards.count() == 12
    assert "En échec" in cards.first.inner_text()  # failures first
    mismatch = page.inner_text("#pair-autre-dn\\.test")
    assert "NON CONFORME" in mismatch and "CN=relais.ailleurs.test,O=Pair Santé" in mismatch
    expired = page.inner_text("#pair-expire\\.test")
    assert "certificate has expired" in expired and "expiré depuis 2 jours" in expired
    assert page.locator("#pair-expire\\.test .badge-red").count() >= 1
    assert page.locator("#pair-bientot\\.test .badge-amber").count() == 1
    healthy = page.inner_text("#pair-sain\\.test")
    assert "DN conforme" in healthy and "1 envoyé(s)" in healthy and "2 reçu(s)" in healthy
    assert "message en attente depuis 3 h" in healthy
    assert "mss cert renew operator" in page.inner_text("#ours-title + table")
    _shot(page, "desktop")
    page.click("#pair-ferme\\.test button:has-text('Vérifier maintenant')")
    page.wait_for_selector(".flash")
    flash = page.inner_text(".flash")
    assert "1 pair(s), 0 en bon état, 1 en échec" in flash and "connexion refusée" in flash
    assert page.url.endswith("#pair-ferme.test")
    assert "2 échecs de suite" in page.inner_text("#pair-ferme\\.test")
    _shot(page, "verifie-desktop")
    page.context.close()


def test_the_page_on_a_phone(chromium: Any, site: tuple[Scene, str]) -> None:
    page = _logged_in(chromium, site, PHONE)
    assert "Pairs de l’espace de confiance" in page.inner_text("h1")
    # The facts of a peer are one column; the certificates' table is one block per row.
    facts = page.locator("#pair-sain\\.test .peer-facts")
    assert facts.evaluate("e => getComputedStyle(e).gridTemplateColumns.split(' ').length") == 1
    assert page.locator("#ours-title + table thead").evaluate(
        "e => e.getBoundingClientRect().width") <= 1
    button = page.locator("#pair-sain\\.test button").bounding_box()
    assert button is not None and button["height"] >= 44 and button["width"] <= 390
    _shot(page, "telephone")
    page.context.close()
