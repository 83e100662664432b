"""``mss demo --pair`` (issue #20 "Operators"): two complete operators on one machine,
``mss.test`` and ``autre.test``, started by the code the command uses (``mss.pair``: the demo
set-up of each, the link both ways, both run in this process) on free ports, nothing of this
process's ``MSS_*``.

- In Debian's Chromium, Marie logs in at mss.test with her password and the one-time code the
  spool received, writes to Paul Durand at autre.test with « Chiffrer » (the compose page says
  end-to-end encryption for him); Paul logs in at autre.test, reads it with the badge "signed,
  verified, received encrypted", replies with « Chiffrer »; Marie reads the reply the same way.
  Screenshots (desktop 1366x850 and 390x844) in tests/artifacts/pair/, axe-core on our pages.
- Over IMAP and SMTP submission with the demo's application passwords (the files the summary
  names), Marie at mss.test and Marie at autre.test exchange a signed and encrypted message
  both ways; each arrives with ``Authentication-Results: <receiving domain>; smime=pass``.
- The command itself, ``python -m mss.cli demo --pair`` on a prepared pair: it reuses the data
  (same CAs), prints both operators' webmail addresses, ports, data directories and where the
  logins are, and SIGINT (Ctrl-C) stops everything it started (no Dovecot, no stand-in left,
  no port still open).
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.mailer import mail_spool
from core.settings import Settings
from mss.app import App
from mss.demo import demo_app_password_file, demo_password_file, operator_totp_file
from mss.pair import PORT_SETTINGS, Running
from tests.mailstore_fixtures import open_tempdir
from tests.pair_fixtures import prepared_pair, running_pair
from tests.webmail_browser_support import check_a11y
from tests.webmail_mail_browser_support import (
    DESKTOP,
    PHONE,
    SKIP_WITHOUT_CHROMIUM,
    chromium,
    compose,
    expect,
)
from trust_space.models import TrustedDomain
from trust_space.whitelist_history import WhitelistChange

ARTIFACTS = Path(__file__).parent / "artifacts" / "pair"
MARIE, PAUL = "marie.martin@mss.test", "paul.durand@autre.test"
MARIE_B = "marie.martin@autre.test"
USUAL = {MARIE: "marie.martin@exemple.fr", PAUL: "paul.durand@exemple.fr"}
ROWS = "td.col-subject a"


@pytest.fixture(scope="module")
def operators() -> Iterator[tuple[Running, Running, Path]]:
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield from running_pair("mss-demo-pair-")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def webmail(op: Running) -> str:
    s = op.settings
    return f"https://{s.hostname}:{s.web_port}"


# ---------------------------------------------------------------------- the browser
class Shots:
    """Numbered screenshots in tests/artifacts/pair/, axe-core on each desktop one."""

    def __init__(self) -> None:
        self.count = 0

    def take(self, page: Any, name: str, *, phone: bool = False, at: str = "") -> None:
        check_a11y(page, f"pair-{name}")
        self._save(page, name, full_page=True)
        if phone:
            page.set_viewport_size(PHONE)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            if at:
                page.locator(at).scroll_into_view_if_needed()
            self._save(page, f"390-{name}", full_page=False)
            page.set_viewport_size(DESKTOP)

    def _save(self, page: Any, name: str, *, full_page: bool) -> None:
        self.count += 1
        page.screenshot(path=str(ARTIFACTS / f"{self.count:02d}-{name}.png"), full_page=full_page)


def _spooled_codes(settings: Settings, to: str) -> list[str]:
    """The one-time codes e-mailed to ``to`` (the spool of the embedded default), oldest
    first."""
    spool = mail_spool(settings.data_dir)
    codes = []
    for path in sorted(spool.glob("*.eml")) if spool.exists() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if to in str(message["To"]):
            found = re.search(r"\b(\d{6})\b", message.get_body().get_content())  # type: ignore[union-attr]
            if found:
                codes.append(found.group(1))
    return codes


def log_in(browser: Any, op: Running, login: str) -> Any:
    """A new desktop browser logged in at ``op``'s webmail with the demo password and the
    code the spool received (the demo's accounts get their code by e-mail)."""
    context = browser.new_context(ignore_https_errors=True, locale="fr-FR", viewport=DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    before = len(_spooled_codes(op.settings, USUAL[login]))
    page.goto(webmail(op) + "/connexion")
    page.fill("#identifier", login)
    page.fill("#password", demo_password_file(op.app).read_text().strip())
    page.click("button:has-text('Continuer')")
    page.wait_for_url("**/connexion/code")
    deadline = time.monotonic() + 20
    while len(codes := _spooled_codes(op.settings, USUAL[login])) <= before:
        assert time.monotonic() < deadline, f"pas de code pour {login} dans le spool"
        time.sleep(0.2)
    page.fill("#code", codes[-1])
    page.click("button:has-text('Valider')")
    page.wait_for_url("**/courrier/*")
    return page


def open_message(page: Any, subject: str, timeout: float = 30) -> None:
    """From the inbox (reloaded until it is there), the message called ``subject``."""
    inbox = page.url
    deadline = time.monotonic() + timeout
    while not page.locator(ROWS, has_text=subject).count():
        assert time.monotonic() < deadline, f"« {subject} » n'est pas arrivé"
        time.sleep(0.5)
        page.goto(inbox)
    page.locator(ROWS, has_text=subject).first.click()
    page.wait_for_selector("#msg-subject")


def expect_protected(page: Any, signer: str) -> None:
    badge = page.locator("#security-badge")
    expect(badge).to_contain_text(f"Signé par {signer}")
    expect(badge).to_contain_text("signature vérifiée dans l’espace de confiance")
    expect(badge).to_contain_text("Reçu chiffré (S/MIME)")
    assert "badge-ok" in (badge.get_attribute("class") or "")


@SKIP_WITHOUT_CHROMIUM
def test_marie_and_paul_exchange_encrypted_mail_in_the_browser(
        operators: tuple[Running, Running, Path], browser: Any) -> None:
    a, b, _ = operators
    shots, subject = Shots(), f"Compte rendu {uuid.uuid4().hex[:6]}"
    marie = log_in(browser, a, MARIE)
    compose(marie, PAUL, subject, "Bonjour Paul,\nle compte rendu de Mme D.\nMarie")
    marie.check("#encrypt")
    peer = marie.locator("#protection li", has_text=PAUL)
    expect(peer).to_have_class(re.compile(r"\bprotection-end_to_end\b"))
    expect(peer).to_contain_text("chiffré de bout en bout (S/MIME)")
    shots.take(marie, "mss-ecrire-chiffrer", phone=True, at="#protection")
    marie.click("#send")
    # The demo keeps the product's « Annuler » delay (10 s): the banner then says it left.
    expect(marie.locator(".held")).to_contain_text("Message en cours d’envoi")
    expect(marie.locator(".flash", has_text="Message envoyé")).to_be_visible(timeout=45_000)

    paul = log_in(browser, b, PAUL)
    open_message(paul, subject)
    expect_protected(paul, MARIE)
    expect(paul.locator("main")).to_contain_text("le compte rendu de Mme D.")
    shots.take(paul, "autre-lecture-protegee", phone=True)
    paul.get_by_role("link", name="Répondre", exact=True).click()
    paul.wait_for_selector("#body")
    paul.fill("#body", "Bien reçu, merci.\n" + paul.input_value("#body"))
    paul.check("#encrypt")
    expect(paul.locator("#protection li", has_text=MARIE)).to_contain_text(
        "chiffré de bout en bout (S/MIME)")
    shots.take(paul, "autre-repondre-chiffrer")
    paul.click("#send")
    # The demo keeps the product's « Annuler » delay (10 s): the banner then says it left.
    expect(paul.locator(".held")).to_contain_text("Message en cours d’envoi")
    expect(paul.locator(".flash", has_text="Message envoyé")).to_be_visible(timeout=45_000)

    marie.goto(webmail(a) + "/courrier")
    open_message(marie, f"RE : {subject}")  # the webmail's French reply prefix
    expect_protected(marie, PAUL)
    expect(marie.locator("main")).to_contain_text("Bien reçu, merci.")
    shots.take(marie, "mss-lecture-reponse", phone=True)
    for page in (marie, paul):
        page.context.close()


# ---------------------------------------------------------------------- IMAP and SMTP
def _context(op: Running) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(op.settings.pki_dir / "ca.pem"))


def _app_password(op: Running, login: str) -> str:
    return demo_app_password_file(op.app, login).read_text().strip()


def submit(op: Running, sender: str, to: str, subject: str) -> None:
    """A practice software's message, signed and encrypted (``MSS-Security``), over
    submission (STARTTLS) with the sender's application password."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@{op.settings.domain}>"
    message["MSS-Security"] = "sign, encrypt"
    message.set_content("Resultats joints, patient 42.\n")
    with smtplib.SMTP("127.0.0.1", op.settings.submission_port, timeout=30) as smtp:
        smtp.starttls(context=_context(op))
        smtp.login(sender, _app_password(op, sender))
        smtp.send_message(message)


def fetch(op: Running, login: str, subject: str, timeout: float = 30) -> bytes:
    """The message called ``subject`` in ``login``'s INBOX over IMAPS (polls)."""
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4_SSL("127.0.0.1", op.settings.imaps_port, ssl_context=_context(op),
                               timeout=10) as imap:
            imap.login(login, _app_password(op, login))
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            if found[0]:
                _, parts = imap.fetch(found[0].split()[-1], "(RFC822)")
                return bytes(parts[0][1])  # type: ignore[index]
        assert time.monotonic() < deadline, f"« {subject} » absent de {login}"
        time.sleep(0.3)


def test_signed_and_encrypted_both_ways_over_imap(
        operators: tuple[Running, Running, Path]) -> None:
    a, b, _ = operators
    subject = f"Resultats {uuid.uuid4().hex[:6]}"
    submit(a, MARIE, MARIE_B, subject)
    raw = fetch(b, MARIE_B, subject)
    results = email.message_from_bytes(raw)["Authentication-Results"]
    assert results.startswith("autre.test;") and "smime=pass (encrypted)" in results
    assert f"body.smime-identity={MARIE}" in results
    assert b"MSS-Security" not in raw and b"Resultats joints, patient 42." in raw

    submit(b, MARIE_B, MARIE, f"Re: {subject}")
    results = email.message_from_bytes(fetch(a, MARIE, f"Re: {subject}"))[
        "Authentication-Results"]
    assert results.startswith("mss.test;") and "smime=pass (encrypted)" in results
    assert f"body.smime-identity={MARIE_B}" in results


# ---------------------------------------------------------------------- the command
def _children(pid: int) -> set[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, pp in parents.items() if pp == parent}
        found |= kids
        todo += list(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_command_prints_both_operators_and_ctrl_c_stops_everything() -> None:
    root = open_tempdir("mss-demo-pair-cmd-")
    first, second = prepared_pair(root)
    settings = [first.settings, second.settings]
    cas = [(s.pki_dir / "ca.pem").read_bytes() for s in settings]
    for app in (first, second):
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    env["MSS_DATA_DIR"] = str(settings[0].data_dir)
    env["PYTHONFAULTHANDLER"] = "1"  # see the SIGABRT below
    log = (root / "stderr.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mss.cli", "demo", "--pair"], env=env,
                            cwd=root, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while not lines or "Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, f"mss demo --pair s'est arrêté : {(root / 'stderr.log').read_text()}"
            assert time.monotonic() < deadline, "mss demo --pair pas prêt en 90 s"
            lines.append(line.rstrip("\n"))
        out = "\n".join(lines)
        for s in settings:
            assert f"== {s.domain}" in out and f"Données : {s.data_dir}" in out
            assert f"https://{s.hostname}:{s.web_port}/" in out
            for name in PORT_SETTINGS:
                port = s.oidc_standin_port if name == "oidc_standin_port" else getattr(s, name)
                assert re.search(rf"[:\s]{port}\b", out), f"{s.domain} {name} {port}"
                assert _answers(port), f"{s.domain} {name} {port} ne répond pas"
            app = App(s)
            assert str(demo_password_file(app)) in out and str(operator_totp_file(app)) in out
            assert demo_password_file(app).read_text().strip() not in out  # where, never what
        assert "https://localhost:" in out and "https://127.0.0.1:" in out
        assert "paul.durand@autre.test" in out and "Chiffrer" in out
        children = _children(proc.pid)
        assert len(children) >= 4  # two Dovecot masters (with their own children), two stand-ins

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            assert proc.wait(60) == 0
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler's dump on SIGABRT
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
            raise AssertionError("Ctrl-C n'a pas arrêté mss demo --pair :\n"
                                 + (root / "stderr.log").read_text()[-6000:]) from None
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)], "des processus restent"
        for s in settings:
            for name in ("web_port", "imaps_port", "relay_port"):
                assert not _answers(getattr(s, name))
        # the command reused both operators (the data of the first set-up, not new ones), and
        # linking them again changed nothing: one whitelist entry, one change in its history
        assert [(s.pki_dir / "ca.pem").read_bytes() for s in settings] == cas
        for s, peer in zip(settings, reversed(settings), strict=True):
            app = App(s)
            with app.db.transaction() as session:
                domains = session.scalars(select(TrustedDomain.domain)).all()
                changes = session.scalar(select(func.count()).select_from(WhitelistChange))
            app.close()
            assert (domains, changes) == ([peer.domain], 1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
