"""Reading in Debian's Chromium (Playwright) against ``mss run`` on a demo data directory
(tests/webmail_mail_browser_support.py), on a desktop (1366x850) and a phone (390x844):

- the list by conversation (the « Conversations » switch, saved) and a conversation read as
  one page (read messages folded, the unread and the latest open, « Tout déplier »), also
  without JavaScript;
- attachment previews: a PNG shown in the page, a PDF in Chromium's own viewer inside the page;
  a JPEG named .pdf not shown as a PDF; an HTML page, an SVG and a PDF carrying JavaScript
  never run, whatever way they are opened (their payload would change the page's title or
  open a dialog);
- « Tout télécharger »: the ZIP the browser saves, opened with zipfile (``../../x`` inside);
- the print page (no application around it, the print dialog opened by js/print.js), the
  source and header pages (a ``<script>`` in a subject and a body shown as text).

Screenshots: tests/artifacts/webmail/lecture-*.png; docs/screenshots/conversation.png,
pieces-jointes-apercu.png, impression.png."""

from __future__ import annotations

import imaplib
import io
import ssl
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.reading_support import (
    HTML_ATTACHMENT,
    SVG_ATTACHMENT,
    append,
    message,
    pdf,
    png,
    thread,
    white_share,
)
from tests.webmail_mail_browser_support import (
    DESKTOP,
    MARIE,
    PASSWORD,
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
)

pytestmark = SKIP_WITHOUT_CHROMIUM
DOCS = Path(__file__).parent.parent / "docs" / "screenshots"
SCRIPTED_SUBJECT = "Analyse <script>document.title='PIRATE'</script>"
SCRIPTED_BODY = ("Résultat : <script>alert('PIRATE')</script>\n"
                 "<img src=x onerror=\"document.title='PIRATE'\">\n")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("lecture")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _imap(site: Site) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(site.settings.pki_dir / "ca.pem"))
    context.check_hostname = False  # loopback; the chain is still checked
    conn = imaplib.IMAP4_SSL("127.0.0.1", site.settings.imaps_port, ssl_context=context)
    conn.login(MARIE, PASSWORD)
    return conn


def _jpeg(browser: Any) -> bytes:
    """A real JPEG, drawn by Chromium itself."""
    page = browser.new_page(viewport={"width": 64, "height": 48})
    page.set_content("<body style='margin:0;background:#c33'></body>")
    data = page.screenshot(type="jpeg", quality=80)
    page.close()
    return bytes(data)


@pytest.fixture(scope="module")
def stored(site: Site, browser: Any) -> dict[str, Any]:
    """Marie's INBOX: a conversation of five with Paul (three read, the last in HTML), a
    message with every kind of attachment, one with script in its subject and body."""
    conn = _imap(site)
    start = datetime.now(UTC) - timedelta(days=9)
    found: dict[str, Any] = {"jpeg": _jpeg(browser)}
    found["conversation"] = thread(conn, [PAUL, MARIE], MARIE, "Suivi post-opératoire de "
                                   "Mme Leroy", 4, start=start, seen_until=3, tag="leroy")
    last = message(PAUL, MARIE, "RE: Suivi post-opératoire de Mme Leroy",
                   "Cicatrisation satisfaisante.\n", when=start + timedelta(days=5),
                   reply_to=[f"<leroy-{i}-{start.timestamp():.0f}@mss.test>" for i in range(4)],
                   html="<p>Cicatrisation <b>satisfaisante</b>.</p><p>Contrôle dans un mois."
                        "</p>")
    found["conversation"].append(append(conn, last))
    found["ordonnance"] = thread(conn, [PAUL, MARIE], MARIE, "Ordonnance de M. Roux", 2,
                                 start=start - timedelta(days=20), seen_until=2, tag="roux")
    found["attachments"] = append(conn, message(
        PAUL, MARIE, "Examens de M. Petit", "Voici les examens.\n",
        when=start + timedelta(days=6), attachments=[
            ("radio.png", "image/png", png(160, 100)),
            ("compte rendu.pdf", "application/pdf", pdf("Compte rendu de M. Petit")),
            ("photo.pdf", "application/pdf", found["jpeg"]),
            ("schema.svg", "image/svg+xml", SVG_ATTACHMENT.encode()),
            ("page.html", "text/html", HTML_ATTACHMENT.encode()),
            ("formulaire.pdf", "application/pdf",
             pdf("Formulaire", javascript="app.alert('PIRATE');")),
            ("../../x", "text/plain", b"chemin"),
        ]))
    found["scripted"] = append(conn, message(PAUL, MARIE, SCRIPTED_SUBJECT, SCRIPTED_BODY,
                                             when=start + timedelta(days=7)), seen=True)
    conn.logout()
    return found


def _login(browser: Any, site: Site, size: dict[str, int], *, javascript: bool = True) -> Any:
    page = screen(browser, site, MARIE, size, javascript=javascript)
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    return page


def _doc(page: Any, name: str, *, full_page: bool = False) -> None:
    """The feature's screenshot for the README (docs/screenshots/<name>.png)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=full_page)


def _fits(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "wider than the screen"


def _watch(page: Any) -> list[str]:
    """Every dialog the page opens (dismissed), to prove nothing ran."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return dialogs


def _until(probe: Any, timeout: float = 20) -> None:
    """Poll ``probe`` (page.wait_for_function would eval a string in the page, which our CSP
    forbids: no 'unsafe-eval')."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "délai dépassé"
        time.sleep(0.1)


def _drawn(page: Any, frame: Any, timeout: float = 20) -> None:
    """Wait until Chromium's viewer has drawn the PDF's page in ``frame``: the viewer's
    background is dark grey, its page white (looked at in a strip right of the thumbnails)."""
    box = frame.bounding_box()
    clip = {"x": box["x"] + box["width"] * 0.55, "y": box["y"] + box["height"] * 0.3,
            "width": 160, "height": 80}
    deadline = time.monotonic() + timeout
    while white_share(page.screenshot(clip=clip)) < 0.5:
        assert time.monotonic() < deadline, "the PDF viewer drew nothing"
        time.sleep(0.3)


def _read_url(site: Site, uid: int, tail: str = "") -> str:
    return f"{site.url}/courrier/{box_of(site, MARIE)}/message/{uid}{tail}?dossier=INBOX"


# ---------------------------------------------------------------------- conversations
def test_the_list_by_conversation_and_a_conversation(site: Site, browser: Any,
                                                     stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP)
    page.goto(f"{site.url}/courrier/{box_of(site, MARIE)}?dossier=INBOX")
    page.click(".view-toggle button:has-text('Conversations')")
    page.wait_for_selector("table.conv-table")
    expect(page.locator(".view-toggle button[aria-pressed='true']")).to_have_text(
        "Conversations")
    row = page.locator("table.conv-table tbody tr", has_text="Suivi post-opératoire")
    expect(row).to_have_count(1)
    expect(row).to_have_class("unread")
    expect(row.locator(".conv-count")).to_contain_text("5")
    expect(row.locator(".col-who")).to_contain_text("moi")
    shot(site, page, "liste-conversations")
    page.reload()  # the choice is kept
    expect(page.locator("table.conv-table")).to_have_count(1)
    # A ticked conversation: the list's actions act on all its messages.
    roux = page.locator("table.conv-table tbody tr", has_text="Ordonnance de M. Roux")
    roux.locator("input[name=uid]").check()
    page.click("#bulk button:has-text('Supprimer')")
    expect(page.locator(".flash-success")).to_contain_text("2 messages")
    expect(page.locator("table.conv-table tbody tr", has_text="Ordonnance")).to_have_count(0)
    expect(page.locator("table.conv-table")).to_have_count(1)  # back to the same view
    row.locator(".col-subject a").click()
    page.wait_for_url("**/conversation/**")
    items = page.locator("details.conv-msg")
    expect(items).to_have_count(5)
    opened = [items.nth(i).evaluate("d => d.open") for i in range(5)]
    assert opened == [False, False, False, True, True]  # read folded; unread and latest open
    frame = items.nth(4).locator("iframe.msg-frame")
    expect(frame).to_be_visible()
    _until(lambda: frame.evaluate("f => f.getBoundingClientRect().height") > 150)
    expect(page.frame_locator(".conv-list li:last-child iframe.msg-frame").locator("b")
           ).to_have_text("satisfaisante")
    items.nth(0).locator("summary.conv-summary").click()  # a folded one opens on a click
    expect(items.nth(0).locator(".conv-body")).to_be_visible()
    expect(items.nth(0)).to_contain_text("Message 1 de la conversation leroy.")
    page.click("#conv-close-all")
    assert [items.nth(i).evaluate("d => d.open") for i in range(5)] == [False] * 4 + [True]
    items.nth(1).locator("summary.conv-summary").focus()
    page.keyboard.press("Enter")  # by keyboard too
    assert items.nth(1).evaluate("d => d.open")
    page.click("#conv-open-all")
    assert all(items.nth(i).evaluate("d => d.open") for i in range(5))
    page.click("#conv-close-all")
    shot(site, page, "conversation")
    _doc(page, "conversation", full_page=True)

    phone = _login(browser, site, PHONE)
    phone.goto(page.url)
    expect(phone.locator("details.conv-msg")).to_have_count(5)
    _fits(phone, PHONE["width"])
    phone.locator(".conv-list > li:last-child .more-menu summary").click()
    expect(phone.locator(".conv-list > li:last-child .more-list")).to_be_visible()
    _fits(phone, PHONE["width"])  # the opened menu too
    phone.locator(".conv-list > li:last-child .more-menu summary").click()
    shot(site, phone, "conversation-telephone")
    phone.goto(f"{site.url}/courrier/{box_of(site, MARIE)}?dossier=INBOX")
    expect(phone.locator("table.conv-table")).to_have_count(1)  # the same person's choice
    _fits(phone, PHONE["width"])
    shot(site, phone, "liste-conversations-telephone")
    phone.click(".view-toggle button:has-text('Messages')")
    phone.wait_for_selector("table.msg-table:not(.conv-table)")
    phone.context.close()
    page.context.close()


def test_conversations_without_javascript(site: Site, browser: Any,
                                          stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP, javascript=False)
    page.goto(f"{site.url}/courrier/{box_of(site, MARIE)}?dossier=INBOX&vue=conversations")
    page.locator("table.conv-table tbody tr", has_text="Suivi post-opératoire").locator(
        ".col-subject a").click()
    items = page.locator("details.conv-msg")
    expect(items).to_have_count(5)
    expect(page.locator(".conv-tools")).to_be_hidden()  # its buttons need the script
    items.nth(0).locator("summary.conv-summary").click()  # <details> needs none
    expect(items.nth(0).locator(".conv-body")).to_be_visible()
    page.context.close()


# ---------------------------------------------------------------------- attachments
def test_previews_show_proven_files_and_nothing_else_runs(site: Site, browser: Any,
                                                          stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP)
    dialogs = _watch(page)
    page.goto(_read_url(site, stored["attachments"]))
    title = page.title()
    items = page.locator(".attachments > ul > li")
    image = items.filter(has_text="radio.png").locator("img")
    expect(image).to_be_visible()
    _until(lambda: image.evaluate("i => i.complete && i.naturalWidth") == 160)
    pdf_item = items.filter(has_text="compte rendu.pdf")
    with page.expect_response(lambda r: "/apercu" in r.url) as answered:
        pdf_item.locator(".att-preview > summary").click()
        pdf_item.locator("iframe.pdf-frame").scroll_into_view_if_needed()
    assert answered.value.header_value("content-type") == "application/pdf"
    csp = answered.value.header_value("content-security-policy")
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp, csp
    viewer = pdf_item.locator("iframe.pdf-frame")
    expect(viewer).to_be_visible()
    assert viewer.evaluate("f => f.getAttribute('sandbox')") is None
    _drawn(page, viewer)
    for name in ("photo.pdf", "schema.svg", "page.html", "formulaire.pdf", "x"):
        item = items.filter(has_text=name)
        expect(item.locator("img, iframe, details")).to_have_count(0)  # a download only
    shot(site, page, "pieces-jointes")
    _doc(page, "pieces-jointes-apercu", full_page=True)

    links = {name: items.filter(has_text=name).locator("a.attachment").get_attribute("href")
             for name in ("schema.svg", "page.html", "formulaire.pdf", "photo.pdf")}
    for name, href in links.items():
        for url in (href, href.split("?")[0] + "/apercu?" + href.split("?")[1]):
            # Opened in the page's own frame: a download, never a document.
            with page.expect_download() as saved:
                page.evaluate("""url => { const f = document.createElement('iframe');
                    f.src = url; f.className = 'probe'; document.body.append(f); }""", url)
            assert saved.value.suggested_filename.endswith(name.rsplit(".", 1)[1]), name
            if name.endswith((".svg", ".html")):  # as an image: no image type, not drawn
                drawn = page.evaluate("""url => new Promise(done => { const i = new Image();
                    i.onload = () => done(i.naturalWidth); i.onerror = () => done(0);
                    i.src = url; })""", url)
                assert drawn == 0, (name, url)
    other = _login(browser, site, DESKTOP)  # typed in the address bar, in a tab of its own
    other_dialogs = _watch(other)
    for href in links.values():
        preview_url = site.url + href.split("?")[0] + "/apercu?" + href.split("?")[1]
        with other.expect_download():
            try:
                other.goto(preview_url)
            except Exception as exc:  # noqa: BLE001 Playwright: "Download is starting"
                assert "Download is starting" in str(exc)
    time.sleep(1)
    assert page.title() == title and "PIRATE" not in page.title()
    assert dialogs == [] and other_dialogs == []
    assert page.evaluate("document.title") == title
    other.context.close()

    phone = _login(browser, site, PHONE)
    phone.goto(_read_url(site, stored["attachments"]))
    expect(phone.locator(".att-thumb img")).to_be_visible()
    _fits(phone, PHONE["width"])
    shot(site, phone, "pieces-jointes-telephone")
    phone.context.close()
    page.context.close()


def test_everything_as_one_zip(site: Site, browser: Any, stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP)
    page.goto(_read_url(site, stored["attachments"]))
    with page.expect_download() as saved:
        page.click("a.att-zip")
    download = saved.value
    assert download.suggested_filename == "Examens de M. Petit.zip"
    archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
    assert archive.testzip() is None
    assert archive.namelist() == ["radio.png", "compte rendu.pdf", "photo.pdf", "schema.svg",
                                  "page.html", "formulaire.pdf", "x"]
    assert archive.read("x") == b"chemin"  # "../../x" can only land where it is extracted
    assert archive.read("radio.png") == png(160, 100)
    assert archive.read("photo.pdf") == stored["jpeg"]
    page.context.close()


# ---------------------------------------------------------------------- print, source
def test_the_print_page(site: Site, browser: Any, stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP)
    page.context.add_init_script("window.__printed = 0; window.print = () => "
                                 "{ window.__printed += 1; };")
    page.goto(_read_url(site, stored["attachments"]))
    page.click(".more-menu summary")
    with page.expect_popup() as opened:
        page.click(".more-list a:has-text('Imprimer')")
    sheet = opened.value
    sheet.wait_for_load_state("load")
    _until(lambda: sheet.evaluate("window.__printed") == 1)  # the dialog, once, at once
    expect(sheet.locator(".topbar, .mail-side, .footer")).to_have_count(0)
    expect(sheet.locator("h1")).to_have_text("Examens de M. Petit")
    expect(sheet.locator(".print-attachments li")).to_have_count(7)
    expect(sheet.locator(".print-body")).to_contain_text("Voici les examens.")
    sheet.click("#print-now")
    assert sheet.evaluate("window.__printed") == 2
    shot(site, sheet, "impression")
    _doc(sheet, "impression", full_page=True)
    sheet.emulate_media(media="print")
    expect(sheet.locator(".print-toolbar")).to_be_hidden()
    assert sheet.pdf()[:5] == b"%PDF-"  # Chromium prints it
    phone = _login(browser, site, PHONE)
    phone.goto(sheet.url.replace("imprimer=1", "imprimer=0"))
    _fits(phone, PHONE["width"])
    shot(site, phone, "impression-telephone")
    phone.context.close()
    page.context.close()


def test_source_and_headers_show_script_as_text(site: Site, browser: Any,
                                                stored: dict[str, Any]) -> None:
    page = _login(browser, site, DESKTOP)
    dialogs = _watch(page)
    page.goto(_read_url(site, stored["scripted"]))
    page.click(".more-menu summary")
    expect(page.locator(".more-list")).to_be_visible()
    page.keyboard.press("Escape")  # closes it, the focus back on « Plus »
    expect(page.locator(".more-list")).to_be_hidden()
    assert page.evaluate("document.activeElement.closest('.more-menu') !== null")
    page.click(".more-menu summary")
    page.click("h1")  # a click elsewhere too
    expect(page.locator(".more-list")).to_be_hidden()
    page.click(".more-menu summary")
    page.click(".more-list a:has-text('Afficher la source')")
    page.wait_for_url("**/source?**")
    source = page.locator("pre.raw-text")
    expect(source).to_contain_text("<script>alert('PIRATE')</script>")
    expect(source).to_contain_text("onerror=")
    assert page.locator("pre.raw-text script, pre.raw-text img").count() == 0
    shot(site, page, "source")
    page.click("a:has-text('Afficher les en-têtes seuls')")
    page.wait_for_url("**/en-tetes?**")
    expect(page.locator("pre.raw-text")).to_contain_text("Subject: Analyse <script>")
    expect(page.locator("pre.raw-text")).not_to_contain_text("Résultat")
    time.sleep(0.5)
    # The subject is in the title as text; had its script run, the title would be "PIRATE".
    assert page.title().startswith("En-têtes — Analyse <script>document.title='PIRATE'")
    assert dialogs == []
    shot(site, page, "en-tetes")
    phone = _login(browser, site, PHONE)
    phone.goto(page.url)
    _fits(phone, PHONE["width"])
    shot(site, phone, "en-tetes-telephone")
    phone.context.close()
    page.context.close()
