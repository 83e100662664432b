"""The message list through Flask's test client on a real Dovecot and gateway: sorting by
column (IMAP SORT) in both directions, the filters (non lus / suivis / avec pièces jointes)
combined with sorting and paging, the page size kept in the person's preferences, the "suivi"
flag (form and JSON), "select all N messages" acted on by the server (folder, filter, search
results) in bounded batches and never past what the page knew, the fragment a refresh asks
for, the read view's previous/next — and what a hostile or hurried user sends: another
person's mailbox, a role without the right, folder names with quotes, CRLF or wildcards,
parameters out of range, a stale "tout", a double click on "Supprimer", no CSRF token."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from core.audit import AuditRecord
from tests.gateway_fixtures import Operator
from tests.list_support import day, folder_with, message, store, uids
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, post_form, text

pytest_plugins = ["tests.webmail_mail_fixtures"]
LEO = "leo.faure@mss.test"
ROW = re.compile(r'<tr class="[^"]*" data-uid="(\d+)"')
SUBJECT = re.compile(r'<a href="[^"]*/message/\d+\?dossier=[^"]*">([^<]*)</a>')


@pytest.fixture(scope="module")
def leo_box(mail_web: Web) -> int:
    return box_id(mail_web, LEO)


@pytest.fixture
def leo(as_user: Callable[[str], FlaskClient]) -> FlaskClient:
    return as_user("leo")


@pytest.fixture
def imap(mail_operator: Operator) -> Iterator[object]:
    conn = mail_operator.imap(LEO)
    yield conn
    conn.logout()


def subjects(page: str) -> list[str]:
    return SUBJECT.findall(page)


def audits(web: Web, action: str) -> list[dict[str, object]]:
    with web.space.db.transaction() as session:
        rows = session.scalars(select(AuditRecord).where(AuditRecord.action == action)
                               .order_by(AuditRecord.id))
        return [{"outcome": r.outcome, "target": r.target, **json.loads(r.request)}
                for r in rows]


def page_size(client: FlaskClient, size: int) -> None:
    answer = post_form(client, "/courrier/preferences", {"par_page": str(size)})
    assert answer.status_code == 302


# ---------------------------------------------------------------------- sorting
def test_columns_sort_both_ways_and_the_url_keeps_it(leo: FlaskClient, leo_box: int,
                                                     imap) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Tri")
    people = ["Zoé Arnaud <zoe.arnaud@mss.test>", "Bruno Zidane <bruno.zidane@mss.test>",
              "Alice Moreau <alice.moreau@mss.test>"]
    for n, (subject, who, size) in enumerate([("Charlie", people[0], 4000),
                                              ("alpha", people[1], 100),
                                              ("Bravo", people[2], 20000)]):
        store(imap, "Tri", message(subject, sender=who, when=day(n), padding=size))
    url = f"/courrier/{leo_box}?dossier=Tri"
    assert subjects(text(leo.get(url))) == ["Bravo", "alpha", "Charlie"]  # newest first
    assert subjects(text(leo.get(url + "&tri=date&ordre=croissant"))) == [
        "Charlie", "alpha", "Bravo"]
    page = text(leo.get(url + "&tri=objet"))  # RFC 5256 base subject, case-insensitive
    assert subjects(page) == ["alpha", "Bravo", "Charlie"]
    assert 'aria-sort="ascending"' in page
    # The header of the current column reverses it; the filter links keep the sort.
    assert f'href="/courrier/{leo_box}?dossier=Tri&amp;tri=objet&amp;ordre=decroissant"' in page
    assert f'href="/courrier/{leo_box}?dossier=Tri&amp;tri=objet&amp;filtre=non-lus"' in page
    assert subjects(text(leo.get(url + "&tri=objet&ordre=decroissant"))) == [
        "Charlie", "Bravo", "alpha"]
    # Sender: by the name the list shows (SORT=DISPLAY, RFC 5957), not the address.
    assert subjects(text(leo.get(url + "&tri=expediteur"))) == ["Bravo", "alpha", "Charlie"]
    assert subjects(text(leo.get(url + "&tri=taille"))) == ["Bravo", "Charlie", "alpha"]
    assert subjects(text(leo.get(url + "&tri=taille&ordre=croissant"))) == [
        "alpha", "Charlie", "Bravo"]
    # A message opened from a sorted list links back to it, with its neighbours in that order.
    uid = uids(imap, "Tri", 'SUBJECT "Bravo"')[0]
    read = text(leo.get(f"/courrier/{leo_box}/message/{uid}?dossier=Tri&tri=objet"))
    assert 'data-shortcut="u"' in read and f"/courrier/{leo_box}?dossier=Tri&amp;tri=objet" in read
    before = uids(imap, "Tri", 'SUBJECT "alpha"')[0]
    after = uids(imap, "Tri", 'SUBJECT "Charlie"')[0]
    assert re.search(rf'rel="prev" data-shortcut="k" href="[^"]*/message/{before}\?dossier=Tri'
                     r'&amp;tri=objet"', read)
    assert re.search(rf'rel="next" data-shortcut="j" href="[^"]*/message/{after}\?', read)


# ---------------------------------------------------------------------- filters
def test_filters_agree_with_the_markers_and_combine_with_sort_and_paging(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Filtres")
    kinds = ["plain", "mixed", "signed", "signed-mixed", "pdf", "inline"]
    for n in range(60):
        kind = kinds[n % len(kinds)]
        flags = " ".join(f for f, on in (("\\Seen", n % 3 != 0), ("\\Flagged", n % 5 == 0)) if on)
        store(imap, "Filtres", message(f"Filtre {n:02d} {kind}", when=day(n), kind=kind), flags)
    url = f"/courrier/{leo_box}?dossier=Filtres"
    page_size(leo, 100)
    everything = text(leo.get(url))
    with_marker = {s for s in subjects(everything)
                   if re.search(rf">{re.escape(s)}</a>\s*<span class=\"markers\">\s*<span class="
                                r'"marker marker-att"', everything)}
    expected = {f"Filtre {n:02d} {kinds[n % 6]}" for n in range(60)
                if kinds[n % 6] in ("mixed", "signed-mixed", "pdf")}
    assert with_marker == expected  # a signature alone or an inline image is no attachment
    assert set(subjects(text(leo.get(url + "&filtre=pj")))) == expected
    assert set(subjects(text(leo.get(url + "&filtre=non-lus")))) == {
        f"Filtre {n:02d} {kinds[n % 6]}" for n in range(60) if n % 3 == 0}
    assert set(subjects(text(leo.get(url + "&filtre=suivis")))) == {
        f"Filtre {n:02d} {kinds[n % 6]}" for n in range(60) if n % 5 == 0}
    # Combined: attachments, oldest first, 25 a page: page 1 then page 2 hold them all, in order.
    page_size(leo, 25)
    first = text(leo.get(url + "&filtre=pj&tri=date&ordre=croissant"))
    second = text(leo.get(url + "&filtre=pj&tri=date&ordre=croissant&page=2"))
    ordered = sorted(expected)  # "Filtre NN …": by date
    assert len(ordered) == 30 and "Page 1 sur 2 — 30 messages" in first
    assert subjects(first) == ordered[:25] and subjects(second) == ordered[25:]
    assert (f'href="/courrier/{leo_box}?dossier=Filtres&amp;ordre=croissant&amp;filtre=pj'
            '&amp;page=2"') in first  # the next page keeps the view (date: the default sort)
    # A filter that empties the view says so, with the way back.
    folder_with(imap, "Vide")
    empty = text(leo.get(f"/courrier/{leo_box}?dossier=Vide&filtre=suivis"))
    assert "Aucun message suivi dans ce dossier." in empty and "Voir tous les messages" in empty
    # The attachment verdicts are kept: a new arrival is judged, the others are not again.
    store(imap, "Filtres", message("Filtre tard mixed", when=day(40), kind="mixed"))
    assert "Filtre tard mixed" in subjects(text(leo.get(url + "&filtre=pj")))
    page_size(leo, 50)


def test_page_size_is_a_preference_and_out_of_range_is_refused(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web,  # type: ignore[no-untyped-def]
        as_user: Callable[[str], FlaskClient]) -> None:
    folder_with(imap, "Pages")
    for n in range(60):
        store(imap, "Pages", message(f"Page {n:02d}", when=day(n)))
    url = f"/courrier/{leo_box}?dossier=Pages"
    assert len(ROW.findall(text(leo.get(url)))) == 50  # the default
    page_size(leo, 25)
    first = text(leo.get(url))
    assert len(ROW.findall(first)) == 25 and "Page 1 sur 3 — 60 messages" in first
    assert '<option value="25" selected>' in first
    assert len(ROW.findall(text(leo.get(url + "&page=3")))) == 10
    again = as_user("leo")  # another session of the same person: the same choice
    assert len(ROW.findall(text(again.get(url)))) == 25
    refused = post_form(leo, "/courrier/preferences", {"par_page": "1000000"},
                        follow_redirects=True)
    assert "Choix invalide" in text(refused) and len(ROW.findall(text(leo.get(url)))) == 25
    assert post_form(leo, "/courrier/preferences", {"raccourcis": "peut-être"},
                     headers={"Accept": "application/json"}).status_code == 400
    assert any(a.get("page_size") == 25 for a in audits(mail_web, "mail.preferences"))
    page_size(leo, 50)


def test_shortcuts_can_be_turned_off_and_on(leo: FlaskClient, leo_box: int) -> None:
    inbox = text(leo.get(f"/courrier/{leo_box}"))
    assert "js/shortcuts.js" in inbox and 'id="shortcuts-help"' in inbox
    assert post_form(leo, "/courrier/preferences", {"raccourcis": "non"}).status_code == 302
    inbox = text(leo.get(f"/courrier/{leo_box}"))
    assert "js/shortcuts.js" not in inbox and 'id="shortcuts-help"' not in inbox
    prefs = text(leo.get("/compte/preferences"))
    assert 'name="raccourcis" value="non" checked' in prefs
    assert post_form(leo, "/courrier/preferences", {"raccourcis": "oui",
                                                    "retour": "/compte/preferences"}
                     ).headers["Location"] == "/compte/preferences"
    assert "js/shortcuts.js" in text(leo.get(f"/courrier/{leo_box}"))


# ---------------------------------------------------------------------- the "suivi" flag
def test_flag_toggle_as_a_form_and_as_json(leo: FlaskClient, leo_box: int, imap,
                                           mail_web: Web) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Suivi")
    store(imap, "Suivi", message("À suivre", when=day(1)))
    uid = uids(imap, "Suivi")[0]
    url = f"/courrier/{leo_box}?dossier=Suivi"
    page = text(leo.get(url))
    assert f'name="suivre" value="{uid}" aria-pressed="false"' in page
    done = post_form(leo, f"/courrier/{leo_box}/suivi", {"dossier": "Suivi",
                                                         "suivre": str(uid), "retour": url})
    assert done.status_code == 302 and done.headers["Location"] == url
    assert uids(imap, "Suivi", "FLAGGED") == [uid]
    assert f'name="retirer" value="{uid}" aria-pressed="true"' in text(leo.get(url))
    read = text(leo.get(f"/courrier/{leo_box}/message/{uid}?dossier=Suivi"))
    assert re.search(rf'name="retirer" value="{uid}" aria-pressed="true" data-shortcut="s"',
                     read)
    answer = post_form(leo, f"/courrier/{leo_box}/suivi", {"dossier": "Suivi",
                                                           "retirer": str(uid)},
                       headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.json == {
        "message": "Message non suivi.", "flagged": False, "uid": uid, "ok": True}
    assert uids(imap, "Suivi", "FLAGGED") == []
    gone = post_form(leo, f"/courrier/{leo_box}/suivi", {"dossier": "Suivi", "suivre": "4242"},
                     headers={"Accept": "application/json"})
    assert gone.status_code == 404 and gone.json["ok"] is False
    assert [a["flagged"] for a in audits(mail_web, "mail.flag") if a.get("folder") == "Suivi"
            and "flagged" in a][-2:] == [True, False]


# ---------------------------------------------------------------------- select all
def test_select_all_acts_on_the_whole_view_server_side_and_not_on_later_mail(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Masse")
    for n in range(1234 // 10):  # 123 messages, 3 pages of 50
        store(imap, "Masse", message(f"Masse {n:03d}", when=day(n)),
              "\\Flagged" if n % 2 else "")
    url = f"/courrier/{leo_box}?dossier=Masse"
    page = text(leo.get(url))
    assert "Sélectionner les 123 messages de « Masse »" in page
    assert 'name="jusqua"' in page
    until = int(re.search(r'name="jusqua" value="(\d+)"', page).group(1))  # type: ignore[union-attr]
    chosen = text(leo.get(url + "&tout=1"))  # without script: the page asked again
    assert 'name="tout" value="1" form="bulk" id="tout" checked' in chosen
    assert len(re.findall(r'name="uid" value="\d+" form="bulk" aria-label="Sélectionner : '
                          r'Masse \d+" checked>', chosen)) == 50
    # Mail that arrives after the page was shown is not part of "all".
    store(imap, "Masse", message("Tardif", when=day(500)))
    marked = post_form(leo, f"/courrier/{leo_box}/marquer", {
        "dossier": "Masse", "tout": "1", "jusqua": str(until), "etat": "lu", "retour": url},
        follow_redirects=True)
    assert "123 messages marqués comme lus." in text(marked)
    unseen = uids(imap, "Masse", "UNSEEN")
    assert len(unseen) == 1 and uids(imap, "Masse", 'SUBJECT "Tardif"') == unseen
    # With a filter: only the followed ones move, in bounded batches.
    moved = post_form(leo, f"/courrier/{leo_box}/deplacer", {
        "dossier": "Masse", "tout": "1", "jusqua": str(until), "filtre": "suivis",
        "cible": "Trash"}, headers={"Accept": "application/json"})
    assert moved.status_code == 200 and moved.json["count"] == 61
    assert len(uids(imap, "Masse")) == 63 and uids(imap, "Masse", "FLAGGED") == []
    record = [a for a in audits(mail_web, "mail.move") if a.get("folder") == "Masse"][-1]
    assert record["count"] == 61 and record["all"] is True and record["filter"] == "suivis"
    assert "Masse" not in json.dumps({k: v for k, v in record.items() if k != "folder"})


def test_a_long_select_all_goes_on_at_the_next_click(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Expunging is slow under the full-text index (some 60 messages a second): a request
    takes no new batch once its time is spent, says how many are left, keeps them selected;
    the next click goes on from what the server finds then."""
    from webmail.mail import bulk, listview

    monkeypatch.setattr(listview, "BATCH", 10)
    monkeypatch.setattr(bulk, "TIME_BUDGET", 0.0)  # one batch per request
    folder_with(imap, "Longue")
    for n in range(25):
        store(imap, "Longue", message(f"Longue {n:02d}", when=day(n)))
    url = f"/courrier/{leo_box}?dossier=Longue"
    until = re.search(r'name="jusqua" value="(\d+)"', text(leo.get(url))).group(1)  # type: ignore[union-attr]
    form = {"dossier": "Longue", "tout": "1", "jusqua": until, "retour": url}
    first = post_form(leo, f"/courrier/{leo_box}/supprimer", form)
    assert first.status_code == 302 and first.headers["Location"] == url + "&tout=1"
    page = text(leo.get(first.headers["Location"]))
    assert ("10 messages placés dans la Corbeille. Il en reste 15 : ils restent sélectionnés, "
            "recommencez pour les traiter.") in page
    assert len(re.findall(r'form="bulk" aria-label="Sélectionner : Longue \d+" checked>',
                          page)) == 15  # all of them on this page: every box ticked
    assert len(uids(imap, "Longue")) == 15
    second = post_form(leo, f"/courrier/{leo_box}/supprimer", form,
                       headers={"Accept": "application/json"})
    assert second.json["count"] == 10 and second.json["remaining"] == 5
    third = post_form(leo, f"/courrier/{leo_box}/supprimer", form,
                      headers={"Accept": "application/json"})
    assert third.json["count"] == 5 and third.json["remaining"] == 0
    assert uids(imap, "Longue") == []
    counts = [(a["count"], a["remaining"]) for a in audits(mail_web, "mail.delete")
              if a.get("folder") == "Longue"]
    assert counts == [(10, 15), (10, 5), (5, 0)]


def test_select_all_search_results_beyond_those_shown(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Cherche")
    for n in range(230):
        store(imap, "Cherche", message(f"Ordonnance {n:03d}" if n % 10 else f"Autre {n}",
                                       when=day(n)))
    url = f"/courrier/{leo_box}/recherche?dossier=Cherche&q=Ordonnance"
    page = text(leo.get(url))
    assert 'data-total="207"' in page and "Page 1 sur 5" in page  # 50 a page (search.py)
    assert "Sélectionner les 207 messages correspondant à la recherche dans « Cherche »" in page
    until = re.search(r'name="jusqua" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
    assert 'name="recherche" value="1"' in page and 'name="q" value="Ordonnance"' in page
    deleted = post_form(leo, f"/courrier/{leo_box}/supprimer", {
        "dossier": "Cherche", "tout": "1", "jusqua": until, "recherche": "1",
        "q": "Ordonnance", "retour": url}, follow_redirects=True)
    assert "207 messages placés dans la Corbeille." in text(deleted)
    left = uids(imap, "Cherche")
    assert len(left) == 23 and uids(imap, "Cherche", 'SUBJECT "Ordonnance"') == []


# ---------------------------------------------------------------------- the fragment
def test_the_fragment_is_the_list_of_the_same_view(leo: FlaskClient, leo_box: int,
                                                   imap) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Morceau")
    for n in range(3):
        store(imap, "Morceau", message(f"Morceau {n}", when=day(n)))
    url = f"/courrier/{leo_box}?dossier=Morceau&tri=objet"
    whole = text(leo.get(url))
    part = text(leo.get(url, headers={"X-MSS-Fragment": "1"}))
    assert part.lstrip().startswith('<div id="liste"') and "<html" not in part
    assert "mail-side" not in part and subjects(part) == subjects(whole) == [
        "Morceau 0", "Morceau 1", "Morceau 2"]
    assert f'data-url="/courrier/{leo_box}?dossier=Morceau&amp;tri=objet"' in part


# ---------------------------------------------------------------------- the attacker
def test_another_persons_mailbox_or_a_missing_right_is_refused(
        as_user: Callable[[str], FlaskClient], leo_box: int, imap,  # type: ignore[no-untyped-def]
        mail_web: Web) -> None:
    folder_with(imap, "Garde")
    store(imap, "Garde", message("Ne pas toucher", when=day(1)))
    kept = uids(imap, "Garde")
    marie = as_user("marie")
    for path, extra in (("supprimer", {}), ("marquer", {"etat": "lu"}),
                        ("suivi", {"suivre": str(kept[0])}),
                        ("deplacer", {"cible": "Trash"})):
        answer = post_form(marie, f"/courrier/{leo_box}/{path}", {
            "dossier": "Garde", "tout": "1", "jusqua": "999999", "uid": str(kept[0]), **extra})
        assert answer.status_code == 404, path
    assert marie.get(f"/courrier/{leo_box}?dossier=Garde&tout=1").status_code == 404
    assert uids(imap, "Garde") == kept and uids(imap, "Garde", "SEEN") == []
    # Julie is "utilisatrice" of the Pharmacie du Centre: she may flag, not delete or move.
    julie, org = as_user("julie"), box_id(mail_web, address("org"))
    answer = post_form(julie, f"/courrier/{org}/supprimer", {
        "dossier": "INBOX", "tout": "1", "jusqua": "999999"})
    assert answer.status_code == 403 and "ne permet pas de supprimer" in text(answer)
    assert any(a["outcome"] == "forbidden" and a.get("right") == "delete"
               for a in audits(mail_web, "mail.access"))


@pytest.mark.parametrize("name", ['INBOX" * ', "INBOX\r\nA1 DELETE INBOX", "*", "%",
                                  "shared/marie.martin@mss.test/INBOX", "../INBOX", "INBOX\\"])
def test_folder_names_that_could_reach_elsewhere_are_refused(
        leo: FlaskClient, leo_box: int, imap, name: str) -> None:  # type: ignore[no-untyped-def]
    before = uids(imap, "INBOX")
    assert leo.get(f"/courrier/{leo_box}", query_string={"dossier": name, "tout": "1"}
                   ).status_code == 404
    for path in ("supprimer", "marquer", "suivi"):
        answer = post_form(leo, f"/courrier/{leo_box}/{path}", {
            "dossier": name, "tout": "1", "jusqua": "999999", "etat": "lu", "suivre": "1"})
        assert answer.status_code == 404, (path, answer.status_code)
    assert uids(imap, "INBOX") == before


def test_a_target_folder_with_quotes_moves_nothing(leo: FlaskClient, leo_box: int,
                                                   imap) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Cible")
    store(imap, "Cible", message("Reste là", when=day(1)))
    kept = uids(imap, "Cible")
    for target in ('Trash" INBOX', "Trash\r\nA1 EXPUNGE", "*", "Inexistant"):
        answer = post_form(leo, f"/courrier/{leo_box}/deplacer", {
            "dossier": "Cible", "uid": str(kept[0]), "cible": target},
            headers={"Accept": "application/json"})
        assert answer.status_code in (400, 409) and answer.json["ok"] is False, target
    assert uids(imap, "Cible") == kept


@pytest.mark.parametrize("query", [
    "tri=../../etc&ordre=haut&filtre=<script>alert(1)</script>&page=-1",
    "tri=DATE&filtre=PJ&page=99999999999999", "page=١٢&tri=objet%00", "filtre=pj%27&page=abc",
    "tri=expediteur)(REVERSE&ordre=croissant", "filtre=ALL%20UNSEEN"])
def test_parameters_out_of_range_give_the_default_view(leo: FlaskClient, leo_box: int,
                                                       query: str) -> None:
    answer = leo.get(f"/courrier/{leo_box}?dossier=INBOX&{query}")
    page = text(answer)
    assert answer.status_code == 200, page[:500]
    assert "<script>alert" not in page  # reflected only escaped (the page's own return URL)
    assert '<option value="date" selected>' in page or '<option value="objet" selected>' in page
    assert 'aria-current="page">Tous</a>' in page  # no filter of its own making
    assert "Page " not in page or "Page 1 sur" in page


def test_a_stale_select_all_and_a_double_click_do_nothing_more(
        leo: FlaskClient, leo_box: int, imap, mail_web: Web) -> None:  # type: ignore[no-untyped-def]
    folder_with(imap, "Double")
    for n in range(3):
        store(imap, "Double", message(f"Double {n}", when=day(n)))
    chosen = uids(imap, "Double")
    trash = len(uids(imap, "Trash"))
    form = {"dossier": "Double", "uid": [str(u) for u in chosen]}
    first = post_form(leo, f"/courrier/{leo_box}/supprimer", form, follow_redirects=True)
    assert "3 messages placés dans la Corbeille." in text(first)
    second = post_form(leo, f"/courrier/{leo_box}/supprimer", form, follow_redirects=True)
    assert "Ces messages ne sont plus dans ce dossier : rien n’a été fait." in text(second)
    assert len(uids(imap, "Trash")) == trash + 3 and uids(imap, "Double") == []
    assert [a["outcome"] for a in audits(mail_web, "mail.delete")
            if a.get("folder") == "Double"] == ["ok", "gone"]
    stale = post_form(leo, f"/courrier/{leo_box}/supprimer", {"dossier": "INBOX", "tout": "1"},
                      headers={"Accept": "application/json"})
    assert stale.status_code == 400 and "n’est plus valable" in stale.json["message"]


def test_new_posts_need_the_csrf_token(leo: FlaskClient, leo_box: int) -> None:
    for path, data in ((f"/courrier/{leo_box}/suivi", {"dossier": "INBOX", "suivre": "1"}),
                       ("/courrier/preferences", {"par_page": "25"}),
                       (f"/courrier/{leo_box}/marquer", {"dossier": "INBOX", "tout": "1",
                                                          "jusqua": "9", "etat": "suivi"})):
        assert leo.post(path, data=data).status_code == 400, path
