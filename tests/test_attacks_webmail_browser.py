"""Attack on the compose form in a real browser (issue #14, item 6): files over the attachment
limit must not lose the message. Debian's Chromium through Playwright, against ``mss run`` on a
demo data directory (the site of ``tests.test_webmail_mail_browser``); screenshots at 390×844
and on a desktop go to tests/artifacts/webmail/attack-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_webmail_mail_browser import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    MARIE,
    Site,
    _box,
    _page,
    browser,
    pytestmark,
    site,
)


def test_files_over_the_limit_keep_the_form(site: Site, browser: Any,  # noqa: F811
                                            tmp_path: Path) -> None:
    big = tmp_path / "scanner.pdf"
    big.write_bytes(b"%PDF-1.4 " + b"z" * site.settings.max_message_size)
    box = _box(site, MARIE)
    for name, width, height in (("mobile", 390, 844), ("desktop", 1280, 900)):
        page = _page(browser, site, MARIE, width=width)
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/courrier/{box}/ecrire")
        page.fill("#to", "paul.durand@mss.test")
        page.fill("#subject", "Compte rendu opératoire")
        page.fill("#body", "Texte long à ne pas perdre.")
        page.set_input_files("#attachments", str(big))
        page.click("#send")
        alert = page.locator("#att-size[role=alert]")
        alert.wait_for()
        assert "dépassent la limite" in alert.inner_text()
        assert page.url.endswith("/ecrire")
        assert page.input_value("#body") == "Texte long à ne pas perdre."
        assert page.input_value("#subject") == "Compte rendu opératoire"
        alert.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"attack-compose-too-large-{name}.png"))
        page.context.close()
