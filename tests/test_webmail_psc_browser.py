"""Se connecter avec Pro Santé Connect (issue #16) in Debian's Chromium, against the whole
service (``mss run``, role ``all``) with the PSC stand-in started by ``mss run`` as in the demo:
Marie's log-in from the log-in page through the provider's sign-in and consent pages to her
Boîte de réception; « Se déconnecter » ending the provider's session too (the next PSC log-in
asks to sign in again); Léa Roux, whom PSC knows and the directory does not, offered the
registration with her identity read-only. Screenshots (desktop, and 390x844 where the page
changes on a phone) in tests/artifacts/webmail/auth/psc-*.png, axe-core on each of our pages (the
provider's pages are the stand-in's, not ours: shot without axe).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mss.psc_standin import NEWCOMER
from tests.webmail_mail_browser_support import (
    PASSWORD,
    PHONE,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    chromium,
    expect,
    running_site,
    shot,
)

pytestmark = SKIP_WITHOUT_CHROMIUM
DESKTOP_SIZE = {"width": 1280, "height": 900}
MARIE_ID = "810000000001"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("psc", psc=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _page(browser: Any, viewport: dict[str, int] = DESKTOP_SIZE) -> Any:
    """A new browser (no card, no cookie) at ``viewport``."""
    context = browser.new_context(ignore_https_errors=True, locale="fr-FR", viewport=viewport)
    context.set_default_timeout(30_000)
    return context.new_page()


def _on_provider(page: Any, site: Site) -> None:
    page.wait_for_url(f"{site.settings.oidc_issuer}/**")


def _sign_in(page: Any, site: Site, national_id: str, name: str = "") -> None:
    """The provider's sign-in page, then « Autoriser » on its consent page."""
    _on_provider(page, site)
    expect(page.locator("h1")).to_have_text("Se connecter avec Pro Santé Connect")
    page.fill("#national_id", national_id)
    page.fill("#code", PASSWORD)
    if name:
        shot(site, page, name, axe=False)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.locator("h1")).to_have_text("Autoriser l'accès")
    page.get_by_role("button", name="Autoriser").click()


def _fits(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= \
        page.viewport_size["width"]


def test_marie_logs_in_and_out_with_psc(site: Site, browser: Any) -> None:
    page = _page(browser)
    page.goto(site.url + "/connexion")
    headings = page.locator("main h2").all_inner_texts()
    assert headings[:3] == ["Avec Pro Santé Connect", "Avec ma carte CPS",
                            "Avec mon identifiant et mon mot de passe"]
    shot(site, page, "connexion")
    page.click("#psc-login")
    _sign_in(page, site, MARIE_ID, "fournisseur-identification")
    page.wait_for_url("**/courrier/*")
    expect(page.locator("h1")).to_contain_text("Boîte de réception")
    expect(page.locator(".username")).to_have_text("Marie Martin")
    shot(site, page, "boite-de-reception")
    # « Se déconnecter »: our session, then the provider's (its page asks to confirm).
    page.get_by_role("button", name="Se déconnecter").click()
    _on_provider(page, site)
    shot(site, page, "fournisseur-deconnexion", axe=False)
    page.get_by_role("button", name="Se déconnecter").click()
    page.wait_for_url(f"{site.url}/connexion**")
    expect(page.locator(".flash-success")).to_have_text("Vous êtes déconnecté.")
    shot(site, page, "deconnecte")
    # The provider's session has ended: a new PSC log-in asks to sign in again.
    page.click("#psc-login")
    _on_provider(page, site)
    expect(page.locator("#national_id")).to_be_visible()
    page.context.close()


def test_started_under_another_host_name_the_sign_in_still_works(site: Site,
                                                                  browser: Any) -> None:
    """The address a person types (127.0.0.1) is not the one the provider sends back to
    (localhost): the log-in page moves to the public address first, or the session with the
    sign-in's state would stay behind and the return be refused."""
    page = _page(browser)
    assert "//localhost:" in site.url
    page.goto(site.url.replace("//localhost:", "//127.0.0.1:") + "/connexion")
    page.wait_for_url(f"{site.url}/connexion")
    page.click("#psc-login")
    _sign_in(page, site, MARIE_ID)
    page.wait_for_url("**/courrier/*")
    expect(page.locator(".username")).to_have_text("Marie Martin")
    page.context.close()


def test_without_logout_psc_signs_in_at_once(site: Site, browser: Any) -> None:
    """The other half of the test above: while the provider's session lives (our session
    closed by its timeout, say), « Se connecter avec Pro Santé Connect » needs no sign-in."""
    page = _page(browser)
    page.goto(site.url + "/connexion")
    page.click("#psc-login")
    _sign_in(page, site, MARIE_ID)
    page.wait_for_url("**/courrier/*")
    page.context.clear_cookies(domain="localhost", name="mss_session")
    page.goto(site.url + "/connexion")
    page.click("#psc-login")
    page.wait_for_url("**/courrier/*")
    expect(page.locator(".username")).to_have_text("Marie Martin")
    page.context.close()


def test_phone_login_page_and_refusal(site: Site, browser: Any) -> None:
    page = _page(browser, PHONE)
    page.goto(site.url + "/connexion")
    _fits(page)
    psc = page.locator("#psc-login").bounding_box()
    assert psc is not None and psc["y"] + psc["height"] <= PHONE["height"]  # first screen
    shot(site, page, "390-connexion", full_page=False)
    page.click("#psc-login")
    _on_provider(page, site)
    page.fill("#national_id", MARIE_ID)
    page.fill("#code", PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    shot(site, page, "390-fournisseur-consentement", axe=False)
    page.get_by_role("button", name="Refuser").click()
    page.wait_for_url("**/connexion/psc/retour**")
    expect(page.locator("h1")).to_have_text("Connexion avec Pro Santé Connect refusée")
    expect(page.locator(".lead")).to_contain_text("Vous avez refusé")
    _fits(page)
    shot(site, page, "390-refus")
    page.context.close()


def test_newcomer_gets_registration_with_her_identity(site: Site, browser: Any) -> None:
    page = _page(browser, PHONE)
    page.goto(site.url + "/connexion")
    page.click("#psc-login")
    _sign_in(page, site, NEWCOMER["national_id"])
    page.wait_for_url("**/connexion/psc/retour**")
    expect(page.locator(".lead")).to_contain_text("Léa Roux")
    _fits(page)
    shot(site, page, "390-inconnue")
    page.click("#register-with-psc")
    page.wait_for_url("**/inscription/identite")
    expect(page.locator("#card-note")).to_contain_text("transmis par Pro Santé Connect")
    for field, value in (("#last_name", "Roux"), ("#first_name", "Léa"),
                         ("#profession", "Médecin"), ("#id_number", "10000000099")):
        expect(page.locator(field)).to_have_value(value)
        expect(page.locator(field)).to_have_attribute("readonly", "")
    page.locator("#last_name").press_sequentially("x")  # read-only: typing changes nothing
    expect(page.locator("#last_name")).to_have_value("Roux")
    expect(page.locator("#civility")).to_have_value("Dr")
    _fits(page)
    shot(site, page, "390-inscription-identite", full_page=False)
    page.set_viewport_size(DESKTOP_SIZE)
    shot(site, page, "inscription-identite")
    page.context.close()


def test_registration_offers_psc_first(site: Site, browser: Any) -> None:
    page = _page(browser)
    page.goto(site.url + "/inscription")
    choices = page.locator(".choice strong").all_inner_texts()
    assert choices[0] == "Avec Pro Santé Connect"
    shot(site, page, "inscription")
    page.set_viewport_size(PHONE)
    _fits(page)
    shot(site, page, "390-inscription", full_page=False)
    page.set_viewport_size(DESKTOP_SIZE)
    page.click("#with-psc")
    _sign_in(page, site, NEWCOMER["national_id"])
    page.wait_for_url("**/inscription/identite")
    expect(page.locator("#id_number")).to_have_value("10000000099")
    page.context.close()
