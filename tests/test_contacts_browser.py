"""Mes contacts (issue #17) in Debian's Chromium against the whole service: Marie adds Paul
from the directory (twice: one contact), makes a group, puts him in it, and the group comes up
first in the recipient field's suggestions; a message's sender is added from the read view;
on a phone the pages fit the screen. Screenshots
tests/artifacts/webmail/contacts-*.png and docs/screenshots/contacts.png, axe-core on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.webmail_mail_browser_support import (
    MARIE,
    PAUL,
    PHONE,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    box_of,
    chromium,
    expect,
    page_for,
    running_site,
    screen,
    shot,
    submit,
    wait_row,
)
from webmail.contacts.models import Contact

pytestmark = SKIP_WITHOUT_CHROMIUM
DOCS = Path(__file__).parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("contacts")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def test_from_the_directory_to_a_group_in_the_recipient_field(site: Site, browser: Any) -> None:
    page = page_for(browser, site, MARIE, width=1366)
    page.goto(site.url + "/annuaire?nom=durand")
    add = page.get_by_role("button", name="Ajouter aux contacts : Paul Durand")
    # A hurried double click on a busy server: the second click comes while the first
    # request is out (held here). One request leaves (js/submit-once.js), one contact results.
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    page.route("**/contacts/depuis", hold)
    box = add.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    while not held:
        page.wait_for_timeout(20)
    page.mouse.click(x, y)  # the mouse, not the locator: that one waits for the navigation
    page.wait_for_timeout(300)
    sent = len(posts)
    for route in held:
        route.continue_()
    page.unroute("**/contacts/depuis", hold)
    expect(page.locator(".flash", has_text="ajouté à vos contacts")).to_be_visible()
    assert sent == 1, posts
    page.get_by_role("button", name="Ajouter aux contacts : Paul Durand").click()
    expect(page.locator(".flash", has_text="déjà dans vos contacts").first).to_be_visible()
    with site.app.db.transaction() as db:
        assert list(db.scalars(select(Contact.address))) == [PAUL]
    page.get_by_role("link", name="Contacts").first.click()
    page.fill("#g-new", "Pharmacie du quartier")
    page.get_by_role("button", name="Créer").click()
    expect(page.locator("h2#list-title")).to_contain_text("Pharmacie du quartier")
    page.get_by_role("link", name="Tous mes contacts").click()
    page.get_by_role("link", name="Modifier Paul Durand").click()
    page.get_by_label("Pharmacie du quartier").check()
    page.fill("#c-note", "Garde le samedi matin")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator(".contact-row")).to_contain_text("Pharmacie du quartier")
    expect(page.locator(".contact-row")).to_contain_text("Garde le samedi matin")
    page.fill("#c-address", "quelquun@gmail.com")
    page.get_by_role("button", name="Ajouter", exact=True).click()
    expect(page.locator("#c-address-err")).to_contain_text("hors de l'espace de confiance")
    expect(page.locator("#c-address")).to_have_value("quelquun@gmail.com")
    shot(site, page, "carnet")
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "contacts.png"), full_page=False)
    page.goto(site.url + "/courrier/ecrire")
    page.locator("#to").press_sequentially("pharm", delay=40)
    option = page.locator("#to-suggestions li").first
    expect(option).to_contain_text("Groupe « Pharmacie du quartier »")
    option.dispatch_event("mousedown")
    expect(page.locator("#to")).to_have_value(f"{PAUL}, ")
    shot(site, page, "suggestion-groupe")
    page.context.close()


def test_the_address_book_on_a_phone(site: Site, browser: Any) -> None:
    page = screen(browser, site, MARIE, PHONE)
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    page.goto(site.url + "/contacts")
    page.fill("#c-name", "Julie Bernard")
    page.fill("#c-address", "julie.bernard@mss.test")
    page.get_by_role("button", name="Ajouter", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("julie.bernard@mss.test ajouté")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(site, page, "telephone")
    with page.expect_download() as download:
        page.get_by_role("link", name="Exporter (.vcf)").click()
    text = Path(download.value.path()).read_text()
    assert "EMAIL;TYPE=INTERNET:julie.bernard@mss.test" in text
    page.context.close()


def test_the_sender_of_a_message_is_added_from_the_read_view(site: Site, browser: Any) -> None:
    submit(site, "julie.bernard@mss.test", [MARIE], "Planning de garde", "<p>Bonjour</p>")
    page = page_for(browser, site, MARIE, width=1366)
    wait_row(page, site, f"/courrier/{box_of(site, MARIE)}", "Planning de garde")
    page.locator("td.col-subject a", has_text="Planning de garde").click()
    with site.app.db.transaction() as db:  # the phone test may have added Julie already
        db.execute(delete(Contact).where(Contact.address == "julie.bernard@mss.test"))
    page.reload()
    add = page.locator(".msg-fields .add-contact button")
    expect(add).to_have_accessible_name("Ajouter aux contacts : julie.bernard@mss.test")
    url = page.url
    add.click()
    expect(page.locator(".flash")).to_contain_text("julie.bernard@mss.test ajouté")
    assert page.url == url  # back on the message
    expect(add).to_have_count(0)
    shot(site, page, "depuis-un-message")
    page.context.close()
