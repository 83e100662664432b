"""Attacks over IMAP (issue #14 items 2, 3 and 5), each through the real Dovecot and gateway.

- Item 2: wrong IMAP passwords count into the account's one lock-out (Dovecot's auth policy
  answered by mss, ``mailstore.hooks``); once locked, the right password is refused on IMAP,
  SMTP and the webmail's login function alike; a forged report to the policy server is refused;
  the webmail's master log-ins never lock the user.
- Item 3: IMAP ACLs follow the directory only: SETACL/DELETEACL from clients are refused.
- Item 5: IMAP actions (folder create/rename/delete, moves, ``\\Deleted``, expunges) are in the
  hash-chained audit trail with their author, and no message content is.
"""

from __future__ import annotations

import imaplib
import json
import logging
import re
import shutil
import smtplib
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from imapclient import IMAPClient
from sqlalchemy import select, update

from core import audit
from core.audit import AuditRecord
from core.db import utcnow
from mailstore.credentials import master_credentials
from mailstore.hooks import HEADER
from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD, TrustSpace
from trust_space.accounts import AccountLocked, authenticate_password
from trust_space.models import Account

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
WRONG = "Pas-le-bon-mot-de-passe-1"


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _account(space: TrustSpace, login: str) -> Account:
    with space.db.transaction() as session:
        account = session.execute(select(Account).where(Account.login == login)).scalar_one()
        session.expunge(account)
        return account


def _audit_since(space: TrustSpace, first_id: int, action: str | None = None,
                 ) -> list[AuditRecord]:
    with space.db.transaction() as session:
        query = select(AuditRecord).where(AuditRecord.id > first_id).order_by(AuditRecord.id)
        if action is not None:
            query = query.where(AuditRecord.action == action)
        rows = list(session.scalars(query))
        for row in rows:
            session.expunge(row)
        return rows


def _last_audit_id(space: TrustSpace) -> int:
    with space.db.transaction() as session:
        return max([r.id for r in audit.recent(session, 1)] or [0])


def _unlock(space: TrustSpace, login: str) -> None:
    with space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == login)
                        .values(failed_attempts=0, locked_until=None))


def _imap_login(space: TrustSpace, login: str, password: str) -> bool:
    conn = space.imaps()
    try:
        conn.login(login, password)
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
    return True


def _smtp_login(op: Operator, login: str, password: str) -> bool:
    with smtplib.SMTP("127.0.0.1", op.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=op.client_context())
        try:
            smtp.login(login, password)
        except smtplib.SMTPAuthenticationError:
            return False
    return True


@pytest.fixture
def space(operator: Operator) -> TrustSpace:
    assert operator.dovecot.wait_ready(30)
    return operator.space


# ---------------------------------------------------------------------- item 2: lock-out
def test_wrong_imap_passwords_lock_the_account_everywhere(operator: Operator,
                                                          space: TrustSpace) -> None:
    leo = space.address("leo")
    limit = space.settings.login_max_failures
    start = _last_audit_id(space)
    assert _imap_login(space, leo, PASSWORD)  # the right password works before the attack
    for _ in range(limit):
        assert not _imap_login(space, leo, WRONG)
    # Dovecot reports after answering the client: wait for the last report to be counted.
    assert _eventually(lambda: (_account(space, leo).failed_attempts or 0) >= limit)
    account = _account(space, leo)
    assert account.locked_until is not None and account.locked_until > utcnow()
    try:
        assert not _imap_login(space, leo, PASSWORD)  # locked: even the right password fails
        assert not _smtp_login(operator, leo, PASSWORD)  # the gateway sees the same lock
        with space.db.transaction() as session, pytest.raises(AccountLocked):
            authenticate_password(session, leo, PASSWORD)  # the webmail's log-in
        # Guesses during the lock neither count nor extend it.
        assert not _imap_login(space, leo, WRONG)
        assert _eventually(lambda: [  # both reports handled (audited, not counted)
            r.outcome for r in _audit_since(space, start, "imap.login") if r.actor == leo
        ].count("locked") >= 2)
        assert _account(space, leo).failed_attempts == limit
        rows = _audit_since(space, start, "imap.login")
        outcomes = [r.outcome for r in rows if r.actor == leo]
        assert outcomes[0] == "ok" and outcomes.count("bad_password") == limit
        assert "locked" in outcomes[limit + 1:]
        last_guess = [r for r in rows if r.outcome == "bad_password"][-1]
        assert json.loads(last_guess.request)["locked"] is True
        assert json.loads(last_guess.request)["remote"] == "127.0.0.1"
        assert all(WRONG not in r.request and PASSWORD not in r.request for r in rows)
        with space.db.transaction() as session:
            assert audit.verify(session).ok
    finally:
        _unlock(space, leo)
    assert _imap_login(space, leo, PASSWORD)


def test_lock_expiry_opens_imap_again(space: TrustSpace) -> None:
    emma = space.address("emma")
    with space.db.transaction() as session:  # a lock that ended a minute ago
        session.execute(update(Account).where(Account.login == emma).values(
            failed_attempts=space.settings.login_max_failures,
            locked_until=utcnow() - timedelta(minutes=1)))
    assert not _imap_login(space, emma, WRONG)
    assert _eventually(lambda: _account(space, emma).failed_attempts == 1)
    assert _account(space, emma).locked_until is None
    assert _imap_login(space, emma, PASSWORD)
    _unlock(space, emma)


def test_webmail_master_logins_never_lock_the_user(space: TrustSpace) -> None:
    emma = space.address("emma")
    master = master_credentials(space.settings)
    start = _last_audit_id(space)
    for _ in range(space.settings.login_max_failures + 1):
        assert not _imap_login(space, master.login_for(emma), "not-the-master-secret")
    assert _eventually(lambda: len(_audit_since(space, start, "imap.login")) >= 6)
    assert _account(space, emma).failed_attempts == 0
    assert _account(space, emma).locked_until is None
    assert _imap_login(space, master.login_for(emma), master.secret)
    assert _imap_login(space, emma, PASSWORD)
    # The audit record comes with Dovecot's policy report (mailstore.authpolicy), which may
    # arrive after the client has its OK.
    assert _eventually(lambda: {r.outcome for r in _audit_since(space, start, "imap.login")
                                if r.actor == emma} >= {"master_failed", "ok"})
    rows = _audit_since(space, start, "imap.login")
    assert all(master.secret not in r.request for r in rows)


def test_forged_policy_requests_are_refused(operator: Operator, space: TrustSpace) -> None:
    """Another local user can reach the loopback port, not the secret: a forged report would
    lock Marie out, a forged event would write the audit trail."""
    hooks = operator.dovecot.hooks
    assert hooks is not None
    marie = space.address("marie")
    start = _last_audit_id(space)
    report = json.dumps({"login": marie, "mech": "PLAIN", "remote": "192.0.2.1", "tls": True,
                         "success": False, "policy_reject": False}).encode()
    base = hooks.endpoint.base_url
    attempts = [(f"{base}/policy?command=report", {}), (f"{base}/policy?command=report",
                                                       {HEADER: "guessed"}),
                (f"{base}/policy?command=allow", {}), (f"{base}/events/guessed", {})]
    for url, headers in attempts * 3:
        request = urllib.request.Request(url, data=report, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        refused.value.close()
    assert _account(space, marie).failed_attempts == 0
    assert _audit_since(space, start) == []


def test_a_policy_request_whose_sender_hangs_up_is_logged_quietly(
        operator: Operator, space: TrustSpace, caplog: pytest.LogCaptureFixture) -> None:
    """Dovecot hangs up before the answer when its auth process reloads or stops, or its
    request times out: an ordinary event, one line in mss's log, no error or traceback, and
    the server goes on answering."""
    hooks = operator.dovecot.hooks
    assert hooks is not None
    url = urlsplit(hooks.endpoint.base_url)
    body = json.dumps({"login": space.address("marie"), "mech": "PLAIN",
                       "remote": "192.0.2.1", "tls": True}).encode()
    request = (f"POST /policy?command=allow HTTP/1.1\r\nHost: {url.hostname}\r\n"
               f"{HEADER}: {hooks.endpoint.secret}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    caplog.set_level(logging.INFO, logger="mss.mailstore")
    for _ in range(5):
        sock = socket.create_connection((url.hostname, url.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(request)
        sock.close()  # a reset, before the answer
    answer = urllib.request.urlopen(urllib.request.Request(
        f"{hooks.endpoint.base_url}/policy?command=allow", data=body, method="POST",
        headers={HEADER: hooks.endpoint.secret, "Content-Type": "application/json"}),
        timeout=5)
    assert answer.status == 200 and json.loads(answer.read())["status"] == 0
    mine = [r for r in caplog.records if r.name == "mss.mailstore"]
    assert not [r for r in mine if r.levelno >= logging.WARNING], [r.getMessage() for r in mine]


def test_policy_server_down_fails_closed(space: TrustSpace) -> None:
    """With mss's policy server gone, Dovecot refuses password log-ins (reject_on_fail)."""
    from mailstore.service import DovecotService
    from tests.mailstore_fixtures import TEST_OPTIONS

    settings = space.sibling_settings()
    service = DovecotService(settings, space.db, options=TEST_OPTIONS)
    service.start()
    try:
        def login() -> bool:
            conn = imaplib.IMAP4_SSL("127.0.0.1", settings.imaps_port,
                                     ssl_context=space.tls_context(), timeout=10)
            try:
                conn.login(space.address("julie"), PASSWORD)
                return True
            except imaplib.IMAP4.error:
                return False
            finally:
                conn.shutdown()
        assert login()
        assert service.hooks is not None
        service.hooks.stop()  # the port is closed, Dovecot still runs
        assert not login()
    finally:
        service.hooks = None
        service.stop()
        shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


# ---------------------------------------------------------------------- item 3: ACLs
def _client(space: TrustSpace, name: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=space.settings.imaps_port,
                        ssl_context=space.tls_context(), timeout=10)
    client.login(space.address(name), PASSWORD)
    return client


def _can_select(space: TrustSpace, name: str, folder: str) -> bool:
    conn = space.imaps()
    conn.login(space.address(name), PASSWORD)
    try:
        typ, _ = conn.select(f'"{folder}"', readonly=True)
        return typ == "OK"
    finally:
        conn.logout()


def test_owner_cannot_share_a_personal_inbox_by_setacl(space: TrustSpace) -> None:
    marie, julie = space.address("marie"), space.address("julie")
    conn = space.imaps()
    conn.login(marie, PASSWORD)
    try:
        typ, data = conn.setacl("INBOX", julie, "lr")
        assert typ == "NO" and b"NOPERM" in data[0]
        typ, _ = conn.deleteacl("INBOX", "owner")
        assert typ == "NO"
        typ, data = conn.myrights("INBOX")
        assert typ == "OK"
        rights = data[0].split()[-1].decode()
        assert "a" not in rights and set("lrwstipekx") <= set(rights)
    finally:
        conn.logout()
    time.sleep(2.5)  # past acl_cache_secs (2 s in tests)
    assert not _can_select(space, "julie", f"shared/{marie}/INBOX")


def test_delegation_administrator_cannot_grant_rights_over_imap(space: TrustSpace) -> None:
    org, marie = space.address("org"), space.address("marie")
    folder = f"shared/{org}/INBOX"
    conn = space.imaps()
    conn.login(space.address("paul"), PASSWORD)
    try:
        assert conn.select(f'"{folder}"', readonly=True)[0] == "OK"  # his delegation works
        typ, data = conn.setacl(f'"{folder}"', marie, "lrswipkxtea")
        assert typ == "NO" and b"NOPERM" in data[0]
        typ, _ = conn.deleteacl(f'"{folder}"', space.address("julie"))
        assert typ == "NO"
        typ, data = conn.myrights(f'"{folder}"')
        assert typ == "OK" and b"a" not in data[0].split()[-1]
    finally:
        conn.logout()
    time.sleep(2.5)
    assert not _can_select(space, "marie", folder)
    assert _can_select(space, "julie", folder)  # Julie's delegation is untouched


# ---------------------------------------------------------------------- item 5: audit
def _wait_actions(operator: Operator, space: TrustSpace, start: int, wanted: set[str],
                  done: Callable[[list[AuditRecord]], bool] = lambda rows: True,
                  ) -> list[AuditRecord]:
    """The audit rows since ``start`` once every ``wanted`` action is there and ``done``
    holds (Dovecot's events reach the audit trail one by one: one row of an action does not
    mean all of them)."""
    hooks = operator.dovecot.hooks
    assert hooks is not None

    def seen() -> bool:
        hooks.audit.drain()
        rows = _audit_since(space, start)
        return wanted <= {r.action for r in rows} and done(rows)
    assert _eventually(seen), {r.action for r in _audit_since(space, start)}
    return _audit_since(space, start)


def test_imap_actions_are_audited_without_content(operator: Operator,
                                                  space: TrustSpace) -> None:
    marie = space.address("marie")
    subject = "Compte-rendu-confidentiel-Dupont-7c1f"
    start = _last_audit_id(space)
    client = _client(space, "marie")
    try:
        client.create_folder("Dossiers")
        client.rename_folder("Dossiers", "Archives-2026")
        client.create_folder("A-effacer")
        client.delete_folder("A-effacer")
        appended = [client.append("INBOX", space.message(subject,
                                                         body="Patient Dupont, résultats.\n")),
                    client.append("INBOX", space.message(subject + "-2"))]
        client.select_folder("INBOX")
        # The UIDs from APPENDUID (RFC 4315), not from SEARCH SUBJECT: see
        # test_subject_search_is_a_substring_search for what the full-text index answers.
        uids = [int(re.search(rb"APPENDUID \d+ (\d+)", a).group(1)) for a in appended]
        client.move([uids[0]], "Archives-2026")
        client.copy([uids[1]], "Archives-2026")
        client.delete_messages([uids[1]])
        client.expunge()
    finally:
        client.logout()
    def expunged_uids(rows: list[AuditRecord]) -> set[str]:
        return {json.loads(r.request)["uid"] for r in rows if r.action == "imap.mail_expunged"}
    # Both expunges: the moved message's and the deleted one's (CI saw the second row arrive
    # after the first, once every action had one).
    rows = _wait_actions(operator, space, start, {
        "imap.login", "imap.folder_create", "imap.folder_rename", "imap.folder_delete",
        "imap.move", "imap.copy", "imap.flag_deleted", "imap.expunge", "imap.mail_expunged"},
        done=lambda rows: {str(uid) for uid in uids} <= expunged_uids(rows))
    mine = [r for r in rows if r.action.startswith("imap.") and r.action != "imap.login"]
    assert all(r.actor == marie and r.target == marie for r in mine)
    by_action = {r.action: json.loads(r.request) for r in mine}
    def args(action: str) -> str:  # the command's arguments as sent (imapclient quotes)
        return str(by_action[action]["args"]).replace('"', "")
    assert args("imap.folder_rename") == "Dossiers Archives-2026"
    assert args("imap.folder_delete") == "A-effacer"
    assert "Archives-2026" in by_action["imap.move"]["args"]
    assert "\\Deleted" in by_action["imap.flag_deleted"]["args"]
    assert {str(uid) for uid in uids} <= expunged_uids(mine)  # the moved one, the expunged one
    assert all(r.outcome == "ok" for r in mine)
    # ECO.4.1.2 with CONVENTIONS 12: ids and folder names, never the subject or the body.
    for r in rows:
        assert "confidentiel" not in r.request and "Dupont" not in r.request
    with space.db.transaction() as session:
        assert audit.verify(session).ok


def test_webmail_actions_are_audited_as_the_user_via_webmail(operator: Operator,
                                                             space: TrustSpace) -> None:
    julie = space.address("julie")
    master = master_credentials(space.settings)
    start = _last_audit_id(space)
    client = IMAPClient("127.0.0.1", port=space.settings.imaps_port,
                        ssl_context=space.tls_context(), timeout=10)
    client.login(master.login_for(julie), master.secret)
    try:
        client.create_folder("Par-le-webmail")
        client.delete_folder("Par-le-webmail")
    finally:
        client.logout()
    rows = _wait_actions(operator, space, start, {"imap.folder_create", "imap.folder_delete"})
    made = [r for r in rows if r.action in ("imap.folder_create", "imap.folder_delete")]
    assert all(r.actor == julie and json.loads(r.request)["via"] == "webmail" for r in made)
    assert not [r for r in rows if r.action == "imap.login"]  # the webmail audits its own


def test_ordinary_flags_and_reads_are_not_audited(operator: Operator, space: TrustSpace) -> None:
    client = _client(space, "paul")
    try:
        client.append("INBOX", space.message("Lecture simple"))
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", "Lecture simple"])
        start = _last_audit_id(space)
        client.add_flags(uids, [b"\\Seen", b"\\Flagged"])
        client.fetch(uids, ["ENVELOPE"])
        client.create_folder("Repere")
        client.delete_folder("Repere")
    finally:
        client.logout()
    rows = _wait_actions(operator, space, start, {"imap.folder_delete"})
    assert "imap.flag_deleted" not in {r.action for r in rows}



def test_subject_search_is_a_substring_search(space: TrustSpace) -> None:
    """RFC 3501 §6.4.4 for a long hyphenated subject: fts-xapian indexes it as one word with
    its pieces up to ``full`` characters (mailstore.fts: 40; with 20 the "-2" one was not
    found, issue #17). What the index still does not do: tests/test_mailstore_search.py."""
    subject = "Compte-rendu-confidentiel-Dupont-9d2e"
    client = _client(space, "marie")
    try:
        client.append("INBOX", space.message(subject))
        client.append("INBOX", space.message(subject + "-2"))
        client.select_folder("INBOX")
        assert len(client.search(["SUBJECT", subject])) == 2
    finally:
        client.logout()
