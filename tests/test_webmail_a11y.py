"""Keyboard focus is visible (issue #15 item 12; WCAG 2.2 AA 2.4.7 Focus Visible, 1.4.11
Non-text Contrast, 2.4.11 Focus Not Obscured): Debian's Chromium tabs through the top bar, on a
desktop and on a phone, and through a form; each focused element must draw a solid outline of
at least 2 px whose colour contrasts at least 3:1 with what is behind it. axe-core (no serious
or critical violation) runs on each page seen. Screenshots of the focused states go to
tests/artifacts/a11y/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_webmail_browser import _card, _context, browser, site  # noqa: F401 (fixtures)
from tests.webmail_browser_support import Site, check_a11y

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="chromium absent")
ARTIFACTS = Path(__file__).parent / "artifacts" / "a11y"

# The focused element's outline, the colour behind it (first opaque background up the tree)
# and whether it lies inside the window (not hidden under something fixed, 2.4.11).
FOCUS = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  // The ring is drawn outside the element (outline-offset): what is behind it is the first
  // opaque background among its ancestors.
  let node = el.parentElement, behind = [255, 255, 255];
  while (node) {
    const bg = rgb(getComputedStyle(node).backgroundColor);
    if (bg.length === 3 || bg[3] > 0.5) { behind = bg; break; }
    node = node.parentElement;
  }
  const box = el.getBoundingClientRect();
  const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  const label = el.innerText || el.value || el.getAttribute('aria-label') || '';
  return {tag: el.tagName, text: label.trim().slice(0, 40), style: style.outlineStyle,
          width: parseFloat(style.outlineWidth), color: rgb(style.outlineColor), behind,
          inTopbar: !!el.closest('.topbar'), visible: box.width > 0 && box.height > 0,
          unobscured: !!top && (top === el || el.contains(top) || top.contains(el))};
}"""


def _luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_formula() -> None:
    assert round(contrast([255, 255, 255], [0, 0, 0]), 1) == 21.0
    assert contrast([11, 92, 171], [255, 255, 255]) > 6  # --blue on white


def _assert_visible_focus(page: Any) -> dict[str, Any]:
    focus = page.evaluate(FOCUS)
    what = f"{focus['tag']} « {focus['text']} »"
    assert focus["visible"], f"{what} has no box"
    assert focus["style"] not in ("none", "hidden") and focus["width"] >= 2, \
        f"{what}: outline {focus['style']} {focus['width']}px"
    ratio = contrast(focus["color"], focus["behind"])
    assert ratio >= 3, f"{what}: outline {focus['color']} on {focus['behind']} = {ratio:.2f}:1"
    assert focus["unobscured"], f"{what} is hidden under another element"
    return dict(focus)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _tab_through_topbar(page: Any, name: str) -> list[dict[str, Any]]:
    """Tab from the top of the page until focus leaves the top bar; every stop checked."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    seen: list[dict[str, Any]] = []
    for step in range(20):
        page.keyboard.press("Tab")
        focus = _assert_visible_focus(page)
        if step and not focus["inTopbar"]:
            break
        seen.append(focus)  # the skip link first (before the bar), then the bar's stops
        if step == 0:
            _shot(page, f"{name}-focus-lien-d-evitement")
        if step == 2:
            _shot(page, f"{name}-focus-barre")
    return seen


def _login(browser: Any, site: Site) -> Any:  # noqa: F811
    context = _context(browser, site, _card(site, "marie.martin"))
    page = context.new_page()
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    page.goto(site.url + "/compte")
    return page


def test_focus_is_visible_on_the_top_bar_desktop(site: Site, browser: Any) -> None:  # noqa: F811
    page = _login(browser, site)
    check_a11y(page, "a11y-compte-bureau")
    stops = _tab_through_topbar(page, "bureau")
    texts = [s["text"] for s in stops]
    assert texts[0] == "Aller au contenu"  # the skip link comes first, and shows
    assert any("Courrier" in t for t in texts) and "Se déconnecter" in texts
    on_blue = [s for s in stops if s["tag"] == "A" and s["text"] != "Aller au contenu"]
    assert on_blue and all(s["color"][:3] == [255, 255, 255] for s in on_blue)  # white ring
    page.context.close()


def test_focus_is_visible_on_the_phone_menu(site: Site, browser: Any) -> None:  # noqa: F811
    page = _phone(browser, site)
    check_a11y(page, "a11y-compte-telephone")
    stops = _tab_through_topbar(page, "telephone")
    assert [s["text"] for s in stops][-1].startswith("Menu")  # the folded menu, then the page
    page.focus("#menu summary")
    page.keyboard.press("Enter")  # opens the menu; its links are next in the tab order
    page.keyboard.press("Tab")
    focus = _assert_visible_focus(page)
    assert "Courrier" in focus["text"] and focus["inTopbar"]
    _shot(page, "telephone-focus-menu")
    check_a11y(page, "a11y-menu-ouvert-telephone")
    page.keyboard.press("Escape")  # menu.js: closes it, focus back on "Menu"
    assert page.evaluate("document.activeElement.closest('summary') !== null")
    assert not page.is_visible(".mainnav")
    page.context.close()


def _phone(browser: Any, site: Site) -> Any:  # noqa: F811
    crt = _card(site, "marie.martin")
    context = browser.new_context(
        ignore_https_errors=True, locale="fr-FR", viewport={"width": 390, "height": 844},
        is_mobile=True, client_certificates=[{"origin": site.url, "certPath": str(crt),
                                              "keyPath": str(crt)[:-4] + ".key"}])
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    page.goto(site.url + "/compte")
    return page


def test_focus_is_visible_in_forms(site: Site, browser: Any) -> None:  # noqa: F811
    """The login form: fields, buttons and links on white, the primary (blue) button."""
    context = _context(browser, site)
    page = context.new_page()
    page.goto(site.url + "/connexion")
    check_a11y(page, "a11y-connexion")
    page.focus("#identifier")
    _assert_visible_focus(page)
    kinds = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement === document.body"):
            break  # past the last link of the page
        focus = _assert_visible_focus(page)
        kinds.add(focus["tag"])
        if focus["text"] == "Continuer":
            _shot(page, "connexion-focus-bouton")
    assert {"INPUT", "BUTTON", "A"} <= kinds
    context.close()

