"""New mail without reloading (issue #17) through Flask's test client, on a real Dovecot and
gateway (``tests.webmail_mail_fixtures``): the event stream (``/courrier/evenements``) and the
polling endpoint (``/courrier/<id>/etat``) of ``webmail.mail.live``, fed by IMAP IDLE
(``mailstore.idle``); their bounds (one stream per session, a process limit, a bounded
duration, the session's expiry); who may watch what; the quota gauge; the desktop
notification settings (``webmail.mail.notify``). Messages arrive by LMTP into Dovecot, as the
gateway's queue delivers them (``mailstore.lmtp``)."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.audit import AuditRecord
from core.db import utcnow
from mailstore import lmtp
from mailstore.errors import ImapError
from mailstore.idle import Target, WatchHub
from mailstore.imap import Quota
from tests.mailstore_fixtures import free_port
from tests.webmail_helpers import Web, login
from tests.webmail_mail_helpers import address, box_id, clinical_message, post_form, text
from webmail import create_app
from webmail.mail.gauge import Gauge, gauge, size_kb_fr
from webmail.mail.live import Live, live, shutdown
from webmail.mail.streams import Busy, StreamSlots
from webmail.models import WebSession
from webmail.service import THREADS, WebmailService
from webmail.sessions import token_id

pytest_plugins = ["tests.webmail_mail_fixtures"]
SUBJECT = "Compte rendu opératoire de M. Patient-Secret"
LIVE_CONFIG = {"LIVE_STREAM_SECONDS": 4.0, "LIVE_HEARTBEAT_SECONDS": 0.5,
               "LIVE_RETRY_MS": 700, "LIVE_LINGER_SECONDS": 0.3}


@pytest.fixture(scope="module")
def web(mail_web: Web) -> Iterator[Web]:
    """The module's webmail, with short stream bounds so that the tests do not wait 50 s; its
    IDLE watches closed at the end (before the module's Dovecot stops)."""
    mail_web.app.config.update(LIVE_CONFIG)
    yield mail_web
    shutdown(mail_web.app)


@pytest.fixture
def signed_in(web: Web, as_user: Callable[[str], FlaskClient]) -> Callable[[str], FlaskClient]:
    return as_user


class Stream:
    """An event stream read in a thread (its generator blocks between events)."""

    def __init__(self, client: FlaskClient, url: str) -> None:
        self.response = client.get(url, buffered=False)
        self.status = self.response.status_code
        self.chunks: queue.Queue[str | None] = queue.Queue()
        self.text = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.response.response:
                self.chunks.put(chunk.decode() if isinstance(chunk, bytes) else chunk)
        finally:
            self.chunks.put(None)

    def events(self, timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """The events, in order, until the stream ends or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = self.chunks.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return
            if chunk is None:
                return
            self.text += chunk
            for block in chunk.split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines()
                              if ": " in line and not line.startswith(":"))
                if "event" in fields:
                    yield fields["event"], json.loads(fields["data"])

    def wait_for(self, predicate: Callable[[str, dict[str, Any]], bool],
                 timeout: float) -> dict[str, Any]:
        for name, data in self.events(timeout):
            if predicate(name, data):
                return data
        raise AssertionError(f"événement attendu absent ; reçu : {self.text[-800:]}")

    def finish(self, timeout: float = 10) -> None:
        for _ in self.events(timeout):
            pass
        self.thread.join(timeout)


def deliver(web: Web, to: str, subject: str = SUBJECT) -> float:
    """One message delivered into Dovecot by LMTP; the moment the delivery ended."""
    raw = clinical_message(address("paul"), [to], subject)
    results = lmtp.deliver(web.space.settings, raw, address("paul"), [to])
    assert all(r.delivered for r in results.values()), results
    return time.monotonic()


def state(client: FlaskClient, box: int, since: int | None = None) -> dict[str, Any]:
    url = f"/courrier/{box}/etat" + (f"?depuis={since}" if since else "")
    answer = client.get(url)
    assert answer.status_code == 200, answer.status_code
    return dict(answer.get_json())


# ---------------------------------------------------------------------- polling
def test_polling_gives_counts_arrivals_and_quota_never_content(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    before = state(marie, box)
    since = before["box"]["uidnext"]
    deliver(web, address("marie"))
    after = state(marie, box, since)
    assert after["box"]["unseen"] == before["box"]["unseen"] + 1
    assert after["total"] == after["box"]["unseen"]  # Marie has one mailbox
    assert after["box"]["new"] == [since]
    assert after["box"]["uidnext"] == since + 1
    quota = after["box"]["quota"]
    assert quota["limit"] == web.space.settings.mailbox_quota_mb * 1024
    assert 0 < quota["used"] < quota["limit"] and quota["level"] == "ok"
    assert quota["text"].endswith(" sur " + size_kb_fr(quota["limit"]))
    raw = marie.get(f"/courrier/{box}/etat?depuis={since}").get_data(as_text=True)
    assert "Patient" not in raw and "paul" not in raw.lower()  # counts and UIDs only


def test_polling_is_not_activity(web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    """The page's own requests do not push the inactivity timeout back (SC.SSI/IE.58)."""
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    row_id = token_id(marie.get_cookie("mss_session").value)  # type: ignore[union-attr]
    old = utcnow() - timedelta(minutes=5)
    with web.space.db.transaction() as session:
        session.execute(update(WebSession).where(WebSession.id == row_id)
                        .values(last_seen_at=old))
    assert marie.get(f"/courrier/{box}/etat").status_code == 200
    with web.space.db.transaction() as session:
        seen = session.scalar(select(WebSession.last_seen_at).where(WebSession.id == row_id))
    assert seen is not None and abs((seen - old).total_seconds()) < 1
    assert marie.get(f"/courrier/{box}").status_code == 200  # a page she asked for: activity
    with web.space.db.transaction() as session:
        seen = session.scalar(select(WebSession.last_seen_at).where(WebSession.id == row_id))
    assert seen is not None and (seen - old).total_seconds() > 60


# ---------------------------------------------------------------------- the stream
def test_stream_says_arrival_within_two_seconds_of_delivery(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    since = state(marie, box)["box"]["uidnext"]
    stream = Stream(marie, f"/courrier/evenements?boite={box}&depuis={since}")
    assert stream.status == 200
    assert stream.response.mimetype == "text/event-stream"
    first = stream.wait_for(lambda n, _d: n == "etat", 5)
    assert stream.text.startswith("retry: 700\n\n")
    assert first["box"]["new"] == []
    delivered = deliver(web, address("marie"))
    arrived = stream.wait_for(lambda n, d: n == "etat" and d["box"]["new"] == [since], 2.0)
    latency = time.monotonic() - delivered
    assert latency < 2.0
    assert arrived["box"]["unseen"] == first["box"]["unseen"] + 1
    assert arrived["total"] == arrived["box"]["unseen"]
    assert stream.wait_for(lambda n, _d: n == "fin", 8)["reason"] == "duree"  # bounded
    stream.finish()
    assert "Patient" not in stream.text and "paul" not in stream.text.lower()
    assert ": ok\n\n" in stream.text  # heartbeats
    print(f"\nlivraison LMTP → événement : {latency * 1000:.0f} ms")


def test_stream_counts_flags_changed_elsewhere(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    """Read in another client (an LPS over IMAP): the unread count goes down live too."""
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    deliver(web, address("marie"), "À lire ailleurs")
    stream = Stream(marie, f"/courrier/evenements?boite={box}")
    first = stream.wait_for(lambda n, _d: n == "etat", 5)
    assert first["box"]["unseen"] >= 1
    conn = web.space.imaps()
    conn.login(address("marie"), "Demo-Passw0rd")
    conn.select("INBOX")
    conn.store("1:*", "+FLAGS", "(\\Seen)")
    conn.logout()
    later = stream.wait_for(lambda n, d: n == "etat" and d["box"]["unseen"] == 0, 5)
    assert later["total"] == 0
    stream.finish()


def test_one_stream_per_session_the_newer_takes_over(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    first = Stream(marie, f"/courrier/evenements?boite={box}")
    first.wait_for(lambda n, _d: n == "etat", 5)
    second = Stream(marie, f"/courrier/evenements?boite={box}")
    assert second.status == 200
    assert first.wait_for(lambda n, _d: n == "fin", 5)["reason"] == "remplacee"
    first.finish()
    second.wait_for(lambda n, _d: n == "etat", 5)
    assert live_of(web).slots.count() == 1  # never two for one session
    second.finish()
    assert live_of(web).slots.count() == 0


def test_one_idle_connection_per_mailbox_shared_and_closed(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    """Paul (administrator) and Julie (user) watch the pharmacy's mailbox: one IDLE watch for
    it, its counts told to both, closed once neither watches."""
    org = box_id(web, address("org"))
    paul, julie = signed_in("paul"), signed_in("julie")
    streams = [Stream(c, f"/courrier/evenements?boite={org}") for c in (paul, julie)]
    for s in streams:
        s.wait_for(lambda n, _d: n == "etat", 5)
    hub = live_of(web).hub
    try:
        assert hub.watching().count(address("org")) == 1
        # (an earlier test's watch may still be lingering: a subset, not equality)
        assert {address("org"), address("paul"), address("julie")} <= set(hub.watching())
        deliver(web, address("org"), "Commande")
        for s in streams:
            data = s.wait_for(lambda n, d: n == "etat" and bool(d["box"]["unseen"]), 3)
            assert data["box"]["id"] == org
            assert data["box"]["quota"]["limit"] == web.space.settings.mailbox_quota_mb * 1024
    finally:
        for s in streams:
            s.finish()
    deadline = time.monotonic() + 5
    while hub.watching() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.watching() == []  # closed after the linger (0.3 s here, 10 s in service)


def test_session_expiry_ends_the_stream(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    stream = Stream(marie, f"/courrier/evenements?boite={box}")
    stream.wait_for(lambda n, _d: n == "etat", 5)
    row_id = token_id(marie.get_cookie("mss_session").value)  # type: ignore[union-attr]
    with web.space.db.transaction() as session:
        session.execute(update(WebSession).where(WebSession.id == row_id).values(
            last_seen_at=utcnow() - timedelta(minutes=web.space.settings
                                              .session_timeout_minutes + 1)))
    assert stream.wait_for(lambda n, _d: n == "fin", 3)["reason"] == "expiree"
    stream.finish()
    again = marie.get(f"/courrier/evenements?boite={box}")
    assert again.status_code == 401 and "reconnectez-vous" in again.get_json()["error"]


def test_logout_everywhere_ends_the_stream(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie, other = signed_in("marie"), signed_in("marie")
    box = box_id(web, address("marie"))
    stream = Stream(marie, f"/courrier/evenements?boite={box}")
    stream.wait_for(lambda n, _d: n == "etat", 5)
    answer = post_form(other, "/compte/sessions/deconnexion", {"scope": "others"})
    assert answer.status_code in (302, 303)
    assert stream.wait_for(lambda n, _d: n == "fin", 3)["reason"] == "expiree"
    stream.finish()


# ---------------------------------------------------------------------- the attacker
def test_no_stream_nor_state_without_a_session(web: Web) -> None:
    anonymous = web.client()
    box = box_id(web, address("marie"))
    for url in (f"/courrier/evenements?boite={box}", f"/courrier/{box}/etat"):
        answer = anonymous.get(url)
        assert answer.status_code == 401
        assert answer.mimetype == "application/json"
        assert "reconnectez-vous" in answer.get_json()["error"]


def test_another_persons_or_organisations_mailbox_is_refused(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    for who in ("paul", "org"):
        box = box_id(web, address(who))
        assert marie.get(f"/courrier/evenements?boite={box}").status_code == 404
        assert marie.get(f"/courrier/{box}/etat").status_code == 404
    for bad in ("", "abc", "-1", "1e3", "9" * 30, "²"):
        assert marie.get(f"/courrier/evenements?boite={bad}").status_code == 404
    with web.space.db.transaction() as session:
        refusals = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mail.access", AuditRecord.actor == address("marie"),
            AuditRecord.outcome == "not_found")).all()
    assert refusals, "refusals are audited"
    assert live_of(web).slots.count() == 0  # nothing was opened for them
    # Julie, "user" delegate of the pharmacy, may watch it (read right).
    julie = signed_in("julie")
    assert julie.get(f"/courrier/{box_id(web, address('org'))}/etat").status_code == 200


def test_cross_site_requests_are_refused(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    answer = marie.get(f"/courrier/evenements?boite={box}",
                       headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 403
    assert marie.get(f"/courrier/{box}/etat",
                     headers={"Sec-Fetch-Site": "same-site"}).status_code == 403


def test_bad_since_is_ignored_not_trusted(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    for bad in ("0", "-5", "abc", "99999999999", "1" * 50):
        data = marie.get(f"/courrier/{box}/etat?depuis={bad}").get_json()
        assert data["box"]["new"] == []
    # depuis=1 on a full mailbox: at most `span` UIDs are ever searched
    assert len(marie.get(f"/courrier/{box}/etat?depuis=1").get_json()["box"]["new"]) <= 1000


def test_process_bound_answers_poll_instead(web: Web) -> None:
    """MSS_WEB_EVENT_STREAMS reached: 503 with Retry-After, the page polls (js/live.js)."""
    app = _app(web, web_event_streams=1)
    marie, paul = _client(web, app, "marie"), _client(web, app, "paul")
    first = Stream(marie, f"/courrier/evenements?boite={box_id(web, address('marie'))}")
    first.wait_for(lambda n, _d: n == "etat", 5)
    refused = paul.get(f"/courrier/evenements?boite={box_id(web, address('paul'))}")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "30"
    assert refused.get_json()["poll"] == 30 and "30 secondes" in refused.get_json()["error"]
    assert paul.get(f"/courrier/{box_id(web, address('paul'))}/etat").status_code == 200
    first.finish()
    live_of_app(app).hub.close()
    app.extensions["mss.imap"].close()


def test_no_streams_configured_means_polling(web: Web) -> None:
    app = _app(web, web_event_streams=0)
    marie = _client(web, app, "marie")
    box = box_id(web, address("marie"))
    assert marie.get(f"/courrier/evenements?boite={box}").status_code == 503
    page = text(marie.get(f"/courrier/{box}"))
    assert 'data-live-events=""' in page and f'data-live-poll="/courrier/{box}/etat' in page
    app.extensions["mss.imap"].close()


def test_real_server_gives_streams_threads_of_their_own(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    """The webmail as ``mss run`` serves it (cheroot, TLS) with MSS_WEB_EVENT_STREAMS=2: its
    pool has 16 + 2 threads; two streams read with ``requests``; a third is refused (503, the
    page polls); ordinary requests are still answered at once while both streams are open."""
    settings = web.space.settings.replace(web_port=free_port(), web_event_streams=2)
    service = WebmailService(settings, web.space.db, mailer=web.mailer,
                             test_config={**LIVE_CONFIG, "LIVE_STREAM_SECONDS": 30.0})
    service.start()
    streams: list[requests.Response] = []
    try:
        assert service._server.numthreads == THREADS + 2
        base = f"https://localhost:{service.port}"
        ca = str(settings.pki_dir / "ca.pem")
        cookies = {who: {"mss_session": signed_in(who).get_cookie("mss_session").value}
                   for who in ("marie", "paul", "julie")}  # type: ignore[union-attr]
        for who in ("marie", "paul"):
            box = box_id(web, address(who))
            answer = requests.get(f"{base}/courrier/evenements?boite={box}", cookies=cookies[who],
                                  verify=ca, stream=True, timeout=10)
            assert answer.status_code == 200
            assert answer.headers["Content-Type"].startswith("text/event-stream")
            lines = answer.iter_lines(decode_unicode=True)
            assert next(lines) == "retry: 700"
            assert next(line for line in lines if line) == "event: etat"  # sent at once
            streams.append(answer)
        julie = box_id(web, address("julie"))
        refused = requests.get(f"{base}/courrier/evenements?boite={julie}", verify=ca,
                               cookies=cookies["julie"], timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
        started = time.monotonic()
        polled = requests.get(f"{base}/courrier/{julie}/etat", cookies=cookies["julie"],
                              verify=ca, timeout=10)
        assert polled.status_code == 200 and polled.json()["box"]["id"] == julie
        assert time.monotonic() - started < 2
    finally:
        for answer in streams:
            answer.close()
        service.stop()


def _app(web: Web, **settings: Any) -> Flask:
    app = create_app(web.space.settings.replace(**settings), web.space.db,
                     {**web.app.config, **LIVE_CONFIG}, mailer=web.mailer,
                     acl_sync=lambda: None)
    return app


def _client(web: Web, app: Flask, who: str) -> FlaskClient:
    other = Web(web.space, app, web.mailer, web.sms_spool)
    client = other.client()
    login(other, client, who)
    return client


def live_of(web: Web) -> Live:
    return live_of_app(web.app)


def live_of_app(app: Flask) -> Live:
    with app.test_request_context():
        return live()


# ---------------------------------------------------------------------- the page
def test_list_page_carries_its_baseline_and_gauge(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    box = box_id(web, address("marie"))
    now = state(marie, box)["box"]
    page = text(marie.get(f"/courrier/{box}"))
    assert f'data-live-uidnext="{now["uidnext"]}"' in page
    assert f'data-live-events="/courrier/evenements?boite={box}&amp;depuis={now["uidnext"]}"' \
        in page
    assert 'data-live-folder="INBOX"' in page
    assert '<meter min="0"' in page and "Espace utilisé" in page
    assert f"sur {size_kb_fr(web.space.settings.mailbox_quota_mb * 1024)}" in page
    assert 'src="/static/js/live.js"' in page and 'type="module"' in page


def test_organisational_mailbox_gauge_for_a_delegate(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    """Dovecot does not show delegates the quota of another user: the gauge adds up the
    folders' sizes (STATUS=SIZE) against the directory's quota."""
    paul = signed_in("paul")
    org = box_id(web, address("org"))
    quota = state(paul, org)["box"]["quota"]
    assert quota is not None and quota["limit"] == web.space.settings.mailbox_quota_mb * 1024
    assert quota["used"] > 0  # the orders delivered above
    assert "Espace utilisé" in text(paul.get(f"/courrier/{org}"))


def test_gauge_levels_and_french_sizes() -> None:
    assert [size_kb_fr(k) for k in (0, 820, 1024, 2560, 319_488, 1_048_576, 1_572_864)] == [
        "0 ko", "820 ko", "1 Mo", "2,5 Mo", "312 Mo", "1 Go", "1,5 Go"]
    assert Gauge(319_488, 1_048_576).text == "312 Mo sur 1 Go"
    levels = {p: Gauge(p * 1024, 100 * 1024).level for p in (0, 79, 80, 89, 90, 100)}
    assert levels == {0: "ok", 79: "ok", 80: "warn", 89: "warn", 90: "full", 100: "full"}
    g80 = Gauge(80 * 1024, 100 * 1024)
    assert g80.value > g80.low and g80.value < g80.high  # <meter>: amber at 80 % itself
    g90 = Gauge(90 * 1024, 100 * 1024)
    assert g90.value > g90.high  # red at 90 % itself
    assert Gauge(120, 100).percent == 100 and Gauge(120, 100).value == 100  # over quota
    assert gauge(None) is None and gauge(Quota(1, None)) is None
    assert "supprimez" in g90.note and g80.note and not Gauge(1, 100).note


def test_stream_slots_bounds() -> None:
    slots = StreamSlots(2)
    a = slots.open("session-a")
    b = slots.open("session-b")
    with pytest.raises(Busy) as full:
        slots.open("session-c")
    assert full.value.scope == "process"

    def let_go() -> None:  # the older stream notices its end and lets go
        assert a.wake.wait(2) and a.reason == "remplacee"
        slots.close(a)

    helper = threading.Thread(target=let_go)
    helper.start()
    a2 = slots.open("session-a")
    helper.join()
    assert slots.count() == 2 and a2 is not a
    with pytest.raises(Busy) as held:  # the older does not let go in time
        slots.open("session-b", wait=0.05)
    assert held.value.scope == "session" and b.reason == "remplacee"
    slots.end_all("arret")
    assert a2.reason == "arret"


def test_watch_hub_refuses_after_close() -> None:
    def never(_login: str) -> Any:
        raise ImapError("injoignable")

    hub = WatchHub(never)
    hub.close()
    with pytest.raises(ImapError):
        hub.subscribe(Target("a@mss.test"), "a@mss.test", threading.Event())


# ---------------------------------------------------------------------- notifications
def test_notification_settings_saved_audited_and_bounded(
        web: Web, signed_in: Callable[[str], FlaskClient]) -> None:
    marie = signed_in("marie")
    page = text(marie.get("/compte/preferences"))
    assert "Notifications du navigateur" in page and 'data-notify-ask' in page
    assert 'src="/static/js/notify.js"' in page
    assert marie.post("/courrier/notifications", data={"navigateur": "oui"}).status_code == 400
    answer = post_form(marie, "/courrier/notifications", {"navigateur": "oui"})
    assert answer.status_code in (302, 303)
    box = box_id(web, address("marie"))
    listing = text(marie.get(f"/courrier/{box}"))
    assert 'data-notify="1"' in listing and 'data-notify-details=""' in listing
    assert 'id="notify-enable"' in listing  # the button that asks the browser, hidden
    refused = post_form(marie, "/courrier/notifications", {"details": "oui"},
                        headers={"Accept": "application/json"})
    assert refused.status_code == 400 and "activées" in refused.get_json()["error"]
    for bad in ({"navigateur": "peut-être"}, {"navigateur": "oui" * 1000},
                {"navigateur": "oui", "details": "\r\nX: y"}):
        assert post_form(marie, "/courrier/notifications", bad,
                         headers={"Accept": "application/json"}).status_code == 400
        shown = post_form(marie, "/courrier/notifications", bad, follow_redirects=True)
        assert "Choix invalide" in text(shown)  # a form without script: the reason, on the page
    assert 'data-notify-details=""' in text(marie.get(f"/courrier/{box}"))  # nothing changed
    both = post_form(marie, "/courrier/notifications", {"navigateur": "oui", "details": "oui"},
                     headers={"Accept": "application/json"})
    assert both.status_code == 200 and "expéditeur" in both.get_json()["message"]
    assert 'data-notify-details="1"' in text(marie.get(f"/courrier/{box}"))
    with web.space.db.transaction() as session:
        changes = [json.loads(r.request).get("changed") for r in session.scalars(
            select(AuditRecord).where(AuditRecord.action == "account.preferences",
                                      AuditRecord.actor == address("marie")))]
    assert ["browser_notify"] in changes and ["browser_notify_details"] in changes
    off = post_form(marie, "/courrier/notifications", {})
    assert off.status_code in (302, 303)
    listing = text(marie.get(f"/courrier/{box}"))
    assert 'data-notify=""' in listing and 'id="notify-enable"' not in listing
