"""The mail views end to end through Flask's test client, on a real Dovecot and gateway:
send with an attachment and read it back with its security badge, reply, delete / restore /
empty the Corbeille, search, drafts, folders, the trust-space check of recipients, the
"pièce jointe" reminder and a gateway refusal that loses nothing."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import (
    address,
    box_id,
    compose,
    post_form,
    text,
    wait_until,
)

pytest_plugins = ["tests.webmail_mail_fixtures"]
PDF = (b"%PDF-1.4 bilan sanguin", "bilan.pdf", "application/pdf")


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul", "julie", "org")}


def _inbox_has(client: FlaskClient, box: int, words: str, folder: str = "INBOX") -> bool:
    return words in text(client.get(f"/courrier/{box}?dossier={folder}"))


def _uid_of(client: FlaskClient, box: int, subject: str, folder: str = "INBOX") -> int:
    """The UID of the newest message with ``subject`` in a folder, read from the list."""
    page = text(client.get(f"/courrier/{box}?dossier={folder}"))
    for uid, title in re.findall(r'<a href="[^"]*/message/(\d+)\?dossier=[^"]*">([^<]*)</a>',
                                 page):
        if title.strip() == subject:
            return int(uid)
    raise AssertionError(f"{subject} absent de {folder}")


def test_send_read_badge_download_and_reply(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, paul = as_user("marie"), as_user("paul")
    form = text(marie.get(f"/courrier/{boxes['marie']}/ecrire"))
    assert 'id="sign" name="sign" value="y" checked disabled' in form  # policy: sign
    assert "Taille maximale" in form and "pour l’ensemble des pièces jointes" in form
    sent = compose(marie, boxes["marie"], [PDF], to="paul.durand@mss.test",
                   subject="Bilan de M. X", body="Voici le bilan en pièce jointe.",
                   encrypt="y")
    assert sent.status_code == 302, text(sent)
    wait_until(lambda: _inbox_has(paul, boxes["paul"], "Bilan de M. X"))
    listing = text(paul.get(f"/courrier/{boxes['paul']}"))
    assert '<tr class="unread"' in listing and "✔ signé" in listing and ">PJ<" in listing
    uid = _uid_of(paul, boxes["paul"], "Bilan de M. X")
    page = text(paul.get(f"/courrier/{boxes['paul']}/message/{uid}?dossier=INBOX"))
    assert "Signé par marie.martin@mss.test" in page and "badge-ok" in page
    assert "bilan.pdf" in page and "application/pdf" in page
    raw = mail_operator.messages(address("paul"))[-1]
    assert email.message_from_bytes(raw)["MSS-Security"] is None  # consumed by the gateway
    link = re.search(r'href="([^"]+/piece/\d+\?dossier=INBOX)"', page).group(1)  # type: ignore[union-attr]
    download = paul.get(link)
    assert download.status_code == 200 and download.data == PDF[0]
    assert download.headers["Content-Disposition"].startswith('attachment; filename="bilan.pdf"')
    reply = text(paul.get(f"/courrier/{boxes['paul']}/ecrire?reponse={uid}&dossier=INBOX"))
    assert 'value="marie.martin@mss.test"' in reply and "RE : Bilan de M. X" in reply
    assert "&gt; Voici le bilan en pièce jointe." in reply
    answer = compose(paul, boxes["paul"], to="marie.martin@mss.test",
                     subject="RE : Bilan de M. X", body="Bien reçu, merci.\n\n> Voici le bilan "
                     "en pièce jointe.", reply_uid=str(uid), source_folder="INBOX")
    assert answer.status_code == 302, text(answer)
    wait_until(lambda: _inbox_has(marie, boxes["marie"], "RE : Bilan de M. X"))
    assert "↩ répondu" in text(paul.get(f"/courrier/{boxes['paul']}"))  # \Answered


def test_forward_keeps_attachments_and_reply_to_all(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    paul, julie = as_user("paul"), as_user("julie")
    uid = _uid_of(paul, boxes["paul"], "Bilan de M. X")
    page = text(paul.get(f"/courrier/{boxes['paul']}/ecrire?transfert={uid}&dossier=INBOX"))
    assert "TR : Bilan de M. X" in page and "Message transféré" in page
    keep = re.search(r'name="keep" value="(\d+)" checked', page).group(1)  # type: ignore[union-attr]
    sent = compose(paul, boxes["paul"], to="julie.bernard@mss.test", subject="TR : Bilan de M. X",
                   body="Pour information.", source_folder="INBOX", source_uid=str(uid),
                   keep=keep)
    assert sent.status_code == 302, text(sent)
    wait_until(lambda: _inbox_has(julie, boxes["julie"], "TR : Bilan de M. X"))
    got = _uid_of(julie, boxes["julie"], "TR : Bilan de M. X")
    assert "bilan.pdf" in text(julie.get(f"/courrier/{boxes['julie']}/message/{got}"))
    everyone = text(julie.get(f"/courrier/{boxes['julie']}/ecrire?reponse={got}&tous=1"
                              "&dossier=INBOX"))
    assert 'value="paul.durand@mss.test"' in everyone  # the sender; not Julie herself
    assert "julie.bernard@mss.test" not in re.search(  # type: ignore[union-attr]
        r'id="to"[^>]*value="([^"]*)"', everyone).group(1)


def test_delete_restore_and_empty_the_corbeille(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    box = boxes["marie"]
    uid = _uid_of(marie, box, "RE : Bilan de M. X")
    moved = post_form(marie, f"/courrier/{box}/supprimer", {"dossier": "INBOX", "uid": uid})
    assert moved.status_code == 302
    assert not _inbox_has(marie, box, "RE : Bilan de M. X")
    assert _inbox_has(marie, box, "RE : Bilan de M. X", "Trash")
    trash_uid = _uid_of(marie, box, "RE : Bilan de M. X", "Trash")
    post_form(marie, f"/courrier/{box}/restaurer", {"dossier": "Trash", "uid": trash_uid})
    assert _inbox_has(marie, box, "RE : Bilan de M. X")
    assert not _inbox_has(marie, box, "RE : Bilan de M. X", "Trash")
    again = _uid_of(marie, box, "RE : Bilan de M. X")
    post_form(marie, f"/courrier/{box}/supprimer", {"dossier": "INBOX", "uid": again})
    confirm = text(marie.get(f"/courrier/{box}/corbeille/vider"))
    assert "Vider la corbeille ?" in confirm and "définitivement" in confirm
    kept = post_form(marie, f"/courrier/{box}/corbeille/vider", {"dossier": "Trash"})
    assert kept.status_code == 302 and _inbox_has(marie, box, "RE : Bilan de M. X", "Trash")
    post_form(marie, f"/courrier/{box}/corbeille/vider", {"dossier": "Trash", "confirmer": "oui"})
    assert "Aucun message dans ce dossier" in text(marie.get(f"/courrier/{box}?dossier=Trash"))


def test_search_in_a_folder_or_everywhere(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    paul = as_user("paul")
    box = boxes["paul"]

    def found(**args: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in args.items())
        return text(paul.get(f"/courrier/{box}/recherche?{query}"))

    # The full-text index takes the new messages in the background (mailstore.fts): a
    # message delivered a moment ago is found once the indexer has written it.
    wait_until(lambda: "Bilan de M. X" in found(q="bilan"))
    assert "Bilan de M. X" in found(de="marie.martin")
    assert "Bilan de M. X" in found(a="paul.durand", pj="1")
    assert "0 résultat" in found(de="julie.bernard")
    assert "Bilan de M. X" in found(depuis="2000-01-01", avant="2099-12-31")  # 1990-2100
    assert "invalide" in found(avant="2999-12-31")
    assert "0 résultat" in found(avant="2000-01-01")
    assert "0 résultat" in found(q="bilan", non_lus="1")  # read above
    assert "Bilan de M. X" not in found(q="Bien reçu")
    everywhere = str(wait_until(lambda: (lambda page: page if "RE : Bilan de M. X" in page
                                         else "")(found(q="Bien reçu", portee="tous"))))
    assert "RE : Bilan de M. X" in everywhere and "Messages envoyés" in everywhere


def test_draft_saved_listed_then_sent(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie, paul = as_user("marie"), as_user("paul")
    box = boxes["marie"]
    saved = compose(marie, box, [PDF], action="brouillon", to="paul.durand@mss.test",
                    subject="Courrier en préparation", body="Premier jet.")
    assert saved.status_code == 302 and "brouillon=" in saved.headers["Location"]
    drafts = text(marie.get(f"/courrier/{box}?dossier=Drafts"))
    assert "Courrier en préparation" in drafts and "ecrire?brouillon=" in drafts
    page = text(marie.get(saved.headers["Location"]))
    assert "Premier jet." in page and 'name="keep"' in page and "bilan.pdf" in page
    draft_uid = re.search(r'name="draft_uid" type="hidden" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
    keep = re.search(r'name="keep" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
    sent = compose(marie, box, to="paul.durand@mss.test", subject="Courrier en préparation",
                   body="Version finale.", draft_uid=draft_uid, source_folder="Drafts",
                   source_uid=draft_uid, keep=keep)
    assert sent.status_code == 302, text(sent)
    assert "Courrier en préparation" not in text(marie.get(f"/courrier/{box}?dossier=Drafts"))
    wait_until(lambda: _inbox_has(paul, boxes["paul"], "Courrier en préparation"))
    uid = _uid_of(paul, boxes["paul"], "Courrier en préparation")
    assert "bilan.pdf" in text(paul.get(f"/courrier/{boxes['paul']}/message/{uid}"))


def test_recipients_outside_the_trust_space_are_refused_in_the_form(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    answer = compose(marie, boxes["marie"], to="paul.durand@mss.test, docteur@gmail.com",
                     cc="pas une adresse", subject="Résultats", body="Texte conservé.")
    page = text(answer)
    assert answer.status_code == 422
    assert "« docteur@gmail.com » est hors de l’espace de confiance MSSanté" in page
    assert "Adresse illisible : « pas une adresse »" in page
    assert "Texte conservé." in page and 'value="Résultats"' in page
    suspended = compose(marie, boxes["marie"], to="hugo.blanc@mss.test", subject="s", body="b")
    assert "Boîte aux lettres suspendue" in text(suspended)


def test_attachment_reminder(boxes: dict[str, int],
                             as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    fields = {"to": "paul.durand@mss.test", "subject": "Ordonnance",
              "body": "Vous trouverez ci-joint l'ordonnance."}
    first = compose(marie, boxes["marie"], **fields)
    assert first.status_code == 422 and "mentionne une pièce jointe" in text(first)
    second = compose(marie, boxes["marie"], confirm_no_attachment="y", **fields)
    assert second.status_code == 302


def test_gateway_refusal_is_shown_and_nothing_is_lost(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    big = ("x" * 76 + "\n") * 4000  # ~300 KB of text: over the gateway's 400 KB once joined
    answer = compose(marie, boxes["marie"], [(b"y" * 200_000, "scan.pdf", "application/pdf")],
                     to="paul.durand@mss.test", subject="Trop gros", body=big)
    page = text(answer)
    assert answer.status_code == 422
    assert "Envoi refusé" in page and "le message est trop volumineux" in page
    assert 'value="Trop gros"' in page and "scan.pdf" in page  # kept through a draft
    assert "enregistré dans « Brouillons »" in page
    assert "Trop gros" in text(marie.get(f"/courrier/{boxes['marie']}?dossier=Drafts"))


def test_user_folders(boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    url = f"/courrier/{boxes['marie']}/dossiers"
    post_form(marie, url, {"operation": "create", "nom": "Patients 2026"})
    assert "Patients 2026" in text(marie.get(url))
    bad = post_form(marie, url, {"operation": "create", "nom": "a/../b"}, follow_redirects=True)
    assert "Nom de dossier invalide" in text(bad)
    post_form(marie, url, {"operation": "rename", "dossier": "Patients 2026", "nom": "Archives"})
    page = text(marie.get(url))
    assert "Archives" in page and "Patients 2026" not in page
    special = post_form(marie, url, {"operation": "delete", "dossier": "Sent"},
                        follow_redirects=True)
    assert "dossiers spéciaux" in text(special)
    post_form(marie, url, {"operation": "delete", "dossier": "Archives"})
    assert "dossier=Archives" not in text(marie.get(url))


def test_organisational_mailbox_within_the_role(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    julie = as_user("julie")
    org = boxes["org"]
    home = text(julie.get(f"/courrier/{boxes['julie']}"))
    assert "Pharmacie du Centre" in home and "Utilisateur" in home
    sent = compose(julie, org, to="marie.martin@mss.test", subject="Commande prête",
                   body="La commande est prête.")
    assert sent.status_code == 302, text(sent)
    raw = mail_operator.wait_for(address("marie"), lambda r: "Commande prête" in str(
        email.message_from_bytes(r, policy=email.policy.default)["Subject"]))
    sender = email.message_from_bytes(raw, policy=email.policy.default)["From"]
    assert "pharma.ducentre.64000@mss.test" in str(sender)
    wait_until(lambda: _inbox_has(julie, org, "Commande prête", "Sent"))
    uid = _uid_of(julie, org, "Commande prête", "Sent")
    refused = post_form(julie, f"/courrier/{org}/supprimer", {"dossier": "Sent", "uid": uid})
    assert refused.status_code == 403 and "Utilisateur" in text(refused)
    assert _inbox_has(julie, org, "Commande prête", "Sent")
    page = text(julie.get(f"/courrier/{org}?dossier=Sent"))
    assert "Supprimer" not in page and "Marquer lu" in page
