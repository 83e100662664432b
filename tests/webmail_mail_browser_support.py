"""The running service for the mail journeys in a real browser: ``mss run`` (role ``all``:
Dovecot, the gateway, the webmail) on a demo data directory, everything on 127.0.0.1, with no
smarthost (notices and codes go to the file spools, as on the embedded default), and Debian's
Chromium driven by Playwright. People log in with their demo CPS certificates (client
certificate in the browser), the operator with password + TOTP. Each test module starts its own
service and writes its screenshots to tests/artifacts/webmail/<prefix>-*.png.
"""

from __future__ import annotations

import email.policy
import email.utils
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

import pytest
from sqlalchemy import delete, select

from core.settings import Settings
from mss.app import App
from mss.demo import setup_demo
from mss.psc_standin import demo_settings
from mss.run import run
from tests.mailstore_fixtures import free_port, open_tempdir
from tests.webmail_browser_support import check_a11y
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, Mailbox, OtpChannel, TrustedDomain
from trust_space.models import Operator as PeerOperator
from webmail.auth import otp

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
CHROMIUM = "/usr/bin/chromium"
SKIP_WITHOUT_CHROMIUM = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                           reason="chromium absent")
ARTIFACTS = Path(__file__).parent / "artifacts" / "webmail"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "Demo-Passw0rd"
OPERATOR, SEED = "operateur@mss.test", "KRUGS4ZANFZSA4TFMNZGK5DTMVRXEZLU"
MARIE, PAUL, JULIE = "marie.martin@mss.test", "paul.durand@mss.test", "julie.bernard@mss.test"
ORG = "pharma.ducentre.64000@mss.test"
PEER = "pair.test"
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 850}
ROWS = ".msg-table tbody tr"


@dataclass
class Site:
    url: str
    settings: Settings
    app: App
    operator_seed: str
    prefix: str
    shots: list[str] = field(default_factory=list)

    def card(self, address: str) -> Path:
        return self.settings.demo_dir / f"{address}.crt"


def running_site(prefix: str, *, psc: bool = False) -> Iterator[Site]:
    """The service for one test module (its fixture yields from this); its screenshots are
    ``<prefix>-NN-name.png``, the old ones removed first. ``psc``: with the Pro Santé Connect
    stand-in (mss/psc_standin.py) started by ``mss run`` and the webmail pointed at it, as the
    demo does."""
    root = open_tempdir(f"mss-webmail-{prefix}-browser-")
    ports = {name: free_port() for name in ("web_port", "submission_port", "submissions_port",
                                            "relay_port", "imap_port", "imaps_port",
                                            "managesieve_port")}
    settings = Settings.load(data_dir=root / "data", environ={}, demo_password=PASSWORD,
                             listen_address="127.0.0.1", hostname="localhost", metrics_port=0,
                             retry_base_seconds=3600, imap_smtp_web_password=True,
                             whitelist_url="",  # no fetch from the internet
                             undo_send_seconds=0,  # at once, unless a test chooses a delay
                             **ports)
    if psc:
        settings = settings.replace(**demo_settings(settings, free_port()))
    app = App(settings)
    report = setup_demo(app)
    seed = _operator_and_peer(app, getattr(report, "operator_totp", ""))
    for old in ARTIFACTS.glob(f"{prefix}-*.png"):
        old.unlink()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "all"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(60), "mss run did not start"
    yield Site(f"https://localhost:{settings.web_port}", settings, app, seed, prefix)
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


def chromium() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), for one test module's fixture."""
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def page_for(browser: Any, site: Site, who: str | None = None, *, width: int = 1280) -> Any:
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
        check_a11y(page, f"{site.prefix}-{name}")
    site.shots.append(name)
    page.screenshot(path=str(ARTIFACTS / f"{site.prefix}-{len(site.shots):02d}-{name}.png"),
                    full_page=full_page)


def box_of(site: Site, address: str) -> int:
    with site.app.db.transaction() as session:
        return int(session.scalar(select(Mailbox.id).where(Mailbox.address == address)))


def wait_row(page: Any, site: Site, url: str, subject: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(site.url + url)
        if page.locator("td.col-subject a", has_text=subject).count():
            return
        time.sleep(0.3)
    raise AssertionError(f"{subject} n'est pas arrivé ({url})")


def submit(site: Site, sender: str, to: list[str], subject: str, html: str,
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


def compose(page: Any, to: str, subject: str, body: str) -> None:
    page.click("#write")
    page.fill("#to", to)
    page.fill("#subject", subject)
    page.fill("#body", body)



def until(probe: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("délai dépassé")
        time.sleep(0.3)


PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 850}
ROWS = ".msg-table tbody tr"


def screen(browser: Any, site: Site, who: str, size: dict[str, int], *,
            javascript: bool = True) -> Any:
    crt = site.card(who)
    context = browser.new_context(
        ignore_https_errors=True, locale="fr-FR", viewport=size, is_mobile=size is PHONE,
        java_script_enabled=javascript,
        client_certificates=[{"origin": site.url, "certPath": str(crt),
                              "keyPath": str(crt)[:-4] + ".key"}])
    context.set_default_timeout(30_000)
    return context.new_page()


