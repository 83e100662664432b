"""Pro Santé Connect access tokens on IMAP and SMTP (issue #16): SASL OAUTHBEARER (RFC 7628)
and XOAUTH2, with real tokens from the PSC stand-in (panva's oidc-provider on loopback, the
real authorization code flow), the real Dovecot (``passdb oauth2`` asking mss's hook server)
and the real gateway. People are ``tests.mailstore_fixtures``': Marie (personal box, and the
applicative box of her practice is bound to its own software), Paul (administrator of the
pharmacy's organisational box), Julie (user of it), Louis (locked), Sophie (suspended), Hugo
(mailbox suspended)."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import logging
import shutil
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sqlalchemy import select, update

from core.audit import AuditRecord
from mss.app import App
from mss.psc_standin import LPS_CLIENT, OTHER_CLIENT, PscStandIn, clients, demo_settings, sign_in
from tests.gateway_fixtures import Operator, build_operator, start_operator, stop_operator
from tests.mailstore_fixtures import PASSWORD, PEOPLE, free_port, open_tempdir
from trust_space.models import Account

TTL = 12  # seconds an access token lives at the stand-in (tests see one expire)
MARIE, PAUL, JULIE = (f"{p}@mss.test" for p in ("marie.martin", "paul.durand", "julie.bernard"))
ORG, LPS = "pharma.ducentre.64000@mss.test", "lps.cabinetmartin@mss.test"


@dataclass
class Psc:
    """The operator, the stand-in, every token the module used (none may be logged), and
    every log record of the module."""

    op: Operator
    standin: PscStandIn
    tokens: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    @property
    def settings(self):  # noqa: ANN201 - tests only
        return self.op.settings

    def token(self, who: str, client: str = LPS_CLIENT) -> str:
        """A fresh access token for one of ``PEOPLE`` by the real code flow."""
        value = sign_in(self.settings, PEOPLE[who].national_id, PASSWORD,
                        client_id=client)["access_token"]
        self.tokens.append(value)
        return str(value)

    def http(self) -> requests.Session:
        http = requests.Session()
        http.trust_env = False  # REQUESTS_CA_BUNDLE would replace ``verify``
        http.verify = str(self.settings.pki_dir / "ca.pem")
        return http

    def revoke(self, token: str) -> None:
        issuer = self.settings.oidc_issuer
        with self.http() as http:
            endpoint = http.get(f"{issuer}/.well-known/openid-configuration",
                                timeout=10).json()["revocation_endpoint"]
            answer = http.post(endpoint, data={"token": token,
                                               "token_type_hint": "access_token"},
                               auth=(LPS_CLIENT, clients(self.settings)[LPS_CLIENT]),
                               timeout=10)
        assert answer.status_code == 200


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


@pytest.fixture(scope="module")
def psc() -> Iterator[Psc]:
    root = open_tempdir("mss-oauth-")
    space = build_operator(root, "mss.test", "Operateur Un")
    # The oidc settings must be there before Dovecot and the gateway start.
    space.settings = space.settings.replace(**demo_settings(space.settings, free_port()))
    app = App(space.settings)
    standin = PscStandIn(app, access_token_seconds=TTL)
    standin.start()
    records: list[str] = []
    handler, root_logger = _Collect(records), logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)  # aiosmtpd's AUTH lines too
    try:
        op = start_operator(space)
    except BaseException:
        standin.stop()
        raise
    yield Psc(op, standin, records=records)
    stop_operator(op)
    standin.stop()
    app.close()
    root_logger.removeHandler(handler)
    root_logger.setLevel(level)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_locks(psc: Psc) -> None:
    """Every test starts with no failure counted (Louis stays locked: that is his part)."""
    with psc.op.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                        .values(failed_attempts=0, locked_until=None))


# ---------------------------------------------------------------------- helpers
def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(authzid: str, token: str) -> str:
    header = f"n,a={authzid}," if authzid else "n,,"
    return base64.b64encode(f"{header}\x01auth=Bearer {token}\x01\x01".encode()).decode()


@contextlib.contextmanager
def smtp(psc: Psc) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP("127.0.0.1", psc.op.port("submission"), timeout=30) as client:
        client.starttls(context=psc.op.client_context())
        client.ehlo()
        yield client


def smtp_refused(psc: Psc, mechanism: str, blob: str) -> dict[str, str]:
    """The RFC 7628 exchange of a refused token: the JSON error (returned), the client's
    dummy answer, then 535 5.7.8."""
    with smtp(psc) as client:
        code, challenge = client.docmd("AUTH", f"{mechanism} {blob}")
        assert code == 334, (code, challenge)
        code, text = client.docmd("AQ==" if mechanism == "OAUTHBEARER" else "")
        assert code == 535 and text.startswith(b"5.7.8"), (code, text)
        assert client.mail(MARIE)[0] == 530  # still not authenticated
    return dict(json.loads(base64.b64decode(challenge)))


def imap(psc: Psc) -> IMAPClient:
    return IMAPClient("127.0.0.1", port=psc.settings.imaps_port, ssl=True,
                      ssl_context=psc.op.space.tls_context(), timeout=15)


def imap_fails(psc: Psc, login: Callable[[IMAPClient], object]) -> str:
    """``login`` refused on a fresh IMAPS connection; the refusal's text."""
    client = imap(psc)
    try:
        with pytest.raises(LoginError) as refused:
            login(client)
    finally:
        client.shutdown()
    return str(refused.value)


def imap_refused(psc: Psc, mechanism: str, user: str, token: str) -> tuple[dict[str, str], str]:
    """Dovecot's side of the exchange: the JSON error challenge, then the tagged NO."""
    conn = imaplib.IMAP4_SSL("127.0.0.1", psc.settings.imaps_port,
                             ssl_context=psc.op.space.tls_context(), timeout=15)
    challenges: list[bytes] = []
    first = (f"user={user}\x01auth=Bearer {token}\x01\x01" if mechanism == "XOAUTH2"
             else f"n,a={user},\x01auth=Bearer {token}\x01\x01").encode()

    def answer(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return first if len(challenges) == 1 else b"\x01"

    try:
        with pytest.raises(imaplib.IMAP4.error) as refused:
            conn.authenticate(mechanism, answer)
    finally:
        conn.shutdown()
    assert len(challenges) == 2, challenges
    return dict(json.loads(challenges[1])), str(refused.value)


def audits(psc: Psc, action: str, target: str, *, wait_for: str = "",
           timeout: float = 5.0) -> list[AuditRecord]:
    """Audit records of ``action`` on ``target``, newest first (waits for ``wait_for``:
    Dovecot's policy report may arrive just after the client's reply)."""
    deadline = time.monotonic() + timeout
    while True:
        with psc.op.space.db.transaction() as session:
            rows = list(session.scalars(select(AuditRecord).where(
                AuditRecord.action == action, AuditRecord.target == target)
                .order_by(AuditRecord.id.desc())))
            session.expunge_all()
        if not wait_for or (rows and rows[0].outcome == wait_for) \
                or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``check`` (Dovecot reports to the policy server after answering the client)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "jamais vrai"
        time.sleep(0.05)


def failures(psc: Psc, login: str) -> int:
    with psc.op.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == login))
        assert account is not None
        return account.failed_attempts or 0


# ---------------------------------------------------------------------- offered after TLS only
def test_smtp_offers_the_token_mechanisms_after_tls_only(psc: Psc) -> None:
    with smtplib.SMTP("127.0.0.1", psc.op.port("submission"), timeout=30) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "XOAUTH2 " + xoauth2(MARIE, psc.token("marie")))
        assert code in (530, 538) and text.startswith(b"5.7.")
        client.starttls(context=psc.op.client_context())
        client.ehlo()
        offered = client.esmtp_features["auth"].upper().split()
        assert {"OAUTHBEARER", "XOAUTH2", "PLAIN", "EXTERNAL"} <= set(offered)


def test_imap_offers_the_token_mechanisms_after_tls_only(psc: Psc) -> None:
    """From another address (127.0.0.2: Dovecot counts loopback as secure), nothing before
    STARTTLS; after it, both mechanisms."""
    sock = socket.create_connection(("127.0.0.1", psc.settings.imap_port), timeout=10,
                                    source_address=("127.0.0.2", 0))
    stream = sock.makefile("rwb")
    stream.readline()
    stream.write(b"a CAPABILITY\r\n")
    stream.flush()
    before = b""
    while not before.endswith(b"\r\n") or b"a OK" not in before:
        before += stream.readline()
    sock.close()
    assert b"AUTH=OAUTHBEARER" not in before and b"AUTH=XOAUTH2" not in before
    conn = imaplib.IMAP4("127.0.0.1", psc.settings.imap_port, timeout=10)
    conn.starttls(psc.op.space.tls_context())
    assert {"AUTH=OAUTHBEARER", "AUTH=XOAUTH2"} <= set(conn.capabilities)
    conn.logout()


def test_imap_token_without_tls_is_refused_even_from_loopback(psc: Psc) -> None:
    """Loopback without TLS: Dovecot would go on, mss's auth policy refuses (not counted)."""
    token = psc.token("marie")
    conn = imaplib.IMAP4("127.0.0.1", psc.settings.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        conn.authenticate("XOAUTH2", lambda _: f"user={MARIE}\x01auth=Bearer {token}\x01\x01")
    conn.shutdown()
    assert audits(psc, "imap.login", MARIE, wait_for="refused")[0].outcome == "refused"
    assert failures(psc, MARIE) == 0


# ---------------------------------------------------------------------- accepted
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_opens_the_holders_own_mailbox(psc: Psc, mechanism: str) -> None:
    client = imap(psc)
    token = psc.token("marie")
    if mechanism == "XOAUTH2":
        client.oauth2_login(MARIE, token)
    else:
        client.oauthbearer_login(MARIE, token)
    assert client.select_folder("INBOX")
    client.logout()
    record = audits(psc, "imap.login", MARIE, wait_for="ok")[0]
    assert record.outcome == "ok"
    details = json.loads(record.request)
    assert details["mechanism"] == mechanism and details["client"] == LPS_CLIENT
    assert details["national_id"] == "810000000001"


def test_imap_delegate_reaches_the_organisational_mailbox_in_the_shared_namespace(
        psc: Psc) -> None:
    """Paul's token opens Paul's box, where the pharmacy's appears with his delegation's
    rights, as with his card; logging in as the pharmacy's box itself is refused (it would
    give owner rights whatever the role)."""
    client = imap(psc)
    client.oauthbearer_login(PAUL, psc.token("paul"))
    assert client.select_folder(f"shared/{ORG}/INBOX")
    client.logout()
    challenge, refusal = imap_refused(psc, "OAUTHBEARER", ORG, psc.token("paul"))
    assert challenge["status"] == "invalid_token" and "AUTHENTICATIONFAILED" in refusal


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_smtp_sends_as_the_holder(psc: Psc, mechanism: str) -> None:
    token = psc.token("marie")
    blob = xoauth2(MARIE, token) if mechanism == "XOAUTH2" else oauthbearer(MARIE, token)
    subject = f"Par jeton {mechanism}"
    with smtp(psc) as client:
        code, text = client.docmd("AUTH", f"{mechanism} {blob}")
        assert code == 235, text
        client.sendmail(MARIE, [PAUL], psc.op.space.message(subject))
    psc.op.wait_for(PAUL, lambda raw: subject.encode() in raw)
    record = audits(psc, "smtp.auth", MARIE)[0]
    assert record.outcome == "ok" and json.loads(record.request)["client"] == LPS_CLIENT


@pytest.mark.parametrize("authzid", [ORG, "", "810000000002"])
def test_smtp_delegate_sends_as_the_organisational_mailbox(psc: Psc, authzid: str) -> None:
    """Paul, administrator of the pharmacy's box: with it as authzid, with none, or with his
    national id; MAIL FROM the pharmacy is his delegation's."""
    with smtp(psc) as client:
        code, text = client.docmd("AUTH", "OAUTHBEARER " + oauthbearer(authzid,
                                                                       psc.token("paul")))
        assert code == 235, text
        assert client.mail(ORG)[0] == 250
        client.rset()
        assert client.mail(MARIE)[0] == 550  # not his


def test_smtp_initial_response_may_come_after_an_empty_challenge(psc: Psc) -> None:
    with smtp(psc) as client:
        assert client.docmd("AUTH", "XOAUTH2")[0] == 334
        assert client.docmd(xoauth2(MARIE, psc.token("marie")))[0] == 235


def test_smtp_takes_a_long_token_line(psc: Psc) -> None:
    """RFC 4954 §4: AUTH lines up to 12288 octets (a PSC access token is a JWT of 1-2 kB); a
    long unknown token gets the RFC 7628 refusal, not '500 line too long'."""
    error = smtp_refused(psc, "XOAUTH2", xoauth2(MARIE, "x" * 4000))
    assert error["status"] == "401"
    with smtp(psc) as client:  # other commands keep their 512
        assert client.docmd("NOOP", "x" * 600)[0] == 500


# ---------------------------------------------------------------------- refused
def test_rfc7628_error_exchange_on_smtp(psc: Psc) -> None:
    issuer = psc.settings.oidc_issuer
    error = smtp_refused(psc, "OAUTHBEARER", oauthbearer(MARIE, "not-a-token"))
    assert error == {"status": "invalid_token", "scope": psc.settings.oidc_scope,
                     "openid-configuration": f"{issuer}/.well-known/openid-configuration"}
    error = smtp_refused(psc, "XOAUTH2", xoauth2(MARIE, "not-a-token"))
    assert error == {"status": "401", "schemes": "bearer", "scope": psc.settings.oidc_scope}
    assert failures(psc, MARIE) == 2
    outcomes = [r.outcome for r in audits(psc, "smtp.auth", MARIE)[:2]]
    assert outcomes == ["token_invalid", "token_invalid"]


def test_rfc7628_error_exchange_on_imap(psc: Psc) -> None:
    issuer = psc.settings.oidc_issuer
    error, refusal = imap_refused(psc, "OAUTHBEARER", MARIE, "not-a-token")
    assert error == {"status": "invalid_token",
                     "openid-configuration": f"{issuer}/.well-known/openid-configuration"}
    assert "AUTHENTICATIONFAILED" in refusal
    error, refusal = imap_refused(psc, "XOAUTH2", MARIE, "not-a-token")
    assert error["status"] == "401" and "AUTHENTICATIONFAILED" in refusal
    eventually(lambda: failures(psc, MARIE) == 2)
    record = audits(psc, "imap.login", MARIE)[0]
    assert record.outcome == "bad_token"
    assert json.loads(record.request)["reason"] == "token_invalid"


def test_smtp_abort_and_malformed_responses(psc: Psc) -> None:
    with smtp(psc) as client:
        code, _ = client.docmd("AUTH", "OAUTHBEARER " + oauthbearer(MARIE, "not-a-token"))
        assert code == 334
        assert client.docmd("*")[0] == 501  # RFC 4954 §4: the client cancels
        channel_binding = base64.b64encode(b"p=tls-unique,,\x01auth=Bearer abc\x01\x01")
        assert client.docmd("AUTH", "OAUTHBEARER " + channel_binding.decode())[0] == 501
        no_bearer = base64.b64encode(f"user={MARIE}\x01auth=Basic abc\x01\x01".encode())
        assert client.docmd("AUTH", "XOAUTH2 " + no_bearer.decode())[0] == 501


@dataclass(frozen=True)
class Refusal:
    who: str  # whose token
    asked: str  # the mailbox asked for
    reason: str  # the audit's reason
    client: str = LPS_CLIENT


REFUSALS = {
    "another_persons_mailbox": Refusal("marie", PAUL, "authzid_not_allowed"),
    "applicative_mailbox": Refusal("marie", LPS, "authzid_not_allowed"),
    "wrong_audience": Refusal("marie", MARIE, "token_audience", client=OTHER_CLIENT),
    "suspended_account": Refusal("sophie", "sophie.roux@mss.test", "no_account"),
    "suspended_mailbox": Refusal("hugo", "hugo.blanc@mss.test", "mailbox_suspended"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_on_smtp(psc: Psc, case: str) -> None:
    r = REFUSALS[case]
    token = psc.token(r.who, r.client)
    assert smtp_refused(psc, "XOAUTH2", xoauth2(r.asked, token))["status"] == "401"
    assert smtp_refused(psc, "OAUTHBEARER", oauthbearer(r.asked, token))["status"] == \
        "invalid_token"
    record = audits(psc, "smtp.auth", r.asked)[0]
    assert record.outcome == r.reason
    assert failures(psc, r.asked) == 2  # the mailbox asked for, as with a wrong password


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_on_imap(psc: Psc, case: str) -> None:
    r = REFUSALS[case]
    token = psc.token(r.who, r.client)
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        error, refusal = imap_refused(psc, mechanism, r.asked, token)
        assert error["status"] in ("401", "invalid_token") and "AUTHENTICATIONFAILED" in refusal
    eventually(lambda: failures(psc, r.asked) == 2)
    records = audits(psc, "imap.login", r.asked)[:2]
    assert [rec.outcome for rec in records] == ["bad_token"] * 2
    assert {json.loads(record.request)["reason"] for record in records} == {r.reason}


def test_revoked_token_is_refused(psc: Psc) -> None:
    token = psc.token("marie")
    psc.revoke(token)
    smtp_refused(psc, "XOAUTH2", xoauth2(MARIE, token))
    imap_fails(psc, lambda client: client.oauth2_login(MARIE, token))
    assert audits(psc, "smtp.auth", MARIE)[0].outcome == "token_invalid"


def test_expired_token_is_refused_even_after_it_was_accepted(psc: Psc) -> None:
    """The introspection cache (core.oidc) keeps an answer no longer than the token lives."""
    token = psc.token("marie")
    born = time.monotonic()
    with smtp(psc) as client:
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(MARIE, token))[0] == 235
    client_imap = imap(psc)
    client_imap.oauth2_login(MARIE, token)
    client_imap.logout()
    time.sleep(max(0.0, TTL + 1 - (time.monotonic() - born)))
    smtp_refused(psc, "XOAUTH2", xoauth2(MARIE, token))
    error, _ = imap_refused(psc, "XOAUTH2", MARIE, token)
    assert error["status"] == "401"
    assert audits(psc, "smtp.auth", MARIE)[0].outcome == "token_invalid"


def test_token_failures_lock_the_account_like_passwords(psc: Psc) -> None:
    """Five refused tokens for Julie's box, over SMTP and IMAP: her account is locked (the one
    lock-out of the webmail, IMAP and SMTP); then even her own valid token is refused, on
    both, and her password too."""
    for attempt in range(5):
        if attempt % 2:
            imap_refused(psc, "XOAUTH2", JULIE, f"guess-{attempt}")
            eventually(lambda n=attempt + 1: failures(psc, JULIE) == n)
        else:
            smtp_refused(psc, "OAUTHBEARER", oauthbearer(JULIE, f"guess-{attempt}"))
    with psc.op.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == JULIE))
        assert account is not None and account.locked_until is not None
    token = psc.token("julie")
    smtp_refused(psc, "XOAUTH2", xoauth2(JULIE, token))
    assert audits(psc, "smtp.auth", JULIE)[0].outcome == "account_locked"
    imap_fails(psc, lambda client: client.oauth2_login(JULIE, token))
    assert audits(psc, "imap.login", JULIE, wait_for="locked")[0].outcome == "locked"
    imap_fails(psc, lambda client: client.login(JULIE, PASSWORD))


def test_locked_account_token_refused(psc: Psc) -> None:
    """Louis's account is locked: his valid token opens nothing."""
    louis = "louis.petit@mss.test"
    token = psc.token("louis")
    smtp_refused(psc, "XOAUTH2", xoauth2(louis, token))
    imap_fails(psc, lambda client: client.oauthbearer_login(louis, token))


def test_introspection_endpoint_answers_dovecot_only(psc: Psc) -> None:
    """Another local user cannot use mss's loopback endpoint to test tokens or learn whose
    they are: without the hooks' secret (Dovecot's client_secret), 403."""
    hooks = psc.op.dovecot.hooks
    assert hooks is not None
    url = hooks.endpoint.base_url + "/oauth2/introspect"
    token = psc.token("marie")
    with requests.Session() as http:
        http.trust_env = False
        for secret in ("", "guess", hooks.endpoint.secret[:-1]):
            answer = http.post(url, data={"token": token, "client_id": "dovecot",
                                          "client_secret": secret}, timeout=10)
            assert answer.status_code == 403 and "username" not in answer.text
        answer = http.post(url, data={"token": token, "client_id": "dovecot",
                                      "client_secret": hooks.endpoint.secret}, timeout=10)
    assert answer.json() == {"active": True, "username": MARIE, "client_id": LPS_CLIENT}


# ---------------------------------------------------------------------- provider down
def test_provider_unavailable_is_temporary_and_not_counted(psc: Psc) -> None:
    token = psc.token("marie")
    psc.standin.stop()
    try:
        with smtp(psc) as client:
            code, text = client.docmd("AUTH", "XOAUTH2 " + xoauth2(MARIE, token))
            assert code == 454 and text.startswith(b"4.7.0"), text
        assert "UNAVAILABLE" in imap_fails(psc, lambda c: c.oauth2_login(MARIE, token))
        assert audits(psc, "smtp.auth", MARIE)[0].outcome == "token_unavailable"
        assert audits(psc, "imap.login", MARIE, wait_for="unavailable")[0].outcome == \
            "unavailable"
        assert failures(psc, MARIE) == 0
    finally:
        psc.standin.start()


# ---------------------------------------------------------------------- never kept
def test_tokens_never_in_logs_or_audit(psc: Psc) -> None:
    """Every token this module used (valid, revoked, expired, refused), looked for in mss's
    log records (aiosmtpd's debug lines included), Dovecot's log and the audit trail."""
    assert psc.tokens
    dovecot_log = psc.op.dovecot.paths.log.read_text(errors="replace")
    assert "oauth2" in dovecot_log or "OAUTHBEARER" in dovecot_log  # it did log the attempts
    with psc.op.space.db.transaction() as session:
        trail = "\n".join(f"{r.actor} {r.target} {r.request} {r.outcome}"
                          for r in session.scalars(select(AuditRecord)))
    logs = "\n".join(psc.records)
    assert "AUTH" in logs  # aiosmtpd's lines were captured (sanitised)
    for token in psc.tokens:
        assert token not in dovecot_log
        assert token not in trail
        assert token not in logs
    config = psc.op.dovecot.paths.conf_dir / "oauth2.conf.ext"
    assert config.stat().st_mode & 0o077 == 0  # the hooks' secret

