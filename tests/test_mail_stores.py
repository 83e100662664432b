"""Several mail-store hosts (issue #19): two real Dovecots, ``store1`` on 127.0.0.1 and
``store2`` on 127.0.0.2 (the same ports, as two hosts would have), on one database and CA,
each started by ``DovecotService`` with ``MSS_MAIL_STORES=store1=127.0.0.1,store2=127.0.0.2``.
Marie's mailbox lives on store2, everyone else's on store1 (NULL, the default).

What is checked, with real clients over real TLS: the gateway's LMTP routing puts each
recipient's copy on its store only; IMAP at either store reads a mailbox of the other (the
passdb's proxy fields, Dovecot logging in as ``mss-proxy`` over TLS), with a password, a card
(SASL EXTERNAL) or the webmail's master user; a wrong password is refused by the store the
client reached; ``mss-proxy``'s secret is refused from an address that is not a store's; a
delivery aimed at the wrong store is refused; the operator's ``mss store place``."""

from __future__ import annotations

import imaplib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from core.audit import AuditRecord
from core.errors import ConfigError
from core.settings import Settings
from mailstore import credentials, sql
from mailstore.errors import UnknownMailbox
from mailstore.lmtp import LmtpClient
from mailstore.lmtps import LMTP_CLIENT_NAME
from mailstore.service import DovecotService
from mailstore.stores import StoreLmtp
from mss.app import App
from mss.psc_standin import LPS_CLIENT, PscStandIn, demo_settings, sign_in
from mss.setup import write_pair
from tests.mailstore_fixtures import (
    PASSWORD,
    PEOPLE,
    TEST_OPTIONS,
    TrustSpace,
    build,
    free_port,
    make_settings,
    open_tempdir,
)
from trust_space.models import Mailbox

pytestmark = pytest.mark.timeout(180)

STORES = "store1=127.0.0.1,store2=127.0.0.2"
SECRET_KEY = "0123456789abcdef" * 4  # MSS_SECRET_KEY, shared by every host of an installation
SENDER = "emma.garnier@mss.test"
MARIE = "marie.martin@mss.test"  # on store2
PAUL = "paul.durand@mss.test"  # on store1 (default)


@dataclass
class Stores:
    space: TrustSpace
    one: Settings
    two: Settings
    services: list[DovecotService]

    def imaps(self, settings: Settings, card: str | None = None) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(settings.listen_address, settings.imaps_port,
                                 ssl_context=self.space.tls_context(card), timeout=10)

    def count(self, settings: Settings, user: str, token: str) -> int:
        """Messages carrying ``token`` in ``user``'s INBOX, read at ``settings``' store."""
        with self.imaps(settings) as imap:
            imap.login(user, self.space.password)
            return _count(imap, token)


def _count(imap: imaplib.IMAP4, token: str) -> int:
    imap.select("INBOX", readonly=True)
    _, data = imap.search(None, "HEADER", "Message-ID", f"<{token}@stores.test>")
    return len(data[0].split())


def _message(token: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: {MARIE}, {PAUL}\r\nSubject: magasins\r\n"
            f"Message-ID: <{token}@stores.test>\r\n\r\nBonjour.\r\n").encode()


def _home(settings: Settings, address: str) -> Path:
    local, _, domain = address.partition("@")
    return settings.data_dir.resolve() / "mail" / domain / local


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    root = open_tempdir("mss-stores-")
    lmtps = free_port()
    one = make_settings(root / "data", mail_stores=STORES, mail_store="store1",
                        secret_key=SECRET_KEY, lmtp_url=f"lmtps://127.0.0.1:{lmtps}")
    space = build(one)
    # Pro Santé Connect tokens on IMAP at store1 (its stand-in, as tests/test_oauth_sasl.py)
    one = space.settings = one.replace(**demo_settings(one, free_port()))
    app = App(one)
    standin = PscStandIn(app, access_token_seconds=120)
    standin.start()
    two = space.sibling_settings(
        mail_stores=STORES, mail_store="store2", secret_key=SECRET_KEY,
        listen_address="127.0.0.2", imap_port=one.imap_port, imaps_port=one.imaps_port,
        managesieve_port=one.managesieve_port, lmtp_url=f"lmtps://127.0.0.2:{lmtps}")
    with space.db.transaction() as session:
        session.execute(update(Mailbox).where(Mailbox.address == MARIE)
                        .values(mail_store="store2"))
        write_pair(space.pki.issue_server(session, ["localhost"], ["127.0.0.2"]),
                   two.pki_dir / "server.crt", two.pki_dir / "server.key")
        cert, key = one.lmtp_client_pair  # the gateway's LMTP client certificate
        write_pair(space.pki.issue_client(session, f"{LMTP_CLIENT_NAME} gw1"), cert, key)
    # the webmail's master secret, the same on every store (README, Scaling)
    secret = credentials.master_credentials(one).secret
    (two.data_dir / "dovecot").mkdir(parents=True)
    (two.data_dir / "dovecot" / credentials.MASTER_SECRET_FILE).write_text(secret)
    services: list[DovecotService] = []
    try:
        for settings in (one, two):
            services.append(DovecotService(settings, space.db, options=TEST_OPTIONS))
            services[-1].start()
        yield Stores(space, one, two, services)
    finally:
        for service in services:
            service.stop()
        standin.stop()
        app.close()
        space.db.dispose()
        for path in (root, *space.scratch):
            shutil.rmtree(path, ignore_errors=True)


def test_gateway_delivers_to_each_recipients_store(stores: Stores) -> None:
    router = StoreLmtp(stores.one, stores.space.db)
    token = f"route{time.monotonic_ns()}"
    results = router.deliver(_message(token), SENDER, [MARIE, PAUL, "marie.martin+Sent@mss.test"])
    assert all(r.delivered for r in results.values()), results
    # each mailbox's mail is on its own store's disk, and nowhere else
    assert _home(stores.two, MARIE).is_dir() and not _home(stores.one, MARIE).exists()
    assert _home(stores.one, PAUL).is_dir() and not _home(stores.two, PAUL).exists()
    assert stores.count(stores.two, MARIE, token) == 1  # local at store2
    assert stores.count(stores.one, PAUL, token) == 1  # local at store1


def test_login_at_either_store_reads_a_mailbox_of_the_other(stores: Stores) -> None:
    token = f"either{time.monotonic_ns()}"
    StoreLmtp(stores.one, stores.space.db).deliver(_message(token), SENDER, [MARIE, PAUL])
    assert stores.count(stores.one, MARIE, token) == 1  # store1 proxies to store2
    assert stores.count(stores.two, PAUL, token) == 1  # store2 proxies to store1
    # the proxied session is a real one on the other store: what it writes is there
    with stores.imaps(stores.one) as imap:
        imap.login(MARIE, stores.space.password)
        assert imap.create("Dossier-store2")[0] == "OK"
    assert any(p.name == "Dossier-store2"
               for p in (_home(stores.two, MARIE) / "sdbox" / "mailboxes").iterdir())
    # and audited by store2 (its Dovecot's events, mailstore.events), as Marie's, via the proxy
    deadline = time.monotonic() + 15
    found: str | None = None
    while found is None and time.monotonic() < deadline:
        with stores.space.db.read() as session:
            found = session.scalars(select(AuditRecord.request).where(
                AuditRecord.action == "imap.folder_create", AuditRecord.target == MARIE,
                AuditRecord.request.contains("Dossier-store2"))).first()
        time.sleep(0.2)
    assert found is not None and '"via": "mss-proxy"' in found, found


def test_wrong_password_is_refused_by_the_store_reached(stores: Stores) -> None:
    with stores.imaps(stores.one) as imap, pytest.raises(imaplib.IMAP4.error,
                                                         match="AUTHENTICATIONFAILED"):
        imap.login(MARIE, "Pas-le-bon-1")
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert f"sql({MARIE},127.0.0.1,<" in log and "Password mismatch" in log  # at store1


def test_card_login_is_proxied(stores: Stores) -> None:
    token = f"card{time.monotonic_ns()}"
    StoreLmtp(stores.one, stores.space.db).deliver(_message(token), SENDER, [MARIE])
    with stores.imaps(stores.one, card="marie") as imap:
        assert imap.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
        assert _count(imap, token) == 1
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert "Started proxying to <127.0.0.2> (master mss-proxy)" in log
    assert any("(master mss-proxy)" in line and "method=EXTERNAL" in line
               for line in log.splitlines())


def test_token_login_is_proxied(stores: Stores) -> None:
    """OAUTHBEARER with a real access token of the PSC stand-in: store1 checks the token (its
    passdb oauth2 asking mss), then the token-proxy passdb sends the session to store2."""
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    token = f"jeton{time.monotonic_ns()}"
    StoreLmtp(stores.one, stores.space.db).deliver(_message(token), SENDER, [MARIE])
    access = sign_in(stores.one, PEOPLE["marie"].national_id, PASSWORD,
                     client_id=LPS_CLIENT)["access_token"]
    client = IMAPClient("127.0.0.1", port=stores.one.imaps_port, ssl=True,
                        ssl_context=stores.space.tls_context(), timeout=15)
    try:
        client.oauthbearer_login(MARIE, access)
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["HEADER", "Message-ID", f"<{token}@stores.test>"])) == 1
    finally:
        client.logout()
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert any("(master mss-proxy)" in line and "method=OAUTHBEARER" in line
               for line in log.splitlines())
    assert access not in log  # the token is never logged
    # a mailbox of store1 (Paul's): the token-proxy passdb finds no row, the login stays local
    local = IMAPClient("127.0.0.1", port=stores.one.imaps_port, ssl=True,
                       ssl_context=stores.space.tls_context(), timeout=15)
    try:
        local.oauthbearer_login(PAUL, sign_in(stores.one, PEOPLE["paul"].national_id, PASSWORD,
                                              client_id=LPS_CLIENT)["access_token"])
        assert local.select_folder("INBOX", readonly=True)
    finally:
        local.logout()
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert any(f"Login: user=<{PAUL}>, method=OAUTHBEARER" in line for line in log.splitlines())
    # and a token that is not one is refused at store1, never proxied
    with IMAPClient("127.0.0.1", port=stores.one.imaps_port, ssl=True,
                    ssl_context=stores.space.tls_context(), timeout=15) as bad, \
            pytest.raises(LoginError):
        bad.oauthbearer_login(MARIE, "pas-un-jeton")


def test_webmail_master_login_is_proxied(stores: Stores) -> None:
    token = f"webmail{time.monotonic_ns()}"
    StoreLmtp(stores.one, stores.space.db).deliver(_message(token), SENDER, [MARIE])
    master = credentials.master_credentials(stores.one)
    with stores.imaps(stores.one) as imap:
        imap.login(master.login_for(MARIE), master.secret)
        assert _count(imap, token) == 1
    # store1 handed the webmail's master login over as such (not as mss-proxy's): store2 opens
    # it as a webmail session (its full-text search, mailstore.sql.user_query)
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert "Started proxying to <127.0.0.2> (master webmail)" in log


def test_in_doubt_check_reads_the_recipients_store_over_imap(stores: Stores) -> None:
    """A gateway whose mail is on other hosts asks the recipient's store over IMAP whether a
    message left in doubt is there (gateway.deliver.probes.ImapProbe): Marie's mailbox is on
    store2, the question goes to store1, which proxies it. doveadm on store1's host cannot
    answer for her (not its mailbox): that is why. Exact field only: a piece of the
    Message-ID, another account, a folder never created are all « no »; a folder listed but
    refused is « cannot say »."""
    from dataclasses import replace

    from core.db import utcnow
    from gateway.deliver.probes import DoveadmProbe, ImapProbe, probe_for
    from mailstore.config import DovecotPaths
    from mailstore.pool import ImapPool

    probe = probe_for(stores.one)
    assert isinstance(getattr(probe, "__self__", None), ImapProbe)
    token = f"doute{time.monotonic_ns()}-{'compte-rendu-' * 6}"
    key = f"<{token}@stores.test>"
    assert StoreLmtp(stores.one, stores.space.db).deliver(
        _message(token), SENDER, [MARIE])[MARIE].delivered
    now = utcnow()
    assert probe(MARIE, "INBOX", key, now) is True
    assert probe(MARIE, "INBOX", key[:-12] + ">", now) is False  # a piece is not the field
    assert probe(MARIE, "INBOX", key.upper(), now) is False
    assert probe(PAUL, "INBOX", key, now) is False  # on store1, and not his
    assert probe(MARIE, "Jamais-cree", key, now) is False
    # INBOX listed but refused (a disk or permission error of the moment): unknown, not « no »
    inbox = next(DovecotPaths.from_settings(stores.two).mail_dir.glob(
        "*/marie.martin/sdbox/mailboxes/INBOX"))
    mode = inbox.stat().st_mode
    inbox.chmod(0)
    try:
        assert probe(MARIE, "INBOX", key, now) is None
    finally:
        inbox.chmod(mode)
    assert probe(MARIE, "INBOX", key, now) is True
    # store1's doveadm does not know Marie's mailbox: it cannot say (None), never « no »
    local = DoveadmProbe(DovecotPaths.from_settings(stores.one))
    assert local.holds(MARIE, "INBOX", key, now) is None
    # the store out of reach, or the master secret refused: unknown, so not delivered again
    pool = ImapPool.for_settings(stores.one, timeout=5)
    closed = ImapProbe(lambda: replace_pool(pool, port=free_port()))
    assert closed.holds(MARIE, "INBOX", key, now) is None
    wrong = ImapProbe(lambda: replace_pool(pool, credentials=replace(pool.credentials,
                                                                     secret="faux")))
    assert wrong.holds(MARIE, "INBOX", key, now) is None


def test_a_gateway_elsewhere_reads_no_master_secret_until_a_message_is_in_doubt(
        tmp_path: Path) -> None:
    """probe_for on a gateway host (lmtps://) picks the IMAP check and touches nothing at
    start: the master secret is read (or, wrongly placed, created) only by a real question."""
    from gateway.deliver.probes import ImapProbe, probe_for

    settings = make_settings(tmp_path / "data", lmtp_url="lmtps://127.0.0.1:2424")
    probe = probe_for(settings)
    assert isinstance(getattr(probe, "__self__", None), ImapProbe)
    assert not (settings.data_dir / "dovecot" / credentials.MASTER_SECRET_FILE).exists()


def replace_pool(pool: Any, **changes: Any) -> Any:
    """A new ImapPool like ``pool`` with ``changes`` (host, port, credentials)."""
    from mailstore.pool import ImapPool

    values = {"host": pool.host, "port": pool.port, "ssl_context": pool.ssl_context,
              "credentials": pool.credentials, **changes}
    return ImapPool(values.pop("host"), values.pop("port"), values.pop("ssl_context"),
                    values.pop("credentials"), timeout=5)


def test_webmail_filters_are_proxied_over_managesieve(stores: Stores) -> None:
    """The webmail's ManageSieve client at store1 edits Marie's scripts on store2 (the proxy
    speaks STARTTLS to store2's ManageSieve port)."""
    from mailstore.managesieve import SieveService

    service = SieveService.for_settings(stores.one)
    assert service.host == "127.0.0.1"
    with service.session(MARIE) as sieve:
        sieve.put_script("magasins", 'require "fileinto";\nkeep;\n')
        assert "magasins" in {s.name for s in sieve.list_scripts()}
    assert list((_home(stores.two, MARIE)).glob("**/magasins.sieve"))
    assert not _home(stores.one, MARIE).exists()
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert any("managesieve-login" in line and "Started proxying to <127.0.0.2>" in line
               for line in log.splitlines())


class _FromAddress(imaplib.IMAP4_SSL):
    """imaplib over TLS from a chosen local address (another host, on the loopback)."""

    source = "127.0.0.1"

    def _create_socket(self, timeout: float | None) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout,
                                       source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def test_proxy_master_secret_is_refused_outside_the_stores(stores: Stores) -> None:
    secret = credentials.proxy_secret(stores.two)
    login = f"{PAUL}*{sql.PROXY_MASTER}"  # Paul lives on store1: log in there directly

    class Outsider(_FromAddress):
        source = "127.0.0.3"

    with Outsider("127.0.0.1", stores.one.imaps_port, ssl_context=stores.space.tls_context(),
                  timeout=10) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(login, secret)
    log = (stores.one.data_dir / "log" / "dovecot.log").read_text()
    assert "allow_real_nets check failed: IP 127.0.0.3 not in allowed networks" in log
    class Store2(_FromAddress):
        source = "127.0.0.2"  # store2's own address: the same secret opens the mailbox

    with Store2("127.0.0.1", stores.one.imaps_port, ssl_context=stores.space.tls_context(),
                timeout=10) as imap:
        assert imap.login(login, secret)[0] == "OK"


def test_delivery_at_the_wrong_store_is_refused(stores: Stores) -> None:
    token = f"wrong{time.monotonic_ns()}"
    client = LmtpClient.for_settings(stores.one, timeout=10)  # store1 only
    result = client.deliver(_message(token), SENDER, [MARIE])[MARIE]
    assert isinstance(result.error, UnknownMailbox), result
    assert not _home(stores.one, MARIE).exists()


def test_operator_places_a_mailbox(stores: Stores) -> None:
    """A new mailbox is placed before it gets mail; an open one (Julie's, on store1, with a
    message) is copied with ``doveadm backup`` to store2's disk first, then placed
    (``--moved``): what the README's procedure says."""
    from mss.cli import main

    julie = "julie.bernard@mss.test"
    early = f"early{time.monotonic_ns()}"
    router = StoreLmtp(stores.one, stores.space.db)
    assert router.deliver(_message(early), SENDER, [julie])[julie].delivered
    copy = subprocess.run(
        [shutil.which("doveadm") or "/usr/bin/doveadm", "-c",
         str(stores.one.data_dir.resolve() / "dovecot" / "dovecot.conf"), "backup", "-u", julie,
         f"sdbox:{_home(stores.two, julie)}/sdbox"],
        capture_output=True, text=True, timeout=60, check=False)
    assert copy.returncode == 0, copy.stderr

    env = {"MSS_DATA_DIR": str(stores.one.data_dir), "MSS_MAIL_STORES": STORES,
           "MSS_SECRET_KEY": SECRET_KEY}
    runner = CliRunner()
    bad = runner.invoke(main, ["store", "place", "julie.bernard@mss.test", "store9"], env=env)
    assert bad.exit_code == 1 and "magasin de courrier inconnu : « store9 »" in bad.output
    unknown = runner.invoke(main, ["store", "place", "nobody@mss.test", "store2"], env=env)
    assert unknown.exit_code == 1 and "boîte aux lettres inconnue" in unknown.output
    opened = runner.invoke(main, ["store", "place", "julie.bernard@mss.test", "store2"], env=env)
    assert opened.exit_code == 1 and "est déjà ouverte" in opened.output  # may hold mail
    ok = runner.invoke(main, ["store", "place", "julie.bernard@mss.test", "store2", "--moved"],
                       env=env)
    assert ok.exit_code == 0, ok.output
    listing = runner.invoke(main, ["store", "list"], env=env)
    assert "store2" in listing.output and "127.0.0.2" in listing.output
    with stores.space.db.read() as session:
        box = session.scalars(select(Mailbox).where(
            Mailbox.address == "julie.bernard@mss.test")).one()
        assert box.mail_store == "store2"
        record = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mailbox.store").order_by(AuditRecord.id.desc())).first()
        assert record is not None and record.target == "julie.bernard@mss.test"
    token = f"placed{time.monotonic_ns()}"
    results = StoreLmtp(stores.one, stores.space.db).deliver(_message(token), SENDER,
                                                             ["julie.bernard@mss.test"])
    assert all(r.delivered for r in results.values()), results
    assert stores.count(stores.one, julie, token) == 1  # proxied to store2
    assert stores.count(stores.one, julie, early) == 1  # the copied message, on store2
    assert stores.count(stores.two, julie, early) == 1


# ---------------------------------------------------------------- settings, defaults, names
@pytest.mark.parametrize(("value", "error"), [
    ("store1", "entrée invalide « store1 »"),
    ("store1=dovecot.example", "entrée invalide « store1=dovecot.example »"),  # not an address
    ("Store 1=198.18.0.2", "entrée invalide"),
    ("store1=198.18.0.2,store1=198.18.0.6", "le nom « store1 » apparaît deux fois"),
])
def test_bad_store_lists_are_refused_in_french(value: str, error: str, tmp_path: Path) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=error):
        Settings.load(data_dir=tmp_path, environ={"MSS_MAIL_STORES": value})


def test_own_store_must_be_listed(tmp_path: Path) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="MSS_MAIL_STORE « store3 » n'est pas dans"):
        Settings.load(data_dir=tmp_path, environ={"MSS_MAIL_STORES": STORES,
                                                  "MSS_MAIL_STORE": "store3"})
    settings = Settings.load(data_dir=tmp_path, environ={"MSS_MAIL_STORES": STORES})
    assert settings.own_store == "store1"  # the first, by default
    assert [s.address for s in settings.stores] == ["127.0.0.1", "127.0.0.2"]


def test_one_store_keeps_the_queries_and_the_client(tmp_path: Path) -> None:
    """The default (no MSS_MAIL_STORES): no proxy field, no store filter, the plain client."""
    from core.db import Database
    from mailstore import config
    from mailstore.stores import lmtp_for

    settings = Settings.load(data_dir=tmp_path, environ={})
    assert settings.stores == () and settings.own_store == ""
    assert config.proxying_of(settings) is None
    for query in (sql.password_query("sqlite"), sql.external_query(), sql.user_query(10),
                  sql.iterate_query()):
        assert "proxy" not in query and "mail_store" not in query
    db = Database(settings.effective_database_url)
    assert isinstance(lmtp_for(settings, db), LmtpClient)
    db.dispose()
    from mailstore.stores import check_store

    with pytest.raises(ConfigError) as refused:  # `mss store place` with a single store
        check_store(settings, "store2")
    assert "pas de magasin à choisir" in str(refused.value) and "--" not in str(refused.value)


def test_init_names_every_store_in_the_server_certificate(tmp_path: Path) -> None:
    from mss.setup import reached_hosts, server_addresses

    settings = Settings.load(data_dir=tmp_path, environ={"MSS_MAIL_STORES": STORES})
    assert {"127.0.0.1", "127.0.0.2"} <= set(reached_hosts(settings))
    assert "127.0.0.2" in server_addresses(settings)


def test_operator_validates_a_registration_onto_a_store(tmp_path: Path) -> None:
    """``mss account validate ADDRESS --store NAME``, the real command on a data directory of
    its own (``mss init``): a bad name changes nothing, a good one places the mailboxes, in
    the validation's audit record; the gateways then route to that store."""
    from mss.app import App
    from tests.test_cli import assert_clean_error, mss
    from tests.test_webmail_cli import _register

    data = tmp_path / "data"
    env = {"MSS_MAIL_STORES": STORES}
    assert mss(data, "init", env=env).returncode == 0
    settings = Settings.load(data_dir=data, environ=env)
    app = App(settings)
    address = _register(app, "Anne", "10000000091", "anne@exemple.fr")
    assert_clean_error(mss(data, "account", "validate", address, "--store", "store9", env=env),
                       "magasin de courrier inconnu : « store9 »")
    with app.db.read() as session:  # nothing decided
        box = session.scalars(select(Mailbox).where(Mailbox.address == address)).one()
        assert box.state.value == "pending_validation" and box.mail_store is None
    done = mss(data, "account", "validate", address, "--store", "store2", env=env)
    assert done.returncode == 0, done.stderr
    with app.db.read() as session:
        box = session.scalars(select(Mailbox).where(Mailbox.address == address)).one()
        assert box.state.value == "published" and box.mail_store == "store2"
        record = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "registration.validate")).one()
        assert '"store": "store2"' in record.request
    assert StoreLmtp(settings, app.db, clients={}).store_of([address]) == {address: "store2"}
    listed = mss(data, "store", "list", env=env)
    assert re.search(r"^store2 +127\.0\.0\.2 +1 boîte", listed.stdout, re.M), listed.stdout
    app.close()


def test_organisational_acls_are_written_by_their_own_store_only(stores: Stores) -> None:
    """The pharmacy's mailbox lives on store1: store1 makes its folders and ACL files,
    store2 makes nothing for it (both wrote their ACLs at start, ``mailstore.acl.sync``)."""
    org = stores.space.address("org")
    assert list(_home(stores.one, org).glob("sdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl"))
    assert not _home(stores.two, org).exists()


def test_mss_run_names_the_store(stores: Stores) -> None:
    lines = stores.services[1].endpoints()
    assert any(line.startswith("Magasin          store2 parmi store1, store2") for line in lines)
