"""Attack on the compose form in a real browser (issue #14, item 6): files over the attachment
limit must not lose the message. Debian's Chromium through Playwright, against ``mss run`` on a
demo data directory (tests/webmail_mail_browser_support.py); screenshots at 390×844
and on a desktop go to tests/artifacts/webmail/attack-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.webmail_mail_browser_support import (
    ARTIFACTS,
    MARIE,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    box_of,
    chromium,
    page_for,
    running_site,
)

pytestmark = SKIP_WITHOUT_CHROMIUM


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("attack")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def test_files_over_the_limit_keep_the_form(site: Site, browser: Any,
                                            tmp_path: Path) -> None:
    big = tmp_path / "scanner.pdf"
    big.write_bytes(b"%PDF-1.4 " + b"z" * site.settings.max_message_size)
    box = box_of(site, MARIE)
    for name, width, height in (("mobile", 390, 844), ("desktop", 1280, 900)):
        page = page_for(browser, site, MARIE, width=width)
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/courrier/{box}/ecrire")
        page.fill("#to", "paul.durand@mss.test")
        page.fill("#subject", "Compte rendu opératoire")
        page.fill("#body", "Texte long à ne pas perdre.")
        page.set_input_files("#attachments", str(big))
        # js/attachments.js refuses the file as it is chosen: never added, never posted.
        alert = page.locator("#att-size[role=alert]")
        alert.wait_for()
        assert "« scanner.pdf »" in alert.inner_text()
        assert "n’a pas été ajouté" in alert.inner_text()
        assert "dépasserait la limite" in alert.inner_text()
        assert page.locator("#att-new li").count() == 0
        assert page.evaluate("document.getElementById('attachments').files.length") == 0
        assert page.url.endswith("/ecrire")
        assert page.input_value("#body") == "Texte long à ne pas perdre."
        assert page.input_value("#subject") == "Compte rendu opératoire"
        alert.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"attack-compose-too-large-{name}.png"))
        page.context.close()


def test_files_over_the_limit_without_scripts_come_back_with_the_text(
        site: Site, browser: Any, tmp_path: Path) -> None:
    """Scripts off: the server reads and drops the files past the limit and brings the form
    back with everything typed and the error (it used to be a 413 page, the text lost)."""
    big = tmp_path / "scanner.pdf"
    big.write_bytes(b"%PDF-1.4 " + b"z" * site.settings.max_message_size)
    crt = site.card(MARIE)
    box = box_of(site, MARIE)
    for name, width, height in (("mobile", 390, 844), ("desktop", 1280, 900)):
        context = browser.new_context(
            ignore_https_errors=True, java_script_enabled=False, locale="fr-FR",
            viewport={"width": width, "height": height},
            client_certificates=[{"origin": site.url, "certPath": str(crt),
                                  "keyPath": str(crt)[:-4] + ".key"}])
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(site.url + "/connexion")
        page.click("#card-login")
        page.wait_for_url("**/courrier/*")  # logins land in the inbox (issue #15 item 3)
        page.goto(f"{site.url}/courrier/{box}/ecrire")
        page.fill("#to", "paul.durand@mss.test")
        page.fill("#subject", "Compte rendu opératoire")
        page.fill("#body", "Texte long à ne pas perdre.")
        page.set_input_files("#attachments", str(big))
        page.click("#send")
        page.wait_for_selector("#attachments-err")
        assert "ils n’ont pas été joints" in page.inner_text("#attachments-err")
        assert page.input_value("#body") == "Texte long à ne pas perdre."
        assert page.input_value("#subject") == "Compte rendu opératoire"
        page.locator("#attachments-err").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"attack-compose-too-large-noscript-{name}.png"))
        context.close()
