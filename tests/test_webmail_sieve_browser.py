"""« Réponse automatique » and « Filtres » in a real browser (issue #17): Debian's Chromium on
``mss run`` (Dovecot with Pigeonhole and ManageSieve, the gateway, the webmail) over a demo
data directory, desktop (1366x850) and phone (390x844), axe-core on every page.
Screenshots: tests/artifacts/webmail/regles-*.png; docs/screenshots/autoreply.png and
docs/screenshots/filters.png for the README.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.webmail_mail_browser_support import (
    DESKTOP,
    JULIE,
    MARIE,
    ORG,
    PAUL,
    PHONE,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    box_of,
    chromium,
    expect,
    running_site,
    screen,
    shot,
    submit,
    wait_row,
)

pytestmark = SKIP_WITHOUT_CHROMIUM
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("regles")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _in(page: Any, site: Site, who: str) -> Any:
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    return page


def _doc(page: Any, name: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=False)


def _fits(page: Any, width: int) -> None:
    wide = page.evaluate("""(w) => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > w + 1)
        .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 8)""", width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, wide


def _today() -> datetime:
    return datetime.now(ZoneInfo("Europe/Paris"))


def test_marie_sets_her_out_of_office_and_paul_gets_one_reply(site: Site, browser: Any) -> None:
    page = _in(screen(browser, site, MARIE, DESKTOP), site, MARIE)
    page.get_by_role("link", name="Réponse automatique").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Réponse automatique")
    end = (_today() + timedelta(days=7)).date()
    page.get_by_label("Répondre automatiquement").check()
    page.get_by_label("Du", exact=True).fill(f"{_today():%d/%m/%Y}")
    page.get_by_label("Au (inclus)").fill(f"{end:%d/%m/%Y}")
    page.get_by_label("Objet", exact=True).fill("Absente – congés")
    page.get_by_label("Message", exact=True).fill("Bonjour,\nJe suis absente jusqu’au "
                                      f"{end:%d/%m/%Y}.\nEn cas d’urgence : le 15.")
    shot(site, page, "reponse-automatique-formulaire")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator(".flash-success")).to_contain_text("Réponse automatique activée")
    expect(page.locator("#autoreply-banner")).to_contain_text(
        f"Réponse automatique active jusqu’au {end:%d/%m/%Y}")
    _doc(page, "autoreply")
    page.goto(site.url + f"/courrier/{box_of(site, MARIE)}")
    expect(page.locator("#autoreply-banner")).to_contain_text(f"{end:%d/%m/%Y}")
    shot(site, page, "bandeau-boite")
    # Paul writes twice; his inbox shows one automatic reply.
    for n in (1, 2):
        submit(site, PAUL, [MARIE], f"Ordonnance {n}", f"<p>Message {n}</p>")
    paul = _in(screen(browser, site, PAUL, DESKTOP), site, PAUL)
    wait_row(paul, site, f"/courrier/{box_of(site, PAUL)}", "Absente – congés", timeout=40)
    time.sleep(3)  # the second message has been delivered and not answered
    paul.goto(site.url + f"/courrier/{box_of(site, PAUL)}")
    expect(paul.locator("td.col-subject a", has_text="Absente – congés")).to_have_count(1)
    shot(site, paul, "reponse-recue")
    # Off again: the banner goes.
    page.goto(site.url + f"/courrier/{box_of(site, MARIE)}/reponse-automatique")
    page.get_by_label("Répondre automatiquement").uncheck()
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator(".flash-success")).to_contain_text("désactivée")
    expect(page.locator("#autoreply-banner")).to_have_count(0)


def test_filters_on_a_phone(site: Site, browser: Any) -> None:
    page = _in(screen(browser, site, MARIE, PHONE), site, MARIE)
    box = box_of(site, MARIE)
    page.goto(site.url + f"/courrier/{box}/dossiers")
    page.get_by_label("Nom du dossier").fill("Laboratoire")
    page.get_by_role("button", name="Créer").click()
    page.goto(site.url + f"/courrier/{box}/filtres")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Filtres")
    for field, needle, action, folder in (("l’objet", "résultats", "Déplacer vers le dossier",
                                           "Laboratoire"),
                                          ("l’expéditeur", "paul", "Marquer d’un drapeau",
                                           None)):
        page.get_by_label("Si", exact=True).select_option(label=field)
        page.get_by_label("contient").fill(needle)
        page.get_by_label("alors").select_option(label=action)
        if folder:
            page.get_by_label("Dossier (pour « Déplacer »)").select_option(label=folder)
        page.get_by_role("button", name="Ajouter le filtre").click()
        expect(page.locator(".flash-success")).to_contain_text("Filtre ajouté")
    items = page.locator(".rules-item")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("déplacer vers « Laboratoire »")
    _fits(page, PHONE["width"])
    shot(site, page, "filtres-telephone")
    page.get_by_role("button", name="Monter le filtre 2").click()
    expect(items.nth(0)).to_contain_text("marquer d’un drapeau")
    page.get_by_role("link", name="Modifier le filtre 2").click()
    expect(page.get_by_label("contient")).to_have_value("résultats")
    page.get_by_label("contient").fill("résultat")
    page.get_by_role("button", name="Enregistrer le filtre").click()
    expect(items.nth(1)).to_contain_text("« résultat »")
    submit(site, PAUL, [MARIE], "Vos résultats d’analyse", "<p>Voir pièce jointe.</p>")
    wait_row(page, site, f"/courrier/{box}?dossier=Laboratoire", "Vos résultats d’analyse",
             timeout=40)
    shot(site, page, "filtre-applique-telephone")
    desktop = _in(screen(browser, site, MARIE, DESKTOP), site, MARIE)
    desktop.goto(site.url + f"/courrier/{box}/filtres")
    _doc(desktop, "filters")
    page.goto(site.url + f"/courrier/{box}/filtres")
    page.get_by_role("button", name="Supprimer le filtre 1").click()
    expect(items).to_have_count(1)


def test_the_pharmacy_by_its_administrator_on_a_phone(site: Site, browser: Any) -> None:
    org = box_of(site, ORG)
    paul = _in(screen(browser, site, PAUL, PHONE), site, PAUL)
    paul.goto(site.url + f"/courrier/{org}/reponse-automatique")
    paul.get_by_label("Répondre automatiquement").check()
    paul.get_by_label("Objet", exact=True).fill("Pharmacie fermée")
    paul.get_by_label("Message", exact=True).fill("Fermée pour inventaire ; réouverture lundi.")
    paul.get_by_role("button", name="Enregistrer").click()
    expect(paul.locator("#autoreply-banner")).to_contain_text("Réponse automatique active")
    _fits(paul, PHONE["width"])
    shot(site, paul, "pharmacie-telephone")
    julie = _in(screen(browser, site, JULIE, PHONE), site, JULIE)
    julie.goto(site.url + f"/courrier/{org}/reponse-automatique")
    expect(julie.get_by_role("heading", level=1)).to_contain_text("Accès refusé")
    shot(site, julie, "pharmacie-refus", axe=False)


def test_without_javascript_the_forms_still_work(site: Site, browser: Any) -> None:
    page = _in(screen(browser, site, JULIE, DESKTOP, javascript=False), site, JULIE)
    box = box_of(site, JULIE)
    page.goto(site.url + f"/courrier/{box}/reponse-automatique")
    page.get_by_label("Répondre automatiquement").check()
    page.get_by_label("Au (inclus)").fill("02/01/2000")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator("#fin-err")).to_contain_text("déjà passée")
    expect(page.get_by_label("Au (inclus)")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#message-err")).to_contain_text("Écrivez le message")
    page.get_by_label("Au (inclus)").fill("")
    page.get_by_label("Message", exact=True).fill("Absente cette semaine.")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator(".flash-success")).to_contain_text("activée")
    shot(site, page, "sans-javascript", axe=False)
