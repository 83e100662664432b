"""Issue #15, the first hour of a professional, walked in Debian's Chromium against the whole
service (``mss run``, role ``all``, no smarthost: codes and notices go to the file spools as on
the embedded default). One journey per item the other browser modules do not walk: the
settings that could lock a user out (1), "Chiffrer" told per recipient and shown in Sent (5),
the notice of a new message in the spool and the Paris hour in the reply (6, 7, and the issue's
"done means"), the operator's receipt and the timeline in sentences (8), and the small ones (9).
Each step is looked at as a person sees it: screenshots (desktop, and 390x844 where the page
changes on a phone) in tests/artifacts/webmail/debut-*.png, axe-core on each.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core.localtime import paris
from core.mailer import mail_spool
from tests.webmail_mail_browser_support import (
    MARIE,
    ORG,
    PAUL,
    PEER,
    PHONE,
    SKIP_WITHOUT_CHROMIUM,
    Site,
    box_of,
    chromium,
    compose,
    expect,
    page_for,
    running_site,
    shot,
    until,
    wait_row,
)
from trust_space.models import Account, Mailbox, OtpChannel, Professional

pytestmark = SKIP_WITHOUT_CHROMIUM
DESKTOP_SIZE = {"width": 1280, "height": 900}
QUOTE = re.compile(r"Le (\d\d/\d\d/\d{4} à \d\d:\d\d), ")
SENTENCE = re.compile(r"Remis à Paul Durand le (\d\d/\d\d à \d\d:\d\d)\.")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from running_site("debut")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _phone_shot(site: Site, page: Any, name: str, at: str = "") -> None:
    """The same page on a phone (390x844), scrolled to ``at`` if given: nothing wider than
    the screen; then back to the desktop size."""
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    if at:
        page.locator(at).scroll_into_view_if_needed()
    shot(site, page, f"390-{name}", full_page=False)
    page.set_viewport_size(DESKTOP_SIZE)


def _minutes(start: datetime, end: datetime, fmt: str) -> set[str]:
    """Every Paris-time minute between ``start`` and ``end`` (UTC), formatted with ``fmt``."""
    out, at = set(), start.replace(second=0, microsecond=0)
    while at <= end:
        out.add(f"{paris(at):{fmt}}")
        at += timedelta(minutes=1)
    return out


def _spooled(site: Site, to: str) -> list[email.message.EmailMessage]:
    spool = mail_spool(site.settings.data_dir)
    found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted(spool.glob("*.eml"))] if spool.exists() else []
    return [m for m in found if to in str(m["To"])]  # type: ignore[misc]


def _sms_code(site: Site, to: str) -> str:
    spool = site.settings.data_dir / "spool" / "sms"

    def newest() -> str:
        for path in sorted(spool.glob("*.json"), reverse=True):
            data = json.loads(path.read_text())
            if data["to"] == to:
                return str(data["text"])
        return ""

    until(lambda: bool(newest()))
    return re.search(r"\b(\d{6})\b", newest()).group(1)  # type: ignore[union-attr]


def _account(site: Site, address: str) -> tuple[OtpChannel, str]:
    with site.app.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == address))
        assert account is not None and account.professional is not None
        return account.otp_channel, account.professional.mobile


def _open(page: Any, site: Site, address: str, subject: str, folder: str = "INBOX") -> None:
    url = f"/courrier/{box_of(site, address)}?dossier={folder}"
    wait_row(page, site, url, subject)
    page.locator("td.col-subject a", has_text=subject).first.click()
    page.wait_for_selector("#msg-subject")


# ---------------------------------------------------------------------- item 1
def test_a_settings_form_cannot_lock_marie_out(site: Site, browser: Any) -> None:
    """SMS chosen with no number: the error is on the field and nothing changes. A new
    number is used only once the code sent to it is typed; a wrong code changes nothing."""
    marie = page_for(browser, site, MARIE)
    before = _account(site, MARIE)
    try:
        marie.goto(site.url + "/compte/code")
        marie.check("input[name=channel][value=sms]")
        marie.fill("#mobile", "")
        marie.click("button:has-text('Enregistrer')")
        expect(marie.locator("#mobile-err")).to_contain_text("Indiquez votre numéro de mobile")
        assert _account(site, MARIE) == before  # neither the channel nor the number changed
        shot(site, marie, "code-sms-sans-numero")
        number = "06 12 34 56 78"
        marie.fill("#mobile", number)
        marie.click("button:has-text('Enregistrer')")
        marie.wait_for_url("**/compte/confirmer")
        sent = marie.inner_text("#confirm-sent")
        assert "78" in sent and number not in sent  # the number shown masked
        assert _account(site, MARIE) == before  # not used before its code
        marie.fill("#code", "000000")
        marie.click("button:has-text('Confirmer')")
        expect(marie.locator(".flash-error")).to_contain_text("incorrect")
        assert _account(site, MARIE) == before
        _phone_shot(site, marie, "code-confirmer")
        marie.fill("#code", _sms_code(site, number))
        marie.click("button:has-text('Confirmer')")
        marie.wait_for_url("**/compte/code")
        expect(marie.locator(".flash")).to_contain_text("enregistré")
        assert _account(site, MARIE) == (OtpChannel.SMS, number)
        assert marie.is_checked("input[name=channel][value=sms]")
        shot(site, marie, "code-sms-confirme")
    finally:
        with site.app.db.transaction() as session:
            account = session.scalar(select(Account).where(Account.login == MARIE))
            account.otp_channel = before[0]  # type: ignore[union-attr]
            account.professional.mobile = before[1]  # type: ignore[union-attr]
        marie.context.close()


# ---------------------------------------------------------------------- items 6 and 7
def test_notice_in_the_spool_then_the_reply_quotes_the_paris_hour(
        site: Site, browser: Any) -> None:
    """The issue's "done means": Marie asks for notices, Paul writes to her in the browser, a
    notice reaches her usual address through the spool (no subject, no sender, the Paris
    hour), and her reply quotes the hour in Paris time (UTC+1 in winter, UTC+2 in summer)."""
    marie = page_for(browser, site, MARIE)
    with site.app.db.transaction() as session:
        usual = session.scalar(select(Professional.usual_email).join(
            Mailbox, Mailbox.professional_id == Professional.id).where(
            Mailbox.address == MARIE))
    assert usual
    try:
        marie.goto(site.url + "/compte/preferences")
        marie.check("#notify")
        marie.click("button:has-text('Enregistrer mes préférences')")
        expect(marie.locator(".flash")).to_contain_text("enregistr")
        assert marie.is_checked("#notify")
        shot(site, marie, "preferences-avis")
        notices = len(_spooled(site, usual))
        paul = page_for(browser, site, PAUL)
        start = datetime.now(UTC)
        compose(paul, MARIE, "Ordonnance de Mme Petit",
                "Bonjour Marie,\nje renouvelle le traitement.\nPaul")
        paul.click("#send")
        expect(paul.locator(".flash")).to_contain_text("Message envoyé")
        until(lambda: len(_spooled(site, usual)) > notices)
        end = datetime.now(UTC)
        notice = _spooled(site, usual)[notices]
        words = notice.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert notice["Subject"] == "Nouveau message sécurisé"
        assert "Ordonnance" not in notice.as_string() and PAUL not in notice.as_string()
        hour = re.search(r"le (\d\d/\d\d/\d{4} à \d\d:\d\d)", words)
        assert hour and hour.group(1) in _minutes(start, end, "%d/%m/%Y à %H:%M"), words
        assert site.url.split("//")[1].split(":")[0] in words  # the way to the webmail
        _open(marie, site, MARIE, "Ordonnance de Mme Petit")
        shot(site, marie, "lecture-ordonnance")
        marie.click("a:has-text('Répondre')")
        quoted = QUOTE.search(marie.input_value("#body"))
        assert quoted and quoted.group(1) in _minutes(start, end, "%d/%m/%Y à %H:%M")
        utc = {f"{at:%H:%M}" for at in (start, end)}
        assert not any(f"à {u}, " in marie.input_value("#body") for u in utc)  # not UTC
        shot(site, marie, "reponse-heure-de-paris")
        _phone_shot(site, marie, "reponse")
        paul.context.close()
    finally:
        with site.app.db.transaction() as session:
            session.execute(update(Mailbox).where(Mailbox.address == MARIE)
                            .values(notify_usual_email=False))
        marie.context.close()


# ---------------------------------------------------------------------- item 5
def test_chiffrer_is_told_per_recipient_and_sent_shows_what_was_done(
        site: Site, browser: Any) -> None:
    marie = page_for(browser, site, MARIE)
    compose(marie, f"{PAUL}, dr.martin@{PEER}", "Compte rendu opératoire", "Bonjour.")
    marie.check("#encrypt")
    internal = marie.locator("#protection li.protection-internal")
    expect(internal).to_contain_text(PAUL)
    expect(internal).to_contain_text("sans quitter ses serveurs")
    peer = marie.locator("#protection li", has_text=f"dr.martin@{PEER}")
    expect(peer).to_contain_text("pas de certificat de chiffrement publié")  # said before sending
    shot(site, marie, "ecrire-protection-par-destinataire")
    _phone_shot(site, marie, "ecrire-protection", at="#protection")
    marie.uncheck("#encrypt")
    expect(peer).to_contain_text("espace de confiance")
    expect(peer).not_to_contain_text("pas de certificat")
    marie.fill("#to", PAUL)  # the peer's relay does not answer in this test: Paul alone
    marie.check("#encrypt")
    expect(marie.locator("#protection li")).to_have_count(1)
    marie.click("#send")
    expect(marie.locator(".flash")).to_contain_text("Message envoyé")
    _open(marie, site, MARIE, "Compte rendu opératoire", folder="Sent")
    timeline = marie.locator("section.timeline")
    expect(timeline).to_contain_text("remis chez votre opérateur sans quitter ses serveurs")
    expect(marie.locator("main")).not_to_contain_text("Reçu sans chiffrement")
    shot(site, marie, "envoyes-protection")
    paul = page_for(browser, site, PAUL)
    _open(paul, site, PAUL, "Compte rendu opératoire")
    badge = paul.inner_text("#security-badge")
    assert "Message interne à votre opérateur" in badge and "sans chiffrement" not in badge
    shot(site, paul, "lecture-message-interne")
    paul.context.close()
    marie.context.close()


def test_the_protection_list_never_shows_what_is_no_longer_asked(
        site: Site, browser: Any) -> None:
    """« Chiffrer » ticked while the network hiccups: the list is asked again, and when the
    server does not answer it says so, never the protection of the box left unticked (a CI
    run once kept « Signé, transmis… » under a ticked « Chiffrer »)."""
    marie = page_for(browser, site, MARIE)
    compose(marie, f"dr.martin@{PEER}", "Protection et réseau", "Bonjour.")
    box = marie.locator("#protection")
    peer = box.locator("li", has_text=f"dr.martin@{PEER}")
    expect(peer).to_contain_text("espace de confiance")
    asked = re.compile(r"/protection\?")
    failures = {"left": 2, "seen": 0}

    def flaky(route: Any) -> None:
        failures["seen"] += 1
        if failures["left"]:
            failures["left"] -= 1
            route.abort("connectionreset")
        else:
            route.continue_()

    marie.route(asked, flaky)
    marie.check("#encrypt")
    expect(peer).to_contain_text("pas de certificat de chiffrement publié", timeout=10_000)
    assert failures == {"left": 0, "seen": 3}
    expect(box).not_to_have_attribute("aria-busy", "true")
    marie.unroute(asked)
    marie.route(asked, lambda route: route.fulfill(status=502, body="Bad Gateway"))
    marie.uncheck("#encrypt")
    expect(box).to_have_attribute("aria-busy", "true")  # the old line is not the answer
    expect(box).to_contain_text("Protection non vérifiée pour l’instant", timeout=15_000)
    expect(box).not_to_contain_text("pas de certificat")
    expect(box).not_to_contain_text("espace de confiance")
    marie.unroute(asked)
    marie.fill("#to", f"{PAUL}, dr.martin@{PEER}")  # typing again asks again
    expect(peer).to_contain_text("espace de confiance")
    expect(box.locator("li.protection-internal")).to_contain_text(PAUL)
    marie.context.close()


# ---------------------------------------------------------------------- item 8
def test_one_receipt_from_the_operator_and_a_timeline_in_sentences(
        site: Site, browser: Any) -> None:
    marie = page_for(browser, site, MARIE)
    start = datetime.now(UTC)
    compose(marie, PAUL, "Demande d’avis cardiologique", "Bonjour Paul.")
    marie.check("#receipt")
    marie.click("#send")
    expect(marie.locator(".flash")).to_contain_text("Message envoyé")
    inbox = f"/courrier/{box_of(site, MARIE)}"
    wait_row(marie, site, inbox, "Accusé de réception")
    time.sleep(1.5)  # a second receipt for the same delivery would arrive with the first
    marie.goto(site.url + inbox)
    expect(marie.locator("td.col-subject a", has_text="Accusé de réception")).to_have_count(1)
    row = marie.locator("tr", has_text="Accusé de réception")
    assert "non vérifié" not in row.inner_text()
    shot(site, marie, "accuse-dans-la-liste")
    row.locator("td.col-subject a").click()
    badge = marie.inner_text("#security-badge")
    assert "Accusé de réception émis par votre opérateur" in badge
    assert "Non vérifié" not in marie.inner_text("main")
    text = marie.frame_locator("iframe.msg-frame").locator("body").inner_text() \
        if marie.locator("iframe.msg-frame").count() else marie.inner_text("article")
    assert "-- English --" not in text
    assert any(m in text for m in _minutes(start, datetime.now(UTC), "%d/%m/%Y à %H:%M")), text
    shot(site, marie, "accuse-de-l-operateur")
    _open(marie, site, MARIE, "Demande d’avis cardiologique", folder="Sent")
    steps = marie.inner_text("section.timeline")
    said = SENTENCE.search(steps)
    assert said and said.group(1) in _minutes(start, datetime.now(UTC), "%d/%m à %H:%M"), steps
    assert "(250)" not in steps
    shot(site, marie, "envoyes-suivi-en-phrases")
    _phone_shot(site, marie, "suivi", at="section.timeline")
    marie.context.close()


# ---------------------------------------------------------------------- item 9
def test_the_small_things_a_hurried_user_meets(site: Site, browser: Any) -> None:
    paul = page_for(browser, site, PAUL)
    compose(paul, MARIE, "Petit fichier", "Voici la note.")
    paul.set_input_files("#attachments", files=[{"name": "note.txt", "mimeType": "text/plain",
                                                 "buffer": b"x" * 602}])
    paul.click("#send")
    expect(paul.locator(".flash")).to_contain_text("Message envoyé")
    marie = page_for(browser, site, MARIE)
    inbox = f"/courrier/{box_of(site, MARIE)}"
    wait_row(marie, site, inbox, "Petit fichier")
    assert marie.input_value("#cible") == ""  # "Déplacer vers" selects no folder by itself
    marie.locator("td.col-subject a", has_text="Petit fichier").click()
    expect(marie.locator(".attachments")).to_contain_text("602 octets")
    assert "0,0 Mo" not in marie.inner_text(".attachments")
    shot(site, marie, "piece-jointe-602-octets")
    marie.click("button:has-text('Supprimer')")
    marie.goto(site.url + f"{inbox}/corbeille/vider")
    assert "Le message de la Corbeille" in marie.inner_text("main")  # one: no "(s)"
    expect(marie.locator(".folder-list")).to_be_visible()  # the folders stay
    shot(site, marie, "vider-la-corbeille")
    marie.click("a:has-text('Annuler')")

    marie.goto(site.url + "/annuaire?nom=Bernard")
    expect(marie.locator("main")).to_contain_text("Infirmière")
    shot(site, marie, "annuaire-infirmiere")

    # Password change refused by the server: the new password is not sent back; the rules
    # wait (no ✗ on an empty field) and the page says to type it again.
    marie.goto(site.url + "/compte/mot-de-passe")
    marie.fill("#current", "Pas-le-bon-1")
    marie.fill("#new", "Nouveau-Passw0rd")
    marie.fill("#confirm", "Nouveau-Passw0rd")
    marie.click("button:has-text('Enregistrer')")
    expect(marie.locator("#current-err")).to_contain_text("incorrect")
    assert marie.input_value("#new") == ""
    expect(marie.locator("#new-again")).to_be_visible()
    marks = marie.evaluate("[...document.querySelectorAll('#new-rules li')].map("
                           "li => getComputedStyle(li, '::before').content)")
    assert marks and all("✗" not in m for m in marks), marks
    shot(site, marie, "mot-de-passe-a-ressaisir")
    marie.type("#new", "abc")
    expect(marie.locator("#new-rules li[data-rule=lower].ok")).to_have_count(1)
    marks = marie.evaluate("[...document.querySelectorAll('#new-rules li:not(.ok)')].map("
                           "li => getComputedStyle(li, '::before').content)")
    assert marks and all("✗" in m for m in marks), marks
    marie.context.close()

    # The pharmacy's administrator: removing a collaborator asks first; demoting the last
    # administrator is explained in the form, not a bare "Code 409".
    paul.goto(site.url + f"/organisations/{box_of(site, ORG)}")
    paul.click("a[aria-label='Retirer Julie Bernard']")
    expect(paul.locator("h1")).to_contain_text("Retirer Julie Bernard ?")
    shot(site, paul, "retirer-confirmation")
    paul.click("a:has-text('Annuler')")
    expect(paul.locator("main")).to_contain_text("Julie Bernard")
    with site.app.db.transaction() as session:
        paul_id = session.scalar(select(Professional.id).join(
            Mailbox, Mailbox.professional_id == Professional.id).where(Mailbox.address == PAUL))
    paul.select_option(f"#role-{paul_id}", "user")
    paul.locator(f"form:has(#role-{paul_id}) button").click()
    flash = paul.inner_text(".flash")
    assert "administrateur" in flash.lower() and "409" not in paul.inner_text("main")
    shot(site, paul, "dernier-administrateur")
    paul.context.close()
