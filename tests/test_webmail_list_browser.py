"""The message list in Debian's Chromium (Playwright) against ``mss run`` on a demo data
directory (tests/webmail_mail_browser_support.py): sorting by column and by the phone's
control, the filters, the "suivi" stars without reload (and as a plain form without script),
Shift+click ranges and "select all N messages" across pages, drag and drop onto a folder,
the page size, a double click on "Supprimer", the keyboard shortcuts in the list and the read
view, their help dialog (focus kept inside, Escape, axe) and turning them off — on a desktop
(1366x850) and on a phone (390x844), where nothing may be wider than the screen.
Screenshots: tests/artifacts/webmail/list-*.png, one per feature in docs/screenshots/."""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import imap_utf7

from tests.list_support import day, message
from tests.webmail_browser_support import check_a11y
from tests.webmail_mail_browser_support import (
    DESKTOP,
    MARIE,
    PASSWORD,
    PHONE,
    ROWS,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    box_of,
    chromium,
    expect,
    running_site,
    screen,
    shot,
    until,
)

pytestmark = SKIP_WITHOUT_CHROMIUM
DOCS = Path(__file__).parent.parent / "docs" / "screenshots"
SUBJECTS = f"{ROWS} td.col-subject > a"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("list")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _imap(site: Site, who: str = MARIE) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(site.settings.pki_dir / "ca.pem"))
    context.check_hostname = False  # loopback; the chain is still checked
    conn = imaplib.IMAP4_SSL("127.0.0.1", site.settings.imaps_port, ssl_context=context)
    conn.login(who, PASSWORD)
    return conn


def _q(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 §5.1.3), quoted."""
    return '"' + imap_utf7.encode(name).decode("ascii") + '"'


def _folder(site: Site, name: str, items: list[tuple[str, str, str, int]]) -> None:
    """Create ``name`` in Marie's mailbox with (subject, kind, flags, day) messages."""
    conn = _imap(site)
    assert conn.create(_q(name))[0] == "OK"
    name = _q(name)
    for subject, kind, flags, n in items:
        sender = ["Zoé Arnaud <zoe.arnaud@mss.test>", "Bruno Zidane <bruno.zidane@mss.test>",
                  "Alice Moreau <alice.moreau@mss.test>"][n % 3]
        raw = message(subject, sender=sender, to=MARIE, when=day(n), kind=kind,
                      padding=(n * 737) % 9000)
        assert conn.append(name, f"({flags})" if flags else None, None, raw)[0] == "OK"
    conn.logout()


def _uids(site: Site, folder: str, criteria: str = "ALL") -> list[int]:
    conn = _imap(site)
    conn.select(_q(folder), readonly=True)
    found = [int(n) for n in conn.uid("SEARCH", criteria)[1][0].split()]
    conn.logout()
    return found


def _login(browser: Any, site: Site, size: dict[str, int], *, javascript: bool = True) -> Any:
    page = screen(browser, site, MARIE, size, javascript=javascript)
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    return page


def _subjects(page: Any) -> list[str]:
    return [s.strip() for s in page.locator(SUBJECTS).all_inner_texts()]


def _doc(page: Any, name: str) -> None:
    """The feature's screenshot for the README (docs/screenshots/<name>.png)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=False)


def _keys(page: Any, *keys: str) -> None:
    """Press ``keys`` once the page's modules have run (a key pressed while the next page is
    still loading is lost, as it would be for a person)."""
    page.wait_for_load_state("domcontentloaded")
    for key in keys:
        page.keyboard.press(key)


def _view_controls(page: Any) -> None:
    """On a phone the filters and the sort fold behind « Trier et filtrer »: open it."""
    summary = page.locator(".viewfold > summary")
    if summary.is_visible() and not page.locator(".viewfold[open]").count():
        summary.click()


def _fits(page: Any, width: int) -> None:
    """Nothing wider than the screen (the culprits named if something is)."""
    wide = page.evaluate(f"""[...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > {width} + 0.5
                     && !e.closest('details:not([open]) > :not(summary)'))
        .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))
        .slice(0, 8)""")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, wide


def _no_reload_marker(page: Any) -> None:
    page.evaluate("window.__sameDocument = true")


def _same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


# ---------------------------------------------------------------------- desktop
def test_sort_filter_star_and_page_size_on_a_desktop(site: Site, browser: Any) -> None:
    kinds = ["plain", "mixed", "signed", "signed-mixed", "pdf", "inline"]
    _folder(site, "Suivi patients", [
        (f"{['Bilan', 'Compte rendu', 'Ordonnance', 'Analyse'][n % 4]} {n:02d}", kinds[n % 6],
         "\\Flagged" if n % 7 == 0 else ("\\Seen" if n % 2 else ""), n) for n in range(30)])
    box = box_of(site, MARIE)
    page = _login(browser, site, DESKTOP)
    page.goto(site.url + f"/courrier/{box}?dossier=Suivi%20patients")
    assert _subjects(page)[0] == "Compte rendu 29"  # newest first
    page.click("th >> a.sort-link:has-text('Objet')")
    page.wait_for_url("**tri=objet**")
    shown = _subjects(page)
    assert shown == sorted(shown, key=str.casefold)
    expect(page.locator("th[aria-sort='ascending']")).to_contain_text("Objet")
    page.click("th >> a.sort-link:has-text('Objet')")  # again: the other way
    page.wait_for_url("**ordre=decroissant**")
    assert _subjects(page) == sorted(shown, key=str.casefold, reverse=True)
    page.click(".filters a:has-text('Avec pièces jointes')")
    page.wait_for_url("**filtre=pj**")
    assert "tri=objet" in page.url  # the filter keeps the sort
    rows = page.locator(ROWS)
    assert rows.count() == 15
    for i in range(rows.count()):
        expect(rows.nth(i).locator(".marker-att")).to_have_count(1)
    page.click(".filters a:has-text('Suivis')")
    page.wait_for_url("**filtre=suivis**")
    names = ["Bilan", "Compte rendu", "Ordonnance", "Analyse"]
    assert sorted(_subjects(page)) == sorted(f"{names[n % 4]} {n:02d}" for n in range(0, 30, 7))
    # The star of a row, with script: no reload, the flag is in the store.
    page.click(".filters a:has-text('Tous')")
    expect(page.locator(".filters a[aria-current]")).to_have_text("Tous")
    # The new page's module scripts (star.js) run before DOMContentLoaded: a click before
    # that submits the star's form, a reload (CI, under load).
    page.wait_for_load_state("domcontentloaded")
    _no_reload_marker(page)
    row = page.locator(ROWS, has_text="Bilan 04")
    row.locator("button.star").click()
    expect(row.locator("button.star")).to_have_attribute("aria-pressed", "true")
    assert _same_document(page)
    until(lambda: len(_uids(site, "Suivi patients", "FLAGGED")) == 6)  # 5 + "Bilan 04"
    expect(page.locator("#list-status")).to_contain_text("Message suivi.")
    shot(site, page, "tri-filtre-suivi")
    _doc(page, "list-sort-filter-flag")
    row.locator("button.star").click()
    expect(row.locator("button.star")).to_have_attribute("aria-pressed", "false")
    until(lambda: len(_uids(site, "Suivi patients", "FLAGGED")) == 5)
    # Page size: 25, kept.
    page.select_option("#par-page", "25")
    page.click(".page-size button")
    expect(page.locator(".flash-success")).to_contain_text("25 messages par page")
    expect(page.locator(ROWS)).to_have_count(25)
    expect(page.locator(".pager")).to_contain_text("Page 1 sur 2 — 30 messages")
    page.select_option("#par-page", "50")
    page.click(".page-size button")
    # Wait for the answer: closing the context with the POST in flight hung Chromium (CI, loaded).
    expect(page.locator(".flash-success")).to_contain_text("50 messages par page")
    expect(page.locator(ROWS)).to_have_count(30)
    page.context.close()


def test_range_select_all_pages_double_click_and_drag_and_drop(site: Site,
                                                                browser: Any) -> None:
    _folder(site, "Lot", [(f"Lot {n:02d}", "plain", "", n) for n in range(60)])
    conn = _imap(site)
    assert conn.create("Archives")[0] == "OK"
    conn.logout()
    box = box_of(site, MARIE)
    page = _login(browser, site, DESKTOP)
    page.goto(site.url + f"/courrier/{box}?dossier=Lot")
    boxes = page.locator(f"{ROWS} input[name=uid]")
    boxes.nth(1).click()
    boxes.nth(4).click(modifiers=["Shift"])  # Shift+click: the range
    assert [boxes.nth(i).is_checked() for i in range(6)] == [False, True, True, True, True,
                                                             False]
    expect(page.locator("#select-banner")).to_be_hidden()
    page.check("thead input.select-all")
    banner = page.locator("#select-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Les 50 messages de cette page sont sélectionnés.")
    expect(banner).to_contain_text("Sélectionner les 60 messages de « Lot »")
    page.click("#select-everything")
    expect(banner).to_contain_text("Les 60 messages de « Lot » sont sélectionnés.")
    expect(page.locator("#tout")).to_be_checked()
    shot(site, page, "tout-selectionner")
    _doc(page, "list-select-all")
    page.click("#bulk button:has-text('Marquer lu')")
    expect(page.locator(".flash-success")).to_contain_text("60 messages marqués comme lus.")
    assert _uids(site, "Lot", "UNSEEN") == []
    # A double click on "Supprimer" sends one request.
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.locator(f"{ROWS} input[name=uid]").nth(0).check()
    page.locator(f"{ROWS} input[name=uid]").nth(1).check()
    page.dblclick("#bulk button:has-text('Supprimer')")
    expect(page.locator(".flash-success")).to_contain_text("2 messages placés dans la Corbeille.")
    assert sum("/supprimer" in url for url in posts) == 1, posts
    assert len(_uids(site, "Lot")) == 58
    # Drag two ticked rows onto "Archives"; then one row alone (unticked).
    page.locator(f"{ROWS} input[name=uid]").nth(0).check()
    page.locator(f"{ROWS} input[name=uid]").nth(1).check()
    moved = _subjects(page)[:2]
    _no_reload_marker(page)
    page.locator(ROWS).nth(0).locator("td.col-date").drag_to(
        page.locator(".folder-list a[data-folder='Archives']"))
    expect(page.locator("#list-status")).to_contain_text("2 messages déplacés vers « Archives »")
    assert _same_document(page)
    for subject in moved:
        expect(page.locator(SUBJECTS, has_text=subject)).to_have_count(0)
    _doc(page, "list-drag-drop")
    shot(site, page, "glisser-deposer")
    alone = _subjects(page)[3]
    page.locator(ROWS, has_text=alone).locator("td.col-date").drag_to(
        page.locator(".folder-list a[data-folder='Archives']"))
    expect(page.locator("#list-status")).to_contain_text("1 message déplacé vers « Archives »")
    assert len(_uids(site, "Archives")) == 3 and len(_uids(site, "Lot")) == 55
    page.context.close()


# ---------------------------------------------------------------------- shortcuts
def test_keyboard_shortcuts_list_read_view_help_and_turning_them_off(
        site: Site, browser: Any) -> None:
    _folder(site, "Clavier", [(f"Clavier {n}", "plain", "", n) for n in range(5)])
    box = box_of(site, MARIE)
    page = _login(browser, site, DESKTOP)
    page.goto(site.url + f"/courrier/{box}?dossier=Clavier")
    assert _subjects(page) == [f"Clavier {n}" for n in (4, 3, 2, 1, 0)]
    _keys(page, "j")
    _keys(page, "j")
    _keys(page, "k")
    _keys(page, "j")
    expect(page.locator(f"{ROWS}.cursor")).to_contain_text("Clavier 3")
    assert page.evaluate("document.activeElement.textContent") == "Clavier 3"
    _keys(page, "x")
    expect(page.locator(f"{ROWS}.cursor input[name=uid]")).to_be_checked()
    _keys(page, "x")
    # Not while typing, nor with Ctrl.
    _keys(page, "/")
    assert page.evaluate("document.activeElement.id") == "quick-q"
    page.keyboard.type("jjk")
    assert page.input_value("#quick-q") == "jjk"
    expect(page.locator(f"{ROWS}.cursor")).to_contain_text("Clavier 3")
    page.locator(f"{ROWS}.cursor td.col-subject a").focus()
    _keys(page, "Control+j")
    expect(page.locator(f"{ROWS}.cursor")).to_contain_text("Clavier 3")
    _keys(page, "o")
    page.wait_for_selector("#msg-subject")
    assert page.inner_text("#msg-subject") == "Clavier 3"
    _keys(page, "j")  # next in the list's order: older
    expect(page.locator("#msg-subject")).to_have_text("Clavier 2")
    _keys(page, "k")
    expect(page.locator("#msg-subject")).to_have_text("Clavier 3")
    _keys(page, "s")
    expect(page.locator(".msg-actions button.star")).to_have_attribute("aria-pressed", "true")
    _keys(page, "u")
    page.wait_for_selector(ROWS)
    expect(page.locator(f"{ROWS}.cursor")).to_contain_text("Clavier 3")  # where we were
    expect(page.locator(f"{ROWS}.flagged")).to_contain_text("Clavier 3")
    _keys(page, "j")
    _keys(page, "r")
    page.wait_for_selector("#subject")
    assert page.input_value("#subject") == "RE : Clavier 2"
    page.go_back()
    page.wait_for_selector(ROWS)
    _keys(page, "c")
    page.wait_for_selector("#to")
    _keys(page, "j")  # in the compose form's field: typed, not a shortcut
    page.go_back()
    page.wait_for_selector(ROWS)
    # The help: a modal dialog, focus kept inside, Escape closes and gives the focus back.
    page.locator(SUBJECTS).first.focus()
    _keys(page, "?")
    dialog = page.locator("#shortcuts-help")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Répondre à tous")
    for _ in range(6):
        _keys(page, "Tab")
        assert page.evaluate("!!document.activeElement.closest('#shortcuts-help')")
    _keys(page, "Shift+Tab")
    assert page.evaluate("!!document.activeElement.closest('#shortcuts-help')")
    check_a11y(page, "list-aide-raccourcis")
    shot(site, page, "aide-raccourcis", axe=False)
    _doc(page, "shortcuts-help")
    _keys(page, "Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate("document.activeElement.textContent") == "Clavier 4"
    # "#" deletes the row under the cursor (it follows the focus: Clavier 4, then j).
    _keys(page, "j")
    expect(page.locator(f"{ROWS}.cursor")).to_contain_text("Clavier 3")  # before "#" (CI load)
    _keys(page, "#")
    expect(page.locator(".flash-success")).to_contain_text("1 message placé dans la Corbeille.")
    expect(page.locator(SUBJECTS)).to_have_text(["Clavier 4", "Clavier 2", "Clavier 1",
                                                 "Clavier 0"])
    # Turned off from the help: j does nothing any more; back on from Mon compte.
    page.click("#shortcuts-open")
    page.click("#shortcuts-help button:has-text('Désactiver les raccourcis')")
    expect(page.locator(".flash-success")).to_contain_text("Raccourcis clavier désactivés.")
    _keys(page, "j")
    expect(page.locator(f"{ROWS}.cursor")).to_have_count(0)
    expect(page.locator("#shortcuts-open")).to_have_count(0)
    page.goto(site.url + "/compte/preferences")
    page.check("input[name=raccourcis][value=oui]")
    page.click("#list-preferences button:has-text('Enregistrer')")
    expect(page.locator(".flash-success")).to_contain_text("raccourcis clavier activés.")
    page.context.close()


# ---------------------------------------------------------------------- phone
def test_phone_sort_filter_star_and_select_all_fit_the_screen(site: Site,
                                                              browser: Any) -> None:
    _folder(site, "Téléphone", [(f"Résultat d’analyse du patient {n:02d} — hématologie",
                                 "mixed" if n % 3 == 0 else "plain", "", n) for n in range(55)])
    box = box_of(site, MARIE)
    page = _login(browser, site, PHONE)
    page.goto(site.url + f"/courrier/{box}?dossier=T%C3%A9l%C3%A9phone")
    _fits(page, PHONE["width"])
    expect(page.locator(".sorter")).to_be_hidden()  # folded behind one line…
    expect(page.locator(".viewfold > summary")).to_contain_text("Tous · Date, décroissant")
    _view_controls(page)  # … that opens (the column headers are folded on a phone)
    _fits(page, PHONE["width"])
    page.select_option("#tri", "objet")
    page.select_option("#ordre", "croissant")
    page.click(".sorter button")
    page.wait_for_url("**tri=objet**")
    assert _subjects(page)[0].endswith("00 — hématologie")
    _fits(page, PHONE["width"])
    _view_controls(page)
    page.click(".filters a:has-text('Avec pièces jointes')")
    page.wait_for_url("**filtre=pj**")
    expect(page.locator(ROWS)).to_have_count(19)
    _fits(page, PHONE["width"])
    star = page.locator(ROWS).first.locator("button.star")
    box_ = star.bounding_box()  # WCAG 2.2 2.5.8: at least 24 px; 32 here
    assert box_["width"] >= 32 and box_["height"] >= 32
    star.click()
    expect(star).to_have_attribute("aria-pressed", "true")
    _view_controls(page)
    page.click(".filters a:has-text('Tous')")
    expect(page.locator(".viewfold > summary")).to_contain_text("Tous · Objet, croissant")
    page.check(".toolbar input.select-all")  # the header row is folded: the toolbar's box
    expect(page.locator("#select-banner")).to_be_visible()
    page.click("#select-everything")
    expect(page.locator("#select-banner")).to_contain_text("Les 55 messages de « Téléphone »")
    _fits(page, PHONE["width"])
    shot(site, page, "390-tout-selectionner", full_page=False)
    _doc(page, "list-phone")
    page.click("#bulk button:has-text('Suivre')")
    expect(page.locator(".flash-success")).to_contain_text("55 messages marqués comme suivis.")
    assert len(_uids(site, "Téléphone", "FLAGGED")) == 55
    page.context.close()


def test_the_header_box_ticked_before_the_script_loaded_still_means_the_page(
        site: Site, browser: Any) -> None:
    """A slow phone: the person ticks the header box before js/list-select.js has run (held
    here until then). Once it runs, every row of the page is ticked and the banner offers the
    whole folder, as if the script had been there (CI met the opposite under load: the rows
    stayed unticked and the offer hidden)."""
    _folder(site, "Lent", [(f"Lent {n:02d}", "plain", "", n) for n in range(55)])
    box = box_of(site, MARIE)
    page = _login(browser, site, PHONE)
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    page.route("**/js/list-select.js", hold)
    page.goto(site.url + f"/courrier/{box}?dossier=Lent", wait_until="commit")
    page.wait_for_selector(".toolbar input.select-all")
    while not held:
        page.wait_for_timeout(20)
    page.check(".toolbar input.select-all")
    for route in held:
        route.continue_()
    page.unroute("**/js/list-select.js", hold)
    # Without the script the banner's links are already there (its no-script form): wait for
    # the script's own mark, the banner saying "the whole page is ticked".
    for mark in ("enhanced", "is-page"):
        expect(page.locator("#select-banner")).to_have_class(re.compile(rf"\b{mark}\b"))
    expect(page.locator("#select-everything")).to_be_visible()
    rows = page.locator(f"{ROWS} input[name=uid]").count()
    assert 0 < rows < 55
    expect(page.locator(f"{ROWS} input[name=uid]:checked")).to_have_count(rows)
    page.click("#select-everything")
    expect(page.locator("#select-banner")).to_contain_text("Les 55 messages de « Lent »")
    page.context.close()


def test_without_javascript_stars_sorting_and_select_all_still_work(site: Site,
                                                                     browser: Any) -> None:
    _folder(site, "Sans script", [(f"Sans script {n:02d}", "plain", "", n) for n in range(55)])
    box = box_of(site, MARIE)
    page = _login(browser, site, DESKTOP, javascript=False)
    page.goto(site.url + f"/courrier/{box}?dossier=Sans%20script")
    page.click("th >> a.sort-link:has-text('Date')")  # the current column: the other way
    page.wait_for_url("**ordre=croissant**")
    assert _subjects(page)[0] == "Sans script 00"
    page.locator(ROWS).first.locator("button.star").click()
    expect(page.locator(".flash-success")).to_contain_text("Message marqué comme suivi.")
    expect(page.locator(ROWS).first.locator("button.star")).to_have_attribute("aria-pressed",
                                                                              "true")
    assert "ordre=croissant" in page.url
    page.click("#select-everything")  # the page again, every box ticked
    expect(page.locator("#tout")).to_be_checked()
    expect(page.locator("#select-banner")).to_contain_text("Les 55 messages de « Sans script »")
    page.click("#bulk button:has-text('Marquer lu')")
    expect(page.locator(".flash-success")).to_contain_text("55 messages marqués comme lus.")
    assert _uids(site, "Sans script", "UNSEEN") == []
    shot(site, page, "sans-script", axe=False)
    page.context.close()
