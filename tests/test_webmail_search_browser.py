"""Searching every folder at once, in Debian's Chromium (Playwright) against ``mss run`` on a
demo data directory (tests/webmail_mail_browser_support.py), on a desktop (1366x850) and on a
phone (390x844): a word typed in the list's search box, then "Dans tous les dossiers": one
list with each message's folder, a word found only in an attached PDF, a query refused with
its French reason, and nothing wider than the phone's screen. axe-core on every page shot.
Screenshots: tests/artifacts/webmail/search-*.png and docs/screenshots/search.png."""

from __future__ import annotations

import imaplib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.search_support import message, pdf
from tests.webmail_mail_browser_support import (
    DESKTOP,
    MARIE,
    PASSWORD,
    PHONE,
    ROWS,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    chromium,
    expect,
    running_site,
    screen,
    shot,
)

pytestmark = SKIP_WITHOUT_CHROMIUM
DOCS = Path(__file__).parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("search")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _word() -> str:
    return "bilan" + "".join(chr(ord("a") + b % 26) for b in os.urandom(6))


def _put(site: Site, items: list[tuple[str, bytes]]) -> None:
    """APPEND (folder, message) into Marie's mailbox, creating the folders."""
    context = ssl.create_default_context(cafile=str(site.settings.pki_dir / "ca.pem"))
    context.check_hostname = False  # loopback; the chain is still checked
    conn = imaplib.IMAP4_SSL("127.0.0.1", site.settings.imaps_port, ssl_context=context)
    conn.login(MARIE, PASSWORD)
    for folder, raw in items:
        conn.create(f'"{folder}"')  # NO when it exists: fine
        assert conn.append(f'"{folder}"', "(\\Seen)", None, raw)[0] == "OK"
    conn.logout()


def _mailbox(site: Site, word: str) -> None:
    report = pdf(["Compte rendu d'échographie", f"Conclusion : {word}pdf normal"])
    _put(site, [
        ("INBOX", message("Échographie de Mme Roux", f"Résultat {word} ci-joint.",
                          sender="Dr Paul Durand <paul.durand@mss.test>", to=MARIE,
                          date="Tue, 24 Nov 2026 09:15:00 +0100",
                          attachment=("echo.pdf", report))),
        ("Sent", message("Re: suivi de Mme Roux", f"Merci, le {word} est noté.",
                         sender=f"Marie Martin <{MARIE}>", to="paul.durand@mss.test",
                         date="Wed, 25 Nov 2026 10:30:00 +0100")),
        ("Dossiers patients", message("Mme Roux, dossier", f"Synthèse {word} pour le dossier.",
                                      sender="Dr Julie Bernard <julie.bernard@mss.test>",
                                      to=MARIE, date="Mon, 23 Nov 2026 08:00:00 +0100")),
    ])


def _login(browser: Any, site: Site, size: dict[str, int]) -> Any:
    page = screen(browser, site, MARIE, size)
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    return page


def _everywhere(page: Any, word: str) -> None:
    """From the inbox: the list's search box, then every folder."""
    page.fill("#quick-q", word)
    page.press("#quick-q", "Enter")
    page.wait_for_url("**/recherche?**")
    expect(page.locator(".search-results h2")).to_have_text("1 résultat")
    page.check("input[name=portee][value=tous]")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_url("**portee=tous**")


def _fits(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "wider than the screen"


def test_search_every_folder_on_a_desktop(site: Site, browser: Any) -> None:
    word = _word()
    _mailbox(site, word)
    page = _login(browser, site, DESKTOP)
    _everywhere(page, word)
    expect(page.locator(".search-results h2")).to_have_text("3 résultats dans 3 dossiers")
    rows = page.locator(ROWS)
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Re: suivi de Mme Roux")  # newest first
    expect(rows.nth(0)).to_contain_text("Messages envoyés")
    expect(rows.nth(1)).to_contain_text("Boîte de réception")
    expect(rows.nth(2)).to_contain_text("Dossiers patients")
    shot(site, page, "tous-les-dossiers")
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "search.png"), full_page=False)
    page.fill("#s-q", f"{word}pdf")  # only in the attached PDF's text
    page.click("form[role=search] button[type=submit]")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS).first).to_contain_text("Échographie de Mme Roux")
    page.locator(ROWS).first.locator("td.col-subject a").click()
    expect(page.locator("body")).to_contain_text("echo.pdf")


def test_search_on_a_phone_and_a_refused_query(site: Site, browser: Any) -> None:
    word = _word()
    _mailbox(site, word)
    page = _login(browser, site, PHONE)
    _everywhere(page, word.upper())  # case does not matter
    expect(page.locator(".search-results h2")).to_have_text("3 résultats dans 3 dossiers")
    _fits(page, PHONE["width"])
    shot(site, page, "telephone")
    page.fill("#s-q", "le de la")
    page.click("form[role=search] button[type=submit]")
    expect(page.locator("#search-error")).to_contain_text("au moins un mot de 3")
    expect(page.locator("#s-q")).to_have_attribute("aria-invalid", "true")
    _fits(page, PHONE["width"])
    shot(site, page, "refusee")
