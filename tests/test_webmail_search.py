"""Full-text search through the webmail (Flask's test client) on a real Dovecot with the Xapian
index (mailstore.fts): words of the body and of an attached PDF, accents and case, every folder
at once with the folder shown, messages marked deleted left out, paging over several folders,
and what a careless or hostile query gets (quotes, line breaks, ``*``, IMAP syntax, too long,
too short, control characters). Messages are put straight into the mailboxes over LMTP
(``address+Folder`` delivers into that folder), so each test knows exactly what is there."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from flask.testing import FlaskClient
from imapclient import IMAPClient
from sqlalchemy import select

from core.audit import AuditRecord
from mailstore import fts
from mailstore.lmtp import LmtpClient
from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD
from tests.search_support import message, pdf
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, text

pytest_plugins = ["tests.webmail_mail_fixtures"]
_TOTAL = re.compile(r'data-total="(\d+)"')


def _word() -> str:
    """A word no other message holds (letters only: Xapian indexes it whole)."""
    return "mot" + "".join(chr(ord("a") + b % 26) for b in os.urandom(8))


def _deliver(op: Operator, who: str, raw: bytes, folder: str = "") -> None:
    local, _, domain = address(who).partition("@")
    target = f"{local}+{folder}@{domain}" if folder else address(who)
    LmtpClient.for_settings(op.settings).deliver(raw, "paul.durand@mss.test", [target])


def _search(client: FlaskClient, box: int, **args: str) -> tuple[int, str]:
    answer = client.get(f"/courrier/{box}/recherche?{urlencode(args)}")
    return answer.status_code, text(answer)


def _total(page: str) -> int:
    found = _TOTAL.search(page)
    assert found is not None, "pas de nombre de résultats sur la page"
    return int(found.group(1))


def _subjects(page: str) -> list[str]:
    """The subjects of the result list, in order."""
    return re.findall(r'<td class="col-subject">.*?<a href="[^"]*">([^<]*)</a>', page, re.S)


def _date(days_ago: int) -> str:
    when = datetime(2026, 11, 30, 9, tzinfo=UTC) - timedelta(days=days_ago)
    return when.strftime("%a, %d %b %Y %H:%M:%S +0000")


def test_a_body_word_is_found_in_every_folder_with_the_folder_shown(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    _deliver(mail_operator, "leo", message("Avis", f"Bradycardie à {word} battements.",
                                           date=_date(0)))
    _deliver(mail_operator, "leo", message("Réponse", f"Bien noté pour {word}.",
                                           date=_date(1)), "Sent")
    _deliver(mail_operator, "leo", message("Autre", "Rien à voir."), "Sent")
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    status, inbox_only = _search(leo, box, q=word)
    assert status == 200 and _total(inbox_only) == 1 and "Avis" in inbox_only
    status, everywhere = _search(leo, box, q=word, portee="tous")
    assert status == 200 and _total(everywhere) == 2
    assert "Avis" in everywhere and "Réponse" in everywhere and "Autre" not in everywhere
    assert "Boîte de réception" in everywhere and "Messages envoyés" in everywhere
    assert _subjects(everywhere) == ["Avis", "Réponse"]  # newest first


def test_the_text_of_an_attached_pdf_is_found(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    report = pdf(["Compte rendu de coloscopie", f"Polype {word} réséqué"])
    _deliver(mail_operator, "leo", message("CR joint", "Voir la pièce jointe.",
                                           attachment=("cr.pdf", report)))
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    status, page = _search(leo, box, q=word, portee="tous")
    assert status == 200 and _total(page) == 1 and "CR joint" in page
    _status, with_attachment = _search(leo, box, q=word, pj="1")
    assert _total(with_attachment) == 1 and "CR joint" in with_attachment


def test_accents_and_case_do_not_matter_and_part_of_a_word_is_enough(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    """Xapian lower-cases and strips accents on both sides (mailstore.fts): « écho » finds
    « Échographie », and a piece of 3 characters or more of a word finds it."""
    stamp = _word()
    _deliver(mail_operator, "leo", message(f"Écho {stamp}",
                                           f"Échographie cardiaque {stamp} : fraction normale."))
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    for typed in ("echographie", "ÉCHOGRAPHIE", "chograph"):
        _status, page = _search(leo, box, q=f"{typed} {stamp}")
        assert _total(page) == 1, typed
    _status, page = _search(leo, box, q=f"echographie {stamp} absentissime")
    assert _total(page) == 0  # every word must be found


def test_messages_marked_deleted_are_not_results(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    for subject in ("Gardé", "Effacé"):
        _deliver(mail_operator, "leo", message(subject, f"Dossier {word}."))
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    _status, before = _search(leo, box, q=word, portee="tous")
    assert _total(before) == 2
    _mark_deleted(mail_operator, "leo", "Effacé")
    _status, after = _search(leo, box, q=word, portee="tous")
    assert _total(after) == 1 and "Gardé" in after and "Effacé" not in after


def test_paging_over_several_folders_keeps_the_newest_first(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    for n in range(60):  # one in three in Sent, dates one day apart: n = 0 is the newest
        _deliver(mail_operator, "emma", message(f"Suivi n{n:02d}", f"Patient {word}.",
                                                date=_date(n)), "Sent" if n % 3 == 0 else "")
    emma, box = as_user("emma"), box_id(mail_web, address("emma"))
    _status, first = _search(emma, box, q=word, portee="tous")
    assert _total(first) == 60 and "Page 1 sur 2" in first
    assert _subjects(first) == [f"Suivi n{n:02d}" for n in range(50)]
    _status, second = _search(emma, box, q=word, portee="tous", page="2")
    assert _subjects(second) == [f"Suivi n{n:02d}" for n in range(50, 60)]
    assert 'rel="prev"' in second and 'rel="next"' not in second


def test_hostile_or_careless_queries(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    _deliver(mail_operator, "leo", message("Ciblé", f"Contenu {word}."))
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    # Quotes, line breaks and * only separate words
    for typed in (f'"{word}"', f"{word}*", f"\r\n{word}\r\n", f"({word})"):
        status, page = _search(leo, box, q=typed, portee="tous")
        assert status == 200 and _total(page) == 1 and "Ciblé" in page, typed
    # IMAP syntax is not interpreted: "ALL", "UID" are words to find (were "OR ALL" read as
    # criteria, every message would match)
    for typed in (f'{word}" OR ALL "', f"{word}) UID 1:* (", f"{word}\r\nA1 LOGOUT"):
        status, page = _search(leo, box, q=typed, portee="tous")
        assert status == 200 and _total(page) == 0, typed
    _status, page = _search(leo, box, q=f"le {word} de")
    assert _total(page) == 1 and "ignorés" in page and "« le »" in page
    refused = {
        "x" * 201: "trop long",
        "le de la": "au moins un mot de 3",
        f"{word}\x00": "non autorisés",
        " ".join(f"mot{n:02d}" for n in range(9)): "8 mots au plus",
    }
    for typed, says in refused.items():
        status, page = _search(leo, box, q=typed)
        assert status == 400 and says in page, typed
        assert "data-total" not in page
    status, page = _search(leo, box, de="ab")
    assert status == 400 and "Expéditeur" in page
    status, page = _search(leo, box, q=word, depuis="2026-13-45")
    assert status == 400 and "Date « Depuis le » invalide" in page
    status, page = _search(leo, box, q=word, depuis="01/01/2020", avant="31/12/2099")
    assert status == 200 and _total(page) == 1 and 'value="01/01/2020"' in page
    status, page = _search(leo, box, q=word, depuis="31/12/2099", avant="01/01/2020")
    assert status == 400 and "doit précéder" in page
    status, page = _search(leo, box, q=word, page="99999999999999999999")
    assert status == 200 and _total(page) == 1


def test_a_search_is_audited_without_its_words(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    word = _word()
    leo, box = as_user("leo"), box_id(mail_web, address("leo"))
    _search(leo, box, q=word, portee="tous")
    with mail_web.space.db.transaction() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.action == "mail.search")
                                 .order_by(AuditRecord.id.desc())).first()
        assert record is not None and record.target == address("leo")
        assert word not in record.request and '"words": 1' in record.request
        assert '"scope": "tous"' in record.request and record.outcome == "ok"


def test_another_persons_mailbox_cannot_be_searched(
        mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    leo = as_user("leo")
    status, _page = _search(leo, box_id(mail_web, address("emma")), q="patient", portee="tous")
    assert status == 404
    julie = as_user("julie")  # "user" of the Pharmacie du Centre: may read, so may search
    status, page = _search(julie, box_id(mail_web, address("org")), q="patient", portee="tous")
    assert status == 200 and _total(page) == 0


def _mark_deleted(op: Operator, who: str, subject: str) -> None:
    """\\Deleted on the INBOX messages with ``subject``, not expunged (another client)."""
    client = IMAPClient("127.0.0.1", op.settings.imaps_port,
                        ssl_context=ssl.create_default_context(
                            cafile=str(op.settings.pki_dir / "ca.pem")))
    client.login(address(who), PASSWORD)
    client.select_folder("INBOX")
    client.add_flags(client.search(["SUBJECT", subject], charset="UTF-8"), [b"\\Deleted"])
    client.logout()


def _doveadm(op: Operator, *args: str) -> str:
    conf = op.settings.data_dir.resolve() / "dovecot" / "dovecot.conf"
    done = subprocess.run(["doveadm", "-c", str(conf), *args], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout


def _search_reads(op: Operator) -> int:
    """Dovecot's own count of messages a SEARCH opened and read (mailstore.fts)."""
    for line in _doveadm(op, "stats", "dump").splitlines():
        fields = line.split("\t")
        if fields[:2] == [fts.SCAN_METRIC, "duration"]:
            return int(fields[2])
    raise AssertionError("métrique absente")


def _index_of(op: Operator, who: str, folder: str) -> Path:
    """The Xapian database of one folder (named by the folder's GUID)."""
    guid = _doveadm(op, "-f", "flow", "mailbox", "status", "-u", address(who), "guid",
                    folder).split("=", 1)[1].strip()
    local = address(who).split("@")[0]
    return (op.settings.data_dir / "mail" / "mss.test" / local / "sdbox" / "xapian-indexes"
            / f"db_{guid}")


def test_searches_read_no_message_and_the_count_would_show_it(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    """The index answers: Dovecot opens no message for a search (its ``search_read_mail``
    metric, what bench/search.py checks). The count does see reading: with an index that
    cannot be written, Dovecot 2.3 reads the messages not indexed yet (``fts_enforced``
    does not stop that), and the count says so."""
    word = _word()
    _deliver(mail_operator, "emma", message("Lu", f"Texte {word}."), "Lecture")
    emma, box = as_user("emma"), box_id(mail_web, address("emma"))
    before = _search_reads(mail_operator)
    for args in ({"q": word}, {"q": word, "portee": "tous"}, {"q": "patient", "portee": "tous",
                                                              "non_lus": "1"}):
        status, _page = _search(emma, box, **args)
        assert status == 200
    assert _search_reads(mail_operator) == before
    index = _index_of(mail_operator, "emma", "Lecture")
    _search(emma, box, q=word, portee="tous")  # the folder is indexed
    index.chmod(0o500)  # readable, not writable by Dovecot's mail user
    try:
        _deliver(mail_operator, "emma", message("Non indexé", f"Texte {word}."), "Lecture")
        _status, page = _search(emma, box, q=word, portee="tous")
    finally:
        index.chmod(0o700)
    assert _total(page) == 2 and _search_reads(mail_operator) == before + 1


def test_a_folder_whose_index_cannot_be_opened_is_named_not_skipped(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    """fts_enforced = yes: when Dovecot cannot open a folder's index to bring it up to date,
    the search of that folder fails instead of reading its messages; the page names the
    folder and still lists what the other folders hold."""
    word = _word()
    _deliver(mail_operator, "julie", message("Ailleurs", f"Texte {word}."))
    _deliver(mail_operator, "julie", message("Avant", f"Texte {word}."), "Archives")
    julie, box = as_user("julie"), box_id(mail_web, address("julie"))
    _status, page = _search(julie, box, q=word, portee="tous")
    assert _total(page) == 2
    index = _index_of(mail_operator, "julie", "Archives")
    index.chmod(0)
    try:
        _deliver(mail_operator, "julie", message("Après", f"Texte {word}."), "Archives")
        status, page = _search(julie, box, q=word, portee="tous")
    finally:
        index.chmod(0o700)
    assert status == 200 and _total(page) == 1 and "Ailleurs" in page
    assert "La recherche n’a pas pu aboutir dans le dossier « Archives »" in page
