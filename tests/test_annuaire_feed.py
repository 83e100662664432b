"""The national directory feed (issue #20) against a real HTTP endpoint on loopback that
answers as the ANS guide "API MSS" says (conditional PATCH: 200 with the resource, 404 when no
resource matches the identifier, 412 when several do; OperationOutcome bodies): one FHIR
Patch per life-cycle event with its conditional URL and body (validated with fhir.resources),
never for an applicative mailbox, 404/412 waiting for the operator's page, 500 retried with
backoff, the operator's actions, the worker thread of `mss run`, `mss annuaire`; attack tests:
an address and a name made to break the URL, the JSON or the FHIRPath, a professional or a
visitor on the operator's page, a forged row, a missing CSRF token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fhir.resources.R4B.parameters import Parameters
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import AuditRecord
from core.db import Database, utcnow
from core.errors import ConfigError
from core.settings import Settings
from mss import annuaire as sender
from tests.webmail_helpers import Web, login, login_operator, post, token
from trust_space import annuaire
from trust_space.directory import (
    close,
    new_organisational_mailbox,
    new_personal_mailbox,
    publish,
    set_liste_rouge,
    suspend,
    upsert_professional,
    upsert_structure,
)
from trust_space.fhir import EXT_MAILBOX, EXT_SMIME
from trust_space.models import DirectoryFeed, FeedState, Mailbox, MailboxKind, MailboxState

pytest_plugins = ["tests.webmail_fixtures"]
IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "https://finess.esante.gouv.fr"
TOKEN = "jeton-annuaire-de-test"


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


class Endpoint:
    """The ANS PATCH endpoint's stand-in: records each request, answers the statuses queued
    by the test (200 when none is), with the bodies the guide describes."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.statuses: deque[int] = deque()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = urlsplit(self.path)
                endpoint.seen.append(Seen(url.path, parse_qs(url.query, keep_blank_values=True),
                                          dict(self.headers), json.loads(raw)))
                status = endpoint.statuses.popleft() if endpoint.statuses else 200
                answer: dict[str, Any] = {"resourceType": url.path.rsplit("/", 1)[-1],
                                          "id": "ressource-1"}
                if status != 200:
                    answer = {"resourceType": "OperationOutcome", "issue": [{
                        "severity": "error", "code": "processing",
                        "diagnostics": {404: "Aucune ressource ne correspond au critère",
                                        412: "Plusieurs ressources correspondent au critère"}
                        .get(status, "Erreur interne\r\ndu serveur")}]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    found = Endpoint()
    yield found
    found.close()


@pytest.fixture
def feed(settings: Settings, endpoint: Endpoint) -> Iterator[tuple[Settings, requests.Session]]:
    s = settings.replace(annuaire_url=endpoint.url, annuaire_token=TOKEN)
    s.validate()
    http = sender.http_session(s)
    yield s, http
    http.close()


def _round(db: Database, feed: tuple[Settings, requests.Session], **kw: Any) -> int:
    return sender.run_once(db, feed[0], feed[1], owner="test", **kw)


def _people(s: Session) -> dict[str, Mailbox]:
    pharmacie, _ = upsert_structure(s, finess="640000001", name="Pharmacie du Centre",
                                    postal_code="64000", city="Pau")
    eloise, _ = upsert_professional(s, rpps="10000000001", first_name="Éloïse",
                                    last_name="Lefèvre", profession="Médecin")
    julie, _ = upsert_professional(s, adeli="640000003", first_name="Julie",
                                   last_name="Bernard", profession="Infirmier")
    app = Mailbox(address="lps.cabinet@mss.test", kind=MailboxKind.APPLICATIVE,
                  structure=pharmacie, professional=eloise)
    s.add(app)
    return {"eloise": new_personal_mailbox(s, eloise, "mss.test"),
            "julie": new_personal_mailbox(s, julie, "mss.test"),
            "org": new_organisational_mailbox(s, pharmacie, "pharma", "du Centre", "mss.test"),
            "app": app}


def _operation(seen: Seen) -> dict[str, Any]:
    Parameters.model_validate(seen.body)  # valid FHIR, as received
    [param] = seen.body["parameter"]
    assert param["name"] == "operation"
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in
            param["part"]}


def _meta(telecom: dict[str, Any]) -> dict[str, Any]:
    [meta] = [e["extension"] for e in telecom["extension"] if e["url"] == EXT_MAILBOX]
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in meta}


def _check(seen: Seen, resource: str, identifier: str) -> dict[str, Any]:
    assert seen.path == f"/fhir/{resource}"
    assert seen.query == {"identifier": [identifier]}  # nothing else in the URL
    assert seen.headers["Content-Type"].startswith("application/fhir+json")
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    return _operation(seen)


def _where(resource: str, address: str) -> str:
    return f"{resource}.telecom.where(value = '{address}')"


def test_each_event_is_one_patch_with_its_conditional_url(db: Database, feed: Any,
                                                          endpoint: Endpoint) -> None:
    with db.transaction() as s:
        boxes = _people(s)
        eloise, julie, org = (boxes[k].address for k in ("eloise", "julie", "org"))
        assert set_liste_rouge(s, boxes["julie"], True)  # pending: nothing to tell yet
        for name in ("eloise", "julie", "org", "app"):
            publish(s, boxes[name])
    assert _round(db, feed) == 3 and len(endpoint.seen) == 3
    ops = [_check(endpoint.seen[0], "Practitioner", f"{IDNPS}|810000000001"),
           _check(endpoint.seen[1], "Practitioner", f"{IDNPS}|0640000003"),
           _check(endpoint.seen[2], "Organization", f"{FINESS}|640000001")]
    for op, address, kind, rouge in zip(ops, (eloise, julie, org), ("PER", "PER", "ORG"),
                                        (False, True, False), strict=True):
        assert op["type"] == "insert" and op["index"] == 0
        assert op["path"] == ("Organization" if kind == "ORG" else "Practitioner") + ".telecom"
        telecom = op["value"]
        assert telecom["system"] == "email" and telecom["value"] == address
        meta = _meta(telecom)
        assert meta["type"]["coding"][0]["code"] == kind and meta["listeRouge"] is rouge
        assert EXT_SMIME not in json.dumps(telecom)
    assert _round(db, feed) == 0  # nothing twice

    with db.transaction() as s:
        box = s.scalars(select(Mailbox).where(Mailbox.address == eloise)).one()
        suspend(s, box)  # not the national directory's business
        publish(s, box)
        assert set_liste_rouge(s, box, True) and not set_liste_rouge(s, box, True)
        close(s, s.scalars(select(Mailbox).where(Mailbox.address == org)).one())
    assert _round(db, feed) == 2
    on, closed = _operation(endpoint.seen[3]), _check(endpoint.seen[4], "Organization",
                                                      f"{FINESS}|640000001")
    assert on["type"] == "replace" and on["path"] == _where("Practitioner", eloise)
    assert on["value"]["value"] == eloise and _meta(on["value"])["listeRouge"] is True
    assert _meta(on["value"])["type"] == _meta(ops[0]["value"])["type"]  # type never changes
    assert closed == {"type": "delete", "path": _where("Organization", org)}

    with db.transaction() as s:
        box = s.scalars(select(Mailbox).where(Mailbox.address == eloise)).one()
        set_liste_rouge(s, box, False)
        close(s, box)
    assert _round(db, feed) == 1 and _round(db, feed) == 1  # one address: one at a time
    off, gone = _operation(endpoint.seen[5]), _operation(endpoint.seen[6])
    assert off["type"] == "replace" and _meta(off["value"])["listeRouge"] is False
    assert gone == {"type": "delete", "path": _where("Practitioner", eloise)}
    with db.transaction() as s:
        rows = s.scalars(select(DirectoryFeed).order_by(DirectoryFeed.id)).all()
        assert {(r.state, r.last_status) for r in rows} == {(FeedState.SENT, 200)}
        assert [r.event.value for r in rows if r.address == eloise] == [
            "published", "liste_rouge_on", "liste_rouge_off", "closed"]


def test_applicative_and_peer_mailboxes_are_never_sent(db: Database, feed: Any,
                                                       endpoint: Endpoint) -> None:
    with db.transaction() as s:
        app = _people(s)["app"]
        publish(s, app)
        set_liste_rouge(s, app, True)
        close(s, app)
        peer = Mailbox(address="dr.x@pair.test", kind=MailboxKind.PERSONAL, operator_id=None,
                       state=MailboxState.PUBLISHED)
        s.add(peer)
        s.flush()
        peer.operator_id = -1  # a peer's mailbox (is_local False) is its operator's to feed
        assert annuaire.record_event(s, peer, annuaire.FeedEvent.CLOSED) is None
        s.expunge(peer)
        assert s.scalar(select(DirectoryFeed.id)) is None
    assert _round(db, feed) == 0 and endpoint.seen == []


def test_the_event_is_in_the_changes_transaction(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError), sqlite_db.transaction() as s:
        publish(s, _people(s)["eloise"])
        raise RuntimeError("the publication fails later in the same use case")
    with sqlite_db.transaction() as s:
        assert s.scalar(select(DirectoryFeed.id)) is None
        box = _people(s)["eloise"]
        box.professional = None  # no RPPS: kept as failed, with why; the publication stands
        publish(s, box)
        [row] = s.scalars(select(DirectoryFeed)).all()
        assert row.state is FeedState.FAILED and "sans professionnel" in row.last_answer
        assert box.state is MailboxState.PUBLISHED


def test_500_is_retried_with_backoff_then_sent(sqlite_db: Database, feed: Any,
                                               endpoint: Endpoint) -> None:
    with sqlite_db.transaction() as s:
        box = _people(s)["eloise"]
        publish(s, box)
        address = box.address
    t0 = utcnow()
    endpoint.statuses.extend([500, 500])
    assert _round(sqlite_db, feed, now=t0) == 1
    with sqlite_db.transaction() as s:
        set_liste_rouge(s, s.scalars(select(Mailbox).where(Mailbox.address == address)).one(),
                        True)
        first = s.scalars(select(DirectoryFeed).order_by(DirectoryFeed.id)).first()
        assert first is not None and first.state is FeedState.PENDING and first.attempts == 1
        assert first.next_attempt_at == t0 + timedelta(seconds=60)
        assert first.last_status == 500 and "Erreur interne du serveur" in first.last_answer
    assert _round(sqlite_db, feed, now=t0 + timedelta(seconds=59)) == 0  # not yet, nor the next
    assert _round(sqlite_db, feed, now=t0 + timedelta(seconds=61)) == 1
    later = t0 + timedelta(seconds=61 + 119)
    assert _round(sqlite_db, feed, now=later) == 0  # 120 s after the second failure
    assert _round(sqlite_db, feed, now=later + timedelta(seconds=2)) == 1
    assert _round(sqlite_db, feed, now=later + timedelta(seconds=3)) == 1  # then, in order
    assert [_operation(seen)["type"] for seen in endpoint.seen] == [
        "insert", "insert", "insert", "replace"]
    assert endpoint.seen[0].body == endpoint.seen[2].body  # the same patch each time
    with sqlite_db.transaction() as s:
        assert [r.state for r in s.scalars(select(DirectoryFeed))] == [FeedState.SENT] * 2


def test_no_answer_is_retried_and_too_many_fail(sqlite_db: Database, settings: Settings) -> None:
    closed = Endpoint()
    closed.close()  # nothing listens there any more
    s_ = settings.replace(annuaire_url=closed.url, annuaire_token=TOKEN)
    with sqlite_db.transaction() as s:
        publish(s, _people(s)["eloise"])
    now = utcnow()
    with sender.http_session(s_) as http:
        for _ in range(annuaire.MAX_ATTEMPTS):
            assert sender.run_once(sqlite_db, s_, http, owner="t", now=now) == 1
            now += timedelta(hours=2)
    with sqlite_db.transaction() as s:
        [row] = s.scalars(select(DirectoryFeed)).all()
        assert row.state is FeedState.FAILED and row.last_status is None
        assert row.last_answer.startswith("pas de réponse (ConnectionError)")


def test_leases_on_postgresql(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): no concurrent claim")
    with db.transaction() as s:
        boxes = _people(s)
        publish(s, boxes["eloise"])
        publish(s, boxes["julie"])
    now = utcnow()
    with db.transaction() as a:
        [first] = annuaire.claim(a, "a", limit=1, now=now)
        with db.transaction() as b:  # meanwhile, another process: the locked row is skipped
            [second] = annuaire.claim(b, "b", now=now)
        assert first.id != second.id
    with db.transaction() as c:
        assert annuaire.claim(c, "c", now=now) == []  # both leased
    with db.transaction() as d:  # workers "a" and "b" died: their leases run out
        again = {c.id: c for c in annuaire.claim(d, "d", now=now + timedelta(seconds=121))}
        assert set(again) == {first.id, second.id} and again[first.id].attempts == 2
    with db.transaction() as e:
        assert annuaire.record_answer(e, first, 200, "200 OK", retry_base=60) is None  # lost
        assert annuaire.record_answer(e, again[first.id], 200, "200 OK",
                                      retry_base=60) is FeedState.SENT


def test_hostile_address_and_name(sqlite_db: Database, feed: Any, endpoint: Endpoint) -> None:
    address = "o'hara\\x%26identifier=1|2#@mss.test"
    name = 'Dr "Bob" O\'Hara\n&identifier=urn|1#<script>é\u2028'
    with sqlite_db.transaction() as s:
        box = _people(s)["eloise"]
        box.address, box.display_name = address, name
        publish(s, box)
        set_liste_rouge(s, box, True)
    assert _round(sqlite_db, feed) == 1 and _round(sqlite_db, feed) == 1
    insert = _check(endpoint.seen[0], "Practitioner", f"{IDNPS}|810000000001")
    assert insert["value"]["value"] == address and _meta(insert["value"])["description"] == name
    replace = _operation(endpoint.seen[1])
    assert replace["path"] == "Practitioner.telecom.where(value = 'o\\'hara\\\\x%26identifier" \
                              "=1|2#@mss.test')"
    literal = replace["path"].split("value = ", 1)[1][:-1]
    assert _unquote(literal) == address
    assert annuaire.fhirpath_string("a\nb'") == "'a\\u000ab\\''"


def _unquote(literal: str) -> str:
    """FHIRPath's string literal back to the string (the escapes fhirpath_string writes)."""
    assert literal[0] == literal[-1] == "'"
    out, chars = [], iter(literal[1:-1])
    for char in chars:
        if char != "\\":
            assert char != "'", "an unescaped quote ends the literal early"
            out.append(char)
            continue
        nxt = next(chars)
        out.append(chr(int("".join(next(chars) for _ in range(4)), 16)) if nxt == "u" else nxt)
    return "".join(out)


# ---------------------------------------------------------------- the operator's page
def _feed_rows(web: Web, address: str) -> list[DirectoryFeed]:
    with web.space.db.transaction() as s:
        rows = s.scalars(select(DirectoryFeed).where(DirectoryFeed.address == address)
                         .order_by(DirectoryFeed.id)).all()
        for row in rows:
            s.expunge(row)
        return list(rows)


def _audit(web: Web, action: str) -> list[AuditRecord]:
    with web.space.db.transaction() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.action == action)
                         .order_by(AuditRecord.id)).all()
        for row in rows:
            s.expunge(row)
        return list(rows)


def test_404_and_412_wait_on_the_operator_page(web: Web, endpoint: Endpoint) -> None:
    s_ = web.space.settings.replace(annuaire_url=endpoint.url, annuaire_token=TOKEN)
    with web.space.db.transaction() as s:
        pro, _ = upsert_professional(s, rpps="10000000031", first_name="Zoé", last_name="Inconnue")
        twin, _ = upsert_professional(s, rpps="10000000032", first_name="Yves", last_name="Double")
        zoe, yves = (new_personal_mailbox(s, p, "mss.test") for p in (pro, twin))
        publish(s, zoe)
        publish(s, yves)
        set_liste_rouge(s, zoe, True)  # waits behind the refused insert
        zoe_address, yves_address = zoe.address, yves.address
    endpoint.statuses.extend([404, 412])
    with sender.http_session(s_) as http:
        assert sender.run_once(web.space.db, s_, http, owner="t") == 2
        assert sender.run_once(web.space.db, s_, http, owner="t") == 0
    refused, waiting = _feed_rows(web, zoe_address)
    assert refused.state is FeedState.NOT_FOUND and waiting.state is FeedState.PENDING
    [ambiguous] = _feed_rows(web, yves_address)
    assert ambiguous.state is FeedState.PRECONDITION_FAILED

    op = web.client()
    login_operator(web, op)
    page = op.get("/operateur/annuaire").get_data(as_text=True)
    assert "Annuaire national" in page and "Flux désactivé" in page
    assert "inconnu de l'annuaire (404)" in page.replace("&#39;", "'")
    assert "identifiant ambigu (412)" in page and "Plusieurs ressources correspondent" in page
    only = op.get("/operateur/annuaire?etat=precondition_failed").get_data(as_text=True)
    assert yves_address in only and zoe_address not in only

    base = "/operateur/annuaire"
    assert post(op, base, {}, action=f"{base}/{refused.id}/renvoyer").status_code == 302
    assert "repart au prochain tour" in op.get(base).get_data(as_text=True)
    assert post(op, base, {}, action=f"{base}/{ambiguous.id}/resolu").status_code == 302
    assert _feed_rows(web, yves_address)[0].state is FeedState.RESOLVED
    with sender.http_session(s_) as http:  # the resent insert, then the liste rouge behind it
        assert sender.run_once(web.space.db, s_, http, owner="t") == 1
        assert sender.run_once(web.space.db, s_, http, owner="t") == 1
    assert [r.state for r in _feed_rows(web, zoe_address)] == [FeedState.SENT] * 2
    assert endpoint.seen[2].body == endpoint.seen[0].body  # "Renvoyer": the same patch
    sent = op.post(f"{base}/{refused.id}/renvoyer", data={"csrf_token": token(op, base)})
    assert sent.status_code == 302 and _feed_rows(web, zoe_address)[0].state is FeedState.SENT
    assert "déjà été accepté" in op.get(base).get_data(as_text=True).replace("&#39;", "'")
    assert [(a.target, a.outcome) for a in _audit(web, "annuaire.resend")][-2:] == [
        (zoe_address, "ok"), (zoe_address, "feed_action_refused")]
    assert _audit(web, "annuaire.resolve")[-1].outcome == "ok"

    again = post(op, base, {}, action=f"{base}/{ambiguous.id}/resolu")  # nothing to resolve
    assert again.status_code == 302 and "n'attend pas d'opérateur" in op.get(base).get_data(
        as_text=True).replace("&#39;", "'")
    assert _audit(web, "annuaire.resolve")[-1].outcome == "feed_action_refused"
    post(op, base, {}, action=f"{base}/999999/renvoyer")  # a forged id
    assert _audit(web, "annuaire.resend")[-1].outcome == "not_found"


def test_liste_rouge_from_the_preferences_page_is_fed(web: Web) -> None:
    marie = web.client()
    login(web, marie, "marie")
    address = "marie.martin@mss.test"
    before = len(_feed_rows(web, address))
    for rouge in (True, False):
        form = {"usual_email": "marie@exemple.fr", **({"liste_rouge": "y"} if rouge else {})}
        assert post(marie, "/compte/preferences", form).status_code == 302
    rows = _feed_rows(web, address)[before:]
    assert [r.event.value for r in rows] == ["liste_rouge_on", "liste_rouge_off"]
    assert all(r.state is FeedState.PENDING for r in rows)


def test_the_page_is_for_operators_only(web: Web) -> None:
    with web.space.db.transaction() as s:
        row = DirectoryFeed(address="x@mss.test", event=annuaire.FeedEvent.CLOSED,
                            resource="Practitioner", identifier=f"{IDNPS}|810000000001",
                            state=FeedState.NOT_FOUND)
        s.add(row)
        s.flush()
        row_id = row.id
    anonymous = web.client()
    assert anonymous.get("/operateur/annuaire").status_code == 302
    marie = web.client()
    login(web, marie, "marie")
    assert marie.get("/operateur/annuaire").status_code == 403
    csrf = token(marie, "/compte/preferences")
    answer = marie.post(f"/operateur/annuaire/{row_id}/resolu", data={"csrf_token": csrf})
    assert answer.status_code == 403
    op = web.client()
    login_operator(web, op)
    assert op.post(f"/operateur/annuaire/{row_id}/resolu").status_code == 400  # no CSRF token
    assert op.get(f"/operateur/annuaire/{row_id}/resolu").status_code == 405  # never a GET
    with web.space.db.transaction() as s:
        assert s.get(DirectoryFeed, row_id).state is FeedState.NOT_FOUND  # type: ignore[union-attr]


# ---------------------------------------------------------------- mss run, mss annuaire, settings
def test_the_service_sends_on_its_own(sqlite_db: Database, feed: Any,
                                      endpoint: Endpoint) -> None:
    off = sender.AnnuaireFeed(feed[0].replace(annuaire_url=""), sqlite_db)
    off.start()
    assert off._thread is None and "flux désactivé" in off.endpoints()[0]
    off.stop()
    service = sender.AnnuaireFeed(feed[0], sqlite_db, interval=0.05)
    service.start()
    try:
        with sqlite_db.transaction() as s:
            publish(s, _people(s)["org"])
        deadline = time.monotonic() + 10
        while not endpoint.seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.stop()
    assert len(endpoint.seen) == 1 and endpoint.seen[0].path == "/fhir/Organization"


def test_mss_annuaire_status_and_resend(settings: Settings) -> None:
    db = Database(settings.effective_database_url)
    db.create_all()
    with db.transaction() as s:
        publish(s, _people(s)["eloise"])
        row = s.scalars(select(DirectoryFeed)).one()
        row.state, row.last_status, row.last_answer = FeedState.NOT_FOUND, 404, "404 Not Found"
        row_id = row.id
    db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}

    def mss(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mss.cli", "--data-dir",
                               str(settings.data_dir), "annuaire", *args], env=env, text=True,
                              capture_output=True, timeout=120,
                              cwd=Path(__file__).parent.parent)

    status = json.loads(mss("status", "--json").stdout)
    assert status["enabled"] is False and status["counts"]["not_found"] == 1
    assert status["entries"][0]["target"] == f"Practitioner?identifier={IDNPS}|810000000001"
    assert "inconnu de l'annuaire (404)" in mss("status").stdout
    assert mss("resend", str(row_id)).returncode == 0
    refused = mss("resend", str(row_id))  # already waiting to go
    assert refused.returncode == 1 and "déjà en cours" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert json.loads(mss("status", "--json").stdout)["counts"]["pending"] == 1


@pytest.mark.parametrize("values, words", [
    ({"annuaire_url": "http://annuaire.example/fhir", "annuaire_token": "t"}, "https://"),
    ({"annuaire_url": "https://annuaire.example/fhir?x=1", "annuaire_token": "t"}, "https://"),
    ({"annuaire_url": "https://annuaire.example/fhir"}, "MSS_ANNUAIRE_TOKEN"),
    ({"annuaire_url": "https://annuaire.example/fhir", "annuaire_client_cert": "c.pem"},
     "vont ensemble"),
])
def test_settings_refuse_an_unsafe_feed(settings: Settings, values: dict[str, str],
                                        words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        settings.replace(**values).validate()
