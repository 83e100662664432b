"""The mail views in a real browser: Debian's Chromium driven by Playwright, against Dovecot,
the gateway and the webmail started by ``mss run`` (role ``all``) on a demo data directory,
everything on 127.0.0.1. People log in with their demo CPS certificates (client certificate
in the browser), the operator with password + TOTP. Screenshots go to
tests/artifacts/webmail/mail-*.png.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import delete, select

from core.settings import Settings
from mss.app import App
from mss.demo import setup_demo
from mss.run import run
from tests.mailstore_fixtures import free_port, open_tempdir
from tests.webmail_browser_support import check_a11y
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, Mailbox, OtpChannel, TrustedDomain
from trust_space.models import Operator as PeerOperator
from webmail import otp

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium absent")
ARTIFACTS = Path(__file__).parent / "artifacts" / "webmail"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "Demo-Passw0rd"
OPERATOR, SEED = "operateur@mss.test", "KRUGS4ZANFZSA4TFMNZGK5DTMVRXEZLU"
MARIE, PAUL, JULIE = "marie.martin@mss.test", "paul.durand@mss.test", "julie.bernard@mss.test"
ORG = "pharma.ducentre.64000@mss.test"
PEER = "pair.test"
XSS_HTML = """<h2 id="titre">Résultats</h2><p onmouseover="alert('survol')">Bonjour</p>
<script>alert('script')</script><img src="x" onerror="alert('img')">
<a id="js" href="javascript:alert('lien')">lien</a>
<div style="width: expression(alert('css')); background: url(javascript:alert('bg'))">css</div>
<svg onload="alert('svg')"><script>alert('svg-script')</script><circle r="5"/></svg>
<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')></style></mglyph></table>
</mtext></math>
<iframe src="javascript:alert('frame')"></iframe><object data="javascript:alert('obj')"></object>
<form action="javascript:alert('form')"><button id="b">go</button></form>
<details open ontoggle="alert('toggle')"><summary>s</summary></details>
<img id="remote" src="https://images.example/logo.png">"""


@dataclass
class Site:
    url: str
    settings: Settings
    app: App
    operator_seed: str
    shots: list[str] = field(default_factory=list)

    def card(self, address: str) -> Path:
        return self.settings.demo_dir / f"{address}.crt"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    root = open_tempdir("mss-webmail-mail-browser-")
    ports = {name: free_port() for name in ("web_port", "submission_port", "submissions_port",
                                            "relay_port", "imap_port", "imaps_port")}
    settings = Settings.load(data_dir=root / "data", environ={}, demo_password=PASSWORD,
                             listen_address="127.0.0.1", hostname="localhost", metrics_port=0,
                             retry_base_seconds=3600, imap_smtp_web_password=True, **ports)
    app = App(settings)
    report = setup_demo(app)
    seed = _operator_and_peer(app, getattr(report, "operator_totp", ""))
    for old in ARTIFACTS.glob("mail-*.png"):
        old.unlink()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "all"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(60), "mss run did not start"
    yield Site(f"https://localhost:{settings.web_port}", settings, app, seed)
    stop.set()
    thread.join(30)
    app.close()


def _operator_and_peer(app: App, demo_seed: str) -> str:
    """The operator's TOTP seed (the demo's operator, else one created here) and a
    whitelisted peer whose relay does not answer."""
    with app.db.transaction() as session:
        if not demo_seed:
            # `mss demo` already creates this operator: replace it with a known TOTP seed.
            session.execute(delete(Account).where(Account.login == OPERATOR))
            session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                                password_hash=hash_password(PASSWORD), failed_attempts=0,
                                otp_channel=OtpChannel.TOTP,
                                totp_secret=otp.seal_seed(SEED, app.settings.secret())))
        dn = f"CN={PEER},O=Operateur Pair,C=FR"
        session.add(TrustedDomain(domain=PEER, certificate_dn=dn, relay_host="127.0.0.1",
                                  relay_port=free_port(),
                                  operator=PeerOperator(name="Operateur Pair", certificate_dn=dn)))
    return demo_seed or SEED


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _page(browser: Any, site: Site, who: str | None = None, *, width: int = 1280) -> Any:
    """A new page, logged in with the demo card of ``who`` (an address) if given."""
    certs = []
    if who is not None:
        crt = site.card(who)
        certs = [{"origin": site.url, "certPath": str(crt), "keyPath": str(crt)[:-4] + ".key"}]
    context = browser.new_context(ignore_https_errors=True, client_certificates=certs,
                                  locale="fr-FR", viewport={"width": width, "height": 900})
    context.set_default_timeout(30_000)  # generous: CI machines run other suites too
    page = context.new_page()
    if who is not None:
        page.goto(site.url + "/connexion")
        page.click("#card-login")
        page.wait_for_url("**/courrier/*")  # logins land in the inbox (issue #15 item 3)
        page.goto(site.url + "/courrier")
    return page


def shot(site: Site, page: Any, name: str, *, full_page: bool = True, axe: bool = True) -> None:
    """A screenshot of the page, and axe-core on it: no serious or critical violation
    (``axe=False`` with scripts off: axe cannot run there; the same pages are checked with)."""
    if axe:
        check_a11y(page, f"mail-{name}")
    site.shots.append(name)
    page.screenshot(path=str(ARTIFACTS / f"mail-{len(site.shots):02d}-{name}.png"),
                    full_page=full_page)


def _box(site: Site, address: str) -> int:
    with site.app.db.transaction() as session:
        return int(session.scalar(select(Mailbox.id).where(Mailbox.address == address)))


def _wait_row(page: Any, site: Site, url: str, subject: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(site.url + url)
        if page.locator("td.col-subject a", has_text=subject).count():
            return
        time.sleep(0.3)
    raise AssertionError(f"{subject} n'est pas arrivé ({url})")


def _submit(site: Site, sender: str, to: list[str], subject: str, html: str,
            name: str = "") -> None:
    """Another client submitting through the gateway (password login on port 587)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((name, sender)) if name else sender
    message["To"], message["Subject"] = ", ".join(to), subject
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message.set_content("Version texte.")
    message.add_alternative(html, subtype="html")
    context = ssl.create_default_context(cafile=str(site.settings.pki_dir / "ca.pem"))
    with smtplib.SMTP("127.0.0.1", site.settings.submission_port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo()
        smtp.login(sender, PASSWORD)
        smtp.send_message(message)


def _compose(page: Any, to: str, subject: str, body: str) -> None:
    page.click("#write")
    page.fill("#to", to)
    page.fill("#subject", subject)
    page.fill("#body", body)


# ---------------------------------------------------------------------- the scenarios
def test_marie_writes_paul_reads_and_replies_marie_manages_the_reply(
        site: Site, browser: Any) -> None:
    marie = _page(browser, site, MARIE)
    shot(site, marie, "boite-de-reception-vide")
    marie.click("#write")
    marie.type("#to", "Paul", delay=20)  # autocompletion from the directory, by keyboard
    marie.wait_for_selector("#to-suggestions li")
    marie.keyboard.press("ArrowDown")
    marie.keyboard.press("Enter")
    assert PAUL in marie.input_value("#to")
    marie.fill("#subject", "Bilan biologique de M. Durand")
    marie.fill("#body", "Bonjour,\nvoici le bilan en pièce jointe.\nMarie")
    assert marie.is_checked("#sign") and marie.is_disabled("#sign")  # the policy's minimum
    marie.check("#encrypt")
    # static/protection.js: the protection of each recipient's copy, said before sending
    marie.wait_for_selector("#protection li.protection-internal")
    assert PAUL in marie.inner_text("#protection")
    assert "sans quitter ses serveurs" in marie.inner_text("#protection")
    marie.set_input_files("#attachments", files=[{"name": "bilan.pdf", "mimeType":
                                                  "application/pdf", "buffer": b"%PDF-1.4 x"}])
    shot(site, marie, "ecrire")
    marie.click("#send")
    assert "Message envoyé" in marie.inner_text(".flash")
    paul = _page(browser, site, PAUL)
    _wait_row(paul, site, f"/courrier/{_box(site, PAUL)}", "Bilan biologique de M. Durand")
    row = paul.locator("tr", has_text="Bilan biologique de M. Durand")
    assert "unread" in (row.get_attribute("class") or "")
    assert "signé" in row.inner_text() and "PJ" in row.inner_text()
    shot(site, paul, "liste-paul")
    row.locator("td.col-subject a").click()
    badge = paul.inner_text("#security-badge")
    assert f"Signé par {MARIE}" in badge and "vérifiée" in badge
    assert "bilan.pdf" in paul.inner_text(".attachments")
    with paul.expect_download() as download:
        paul.click("a.attachment")
    assert download.value.suggested_filename == "bilan.pdf"
    shot(site, paul, "lecture-badge-piece-jointe")
    paul.click("a:has-text('Répondre')")
    assert paul.input_value("#to") == MARIE
    paul.fill("#body", "Bien reçu, merci.\n" + paul.input_value("#body"))
    paul.click("#send")
    assert "Message envoyé" in paul.inner_text(".flash")
    marie_box = _box(site, MARIE)
    _wait_row(marie, site, f"/courrier/{marie_box}", "RE : Bilan biologique")
    marie.locator("td.col-subject a", has_text="RE : Bilan biologique").click()
    marie.click("button:has-text('Supprimer')")
    assert "Corbeille" in marie.inner_text(".flash")
    marie.click(".folder-list a:has-text('Corbeille')")
    expect(marie.locator("td.col-subject", has_text="RE : Bilan biologique")).to_have_count(1)
    marie.locator("tr", has_text="RE : Bilan biologique").locator("input[name=uid]").check()
    shot(site, marie, "corbeille")
    marie.click("button:has-text('Restaurer')")
    assert "restauré" in marie.inner_text(".flash")
    marie.click(".folder-list a:has-text('Boîte de réception')")
    expect(marie.locator("td.col-subject", has_text="RE : Bilan biologique")).to_have_count(1)
    marie.fill("#quick-q", "Bien reçu")
    marie.keyboard.press("Enter")
    expect(marie.locator("td.col-subject", has_text="RE : Bilan biologique")).to_have_count(1)
    shot(site, marie, "recherche")


def test_draft_saved_then_sent_later(site: Site, browser: Any) -> None:
    marie = _page(browser, site, MARIE)
    _compose(marie, PAUL, "Courrier de liaison", "Premier jet du courrier.")
    marie.click("#save-draft")
    assert "Brouillon enregistré" in marie.inner_text(".flash")
    marie.click(".folder-list a:has-text('Brouillons')")
    marie.locator("td.col-subject a", has_text="Courrier de liaison").click()
    assert marie.input_value("#body").startswith("Premier jet du courrier.")
    shot(site, marie, "brouillon-repris")
    marie.fill("#body", "Version finale du courrier.")
    marie.click("#send")
    assert "Message envoyé" in marie.inner_text(".flash")
    marie.click(".folder-list a:has-text('Brouillons')")
    expect(marie.locator("td.col-subject", has_text="Courrier de liaison")).to_have_count(0)
    paul = _page(browser, site, PAUL)
    _wait_row(paul, site, f"/courrier/{_box(site, PAUL)}", "Courrier de liaison")


def test_html_with_an_xss_corpus_renders_inert(site: Site, browser: Any) -> None:
    _submit(site, PAUL, [MARIE], "Résultats HTML", XSS_HTML)
    marie = _page(browser, site, MARIE)
    dialogs: list[str] = []
    marie.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _wait_row(marie, site, f"/courrier/{_box(site, MARIE)}", "Résultats HTML")
    with marie.expect_response(lambda r: "/message/" in r.url and "/corps" not in r.url) as main:
        marie.locator("td.col-subject a", has_text="Résultats HTML").click()
    assert "script-src 'self'" in main.value.headers["content-security-policy"]
    frame_element = marie.wait_for_selector("iframe.msg-frame")
    frame = frame_element.content_frame()
    frame.wait_for_selector("h2:has-text('Résultats')")  # ids are not kept: no clobbering
    for element in ("p", "img", "a", "div", "details", "summary"):
        for handle in frame.query_selector_all(element):
            if handle.is_visible():
                handle.hover(timeout=2_000)
    frame.click("a:has-text('lien')")
    marie.wait_for_timeout(500)
    assert dialogs == []
    assert frame.evaluate("document.querySelectorAll('script, svg, iframe, object, embed, form,"
                          " style, math').length") == 0
    assert frame.evaluate("[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                          ".some(a => a.name.startsWith('on'))).length") == 0
    assert frame.evaluate("document.querySelectorAll('a[href^=\"javascript\"]').length") == 0
    assert frame.evaluate("document.querySelectorAll('img[src^=\"http\"], [id]').length") == 0
    assert marie.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert "allow-scripts" not in (frame_element.get_attribute("sandbox") or "")
    assert "image(s) distante(s) non chargée(s)" in marie.inner_text("main")
    shot(site, marie, "html-inerte")


def test_julie_acts_in_the_pharmacy_mailbox_within_her_role(site: Site, browser: Any) -> None:
    _submit(site, PAUL, [ORG], "Commande de la pharmacie", "<p>Commande n° 12</p>")
    julie = _page(browser, site, JULIE)
    org = _box(site, ORG)
    julie.click(".box-switch a:has-text('Pharmacie du Centre')")
    julie.wait_for_url(f"**/courrier/{org}")  # read the new page, not the one being left
    assert "Utilisateur" in julie.inner_text(".box-switch")
    _wait_row(julie, site, f"/courrier/{org}", "Commande de la pharmacie")
    expect(julie.locator("button:has-text('Supprimer')")).to_have_count(0)
    julie.locator("td.col-subject a", has_text="Commande de la pharmacie").click()
    julie.frame_locator("iframe.msg-frame").locator("text=Commande n° 12").wait_for()
    shot(site, julie, "pharmacie-lecture")
    julie.click("a:has-text('Répondre')")
    julie.fill("#body", "Commande prête.")
    julie.click("#send")
    assert "Message envoyé" in julie.inner_text(".flash")
    julie.goto(site.url + f"/courrier/{org}/dossiers")
    assert "ne permet pas de gérer les dossiers" in julie.inner_text("main")
    julie.goto(site.url + f"/courrier/{org}/corbeille/vider")
    assert "Accès refusé" in julie.inner_text("h1")
    assert "Utilisateur" in julie.inner_text("main")
    shot(site, julie, "pharmacie-refus")
    julie.goto(site.url + f"/courrier/{_box(site, MARIE)}")
    assert julie.inner_text("h1") in ("Page introuvable", "Introuvable")


def test_operator_retries_a_deferred_message(site: Site, browser: Any) -> None:
    _submit(site, MARIE, [f"dr.martin@{PEER}"], "Pour le pair", "<p>Courrier</p>")
    ops = _page(browser, site)
    ops.goto(site.url + "/connexion")
    ops.fill("#identifier", OPERATOR)
    ops.fill("#password", PASSWORD)
    ops.click("button:has-text('Continuer')")
    ops.fill("#code", pyotp.TOTP(site.operator_seed).now())
    ops.click("button:has-text('Valider')")
    attempts = _attempts_reader(ops, site, f"dr.martin@{PEER}")
    _until(lambda: attempts() == 1 and "injoignable" in ops.inner_text("main"))
    shot(site, ops, "operateur-file")
    ops.locator("section.queue-entry", has_text=f"dr.martin@{PEER}").locator(
        "button:has-text('Relancer')").click()
    assert "relancée" in ops.inner_text(".flash")
    _until(lambda: attempts() == 2 and "injoignable" in ops.inner_text("main"))
    shot(site, ops, "operateur-file-relance")
    ops.click("a:has-text('Pairs')")
    assert PEER in ops.inner_text("main")
    ops.click("a:has-text('Journal d’audit')")
    ops.fill("#a-action", "queue.")
    ops.click("button:has-text('Rechercher')")
    assert "queue.retry" in ops.inner_text("main")
    shot(site, ops, "operateur-journal")


def _attempts_reader(page: Any, site: Site, recipient: str) -> Callable[[], int]:
    def read() -> int:
        page.goto(site.url + "/operateur/file")
        row = page.locator("tr", has_text=recipient)
        return int(row.locator("td.attempts").inner_text()) if row.count() else -1

    return read


def _until(probe: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("délai dépassé")
        time.sleep(0.3)


PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 850}
ROWS = ".msg-table tbody tr"


def _screen(browser: Any, site: Site, who: str, size: dict[str, int], *,
            javascript: bool = True) -> Any:
    crt = site.card(who)
    context = browser.new_context(
        ignore_https_errors=True, locale="fr-FR", viewport=size, is_mobile=size is PHONE,
        java_script_enabled=javascript,
        client_certificates=[{"origin": site.url, "certPath": str(crt),
                              "keyPath": str(crt)[:-4] + ".key"}])
    context.set_default_timeout(30_000)
    return context.new_page()


def _rows_on_first_screen(page: Any) -> int:
    height = page.viewport_size["height"]
    return int(page.evaluate(f"[...document.querySelectorAll('{ROWS}')]"
                             f".filter(r => r.getBoundingClientRect().bottom <= {height}).length"))


def _two_lines(page: Any, row: Any) -> None:
    """A list row on a phone: sender and date on the first line, the subject on the second,
    the sender's name whole."""
    box = {name: row.locator(f"td.col-{name}").bounding_box() for name in ("who", "date",
                                                                           "subject")}
    assert abs(box["who"]["y"] - box["date"]["y"]) < 8
    assert box["subject"]["y"] >= box["who"]["y"] + box["who"]["height"] - 2
    assert box["subject"]["height"] < 30  # one line, cut with an ellipsis if need be
    assert row.locator("td.col-who a").evaluate("a => a.scrollWidth <= a.clientWidth")


def test_phone_and_desktop_first_screens(site: Site, browser: Any) -> None:
    """Issue #15 item 11. At 390x844 the list comes first: a folded menu and a folded
    box/folder drawer, each message on two lines, at least 6 messages on the first screen,
    and the read view starts with the message; nothing wider than the screen. The same pages
    at 1366x850 keep the side column. Screenshots of the first screen of each."""
    for n in range(8):
        _submit(site, MARIE, [PAUL], f"Résultat d’examen n° {n + 1} du patient suivi en "
                "consultation de médecine générale", "<p>Résultat joint.</p>", "Marie Martin")
    _wait_row(_page(browser, site, PAUL), site, f"/courrier/{_box(site, PAUL)}",
              "Résultat d’examen n° 8")
    for size, tag in ((PHONE, "390"), (DESKTOP, "1366")):
        page = _screen(browser, site, PAUL, size)
        page.goto(site.url + "/connexion")
        shot(site, page, f"{tag}-connexion", full_page=False)
        page.click("#card-login")
        page.wait_for_url("**/courrier/*")
        expect(page.locator(ROWS).first).to_be_visible()
        shot(site, page, f"{tag}-boite-de-reception", full_page=False)
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        shown = _rows_on_first_screen(page)
        page.focus(f"{ROWS} input[name=uid] >> nth=0")
        page.keyboard.press("Tab")  # by keyboard: the subject's link shows a solid ring
        ring = page.evaluate("[document.activeElement.closest('td').className,"
                             " getComputedStyle(document.activeElement).outlineStyle,"
                             " parseFloat(getComputedStyle(document.activeElement).outlineWidth)]")
        assert ring[0] == "col-subject" and ring[1] == "solid" and ring[2] >= 2, ring
        if size is PHONE:
            assert shown >= 6, f"{shown} messages on the first phone screen"
            assert not page.is_visible(".folder-list") and not page.is_visible(".mainnav")
            _two_lines(page, page.locator(ROWS, has_text="Résultat d’examen n° 8"))
        else:
            assert page.is_visible(".folder-list") and page.is_visible(".mainnav")
            assert not page.is_visible("#menu summary")
        page.locator("td.col-subject a", has_text="Résultat d’examen n° 8").click()
        page.wait_for_selector("#security-badge")
        shot(site, page, f"{tag}-lecture", full_page=False)
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        assert page.locator("#msg-subject").bounding_box()["y"] < 200  # the message first
        page.click("#write")
        shot(site, page, f"{tag}-ecrire", full_page=False)
        page.goto(site.url + "/annuaire?nom=Martin")
        shot(site, page, f"{tag}-annuaire", full_page=False)
        page.context.close()


def test_phone_menu_and_drawer_without_javascript(site: Site, browser: Any) -> None:
    """Without script (details/summary and CSS only): the menu and the drawer open, their
    links lead on, the actions on the selection appear once a message is ticked; on a wide
    screen nothing is folded."""
    _submit(site, MARIE, [PAUL], "Sans script", "<p>Texte</p>")
    page = _screen(browser, site, PAUL, PHONE, javascript=False)
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    _wait_row(page, site, f"/courrier/{_box(site, PAUL)}", "Sans script")
    assert not page.is_visible(".folder-list")
    page.click("#drawer summary")
    shot(site, page, "390-dossiers-ouverts", full_page=False, axe=False)
    page.click(".folder-list a:has-text('Messages envoyés')")
    expect(page).to_have_title(re.compile(r"^Messages envoyés — "))
    page.click("#menu summary")
    expect(page.locator(".mainnav")).to_be_visible()
    shot(site, page, "390-menu-ouvert", full_page=False, axe=False)
    page.click(".mainnav a:has-text('Courrier')")
    page.wait_for_url("**/courrier/*")
    expect(page.locator("button:has-text('Marquer lu')")).to_be_hidden()
    page.locator(f"{ROWS} input[name=uid]").first.check()
    expect(page.locator("button:has-text('Marquer lu')")).to_be_visible()
    shot(site, page, "390-selection", full_page=False, axe=False)
    page.context.close()
    page = _screen(browser, site, PAUL, DESKTOP, javascript=False)  # wide: nothing folded
    page.goto(site.url + "/connexion")
    page.click("#card-login")
    page.wait_for_url("**/courrier/*")
    expect(page.locator(".mainnav")).to_be_visible()
    expect(page.locator(".folder-list")).to_be_visible()
    expect(page.locator("#menu summary")).to_be_hidden()
    page.context.close()


def test_logins_land_in_the_inbox_with_unread_counts(site: Site, browser: Any) -> None:
    """Issue #15 item 3: the card login lands in the Boîte de réception, the unread count is in
    the title, the top bar and the box switcher; a hostile ``next`` is ignored, the page that
    asked for the login is given back; the operator lands on the operator pages."""
    _submit(site, PAUL, [JULIE], "Résultats à lire", "<p>Résultats</p>")
    _submit(site, PAUL, [ORG], "Commande à préparer", "<p>Commande</p>")
    crt = site.card(JULIE)
    context = browser.new_context(
        ignore_https_errors=True, locale="fr-FR", viewport={"width": 1280, "height": 900},
        client_certificates=[{"origin": site.url, "certPath": str(crt),
                              "keyPath": str(crt)[:-4] + ".key"}])
    context.set_default_timeout(30_000)
    julie, inbox = context.new_page(), f"{site.url}/courrier/{_box(site, JULIE)}"
    julie.goto(site.url + "/connexion?next=" + "%2F%2Fevil.example")
    julie.click("#card-login")
    julie.wait_for_url(inbox)  # not evil.example
    _wait_row(julie, site, f"/courrier/{_box(site, JULIE)}", "Résultats à lire")
    expect(julie).to_have_title(re.compile(r"^\(\d+\) Boîte de réception — "))
    assert julie.locator(".box-switch .count").count() >= 1
    shot(site, julie, "arrivee-boite-de-reception")
    julie.click("button:has-text('Se déconnecter')")
    sent = f"/courrier/{_box(site, JULIE)}?dossier=Sent"
    julie.goto(site.url + sent)  # a protected page: log in, then back to it
    julie.wait_for_url(re.compile(r"/connexion\?next="))
    julie.click("#card-login")
    julie.wait_for_url(site.url + sent)
    expect(julie).to_have_title(re.compile(r"^Messages envoyés — "))
    context.close()
    ops = _page(browser, site)
    ops.goto(site.url + "/connexion?next=https%3A%2F%2Fevil.example")
    ops.fill("#identifier", OPERATOR)
    ops.fill("#password", PASSWORD)
    ops.click("button:has-text('Continuer')")
    ops.fill("#code", pyotp.TOTP(site.operator_seed).at(time.time() + 30))
    ops.click("button:has-text('Valider')")
    ops.wait_for_url(site.url + "/operateur/inscriptions")
    shot(site, ops, "arrivee-operateur")
    ops.context.close()
