"""Mail in the real Dovecot: LMTP delivery (per-recipient results, folders, quota, unknown
recipients) and reading it back with real IMAP clients (imapclient, aioimaplib, imaplib)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import aioimaplib
import pytest
from imapclient import IMAPClient

from mailstore.errors import OverQuota, TemporaryFailure, UnknownMailbox
from mailstore.lmtp import LmtpClient
from mailstore.service import DovecotService

if TYPE_CHECKING:
    from tests.mailstore_fixtures import TrustSpace

pytest_plugins = ["tests.mailstore_fixtures"]
SENDER = "marie.martin@mss.test"


def _lmtp(space: TrustSpace) -> LmtpClient:
    return LmtpClient.for_settings(space.settings, timeout=10)


def _client(space: TrustSpace, who: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", space.settings.imaps_port, ssl=True,
                        ssl_context=space.tls_context(), timeout=10)
    client.login(space.address(who), space.password)
    return client


def _token() -> str:
    return os.urandom(4).hex()


def test_capabilities(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    client = _client(mailstore_space, "marie")
    caps = set(client.capabilities())
    client.logout()
    assert {b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QUOTA", b"ACL", b"SORT",
            b"SPECIAL-USE", b"NAMESPACE"} <= caps


def test_special_use_folders(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    client = _client(mailstore_space, "leo")
    folders = {name: flags for flags, _, name in client.list_folders()}
    client.logout()
    assert b"\\Sent" in folders["Sent"] and b"\\Drafts" in folders["Drafts"]
    assert b"\\Trash" in folders["Trash"] and "INBOX" in folders


def test_deliver_select_fetch_search(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    token = _token()
    raw = mailstore_space.message(f"Compte rendu {token}", body="Ligne\n.ligne pointée\n")
    results = _lmtp(mailstore_space).deliver(raw, SENDER, [mailstore_space.address("paul")])
    assert all(r.delivered for r in results.values())
    client = _client(mailstore_space, "paul")
    client.select_folder("INBOX")
    uids = client.search(["SUBJECT", token])
    assert len(uids) == 1
    data = client.fetch(uids, [b"ENVELOPE", b"BODY[]"])[uids[0]]
    client.logout()
    assert data[b"ENVELOPE"].subject.decode().endswith(token)
    assert b"\r\n.ligne point" in data[b"BODY[]"]  # dot-stuffing undone by the server


def test_per_recipient_results(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    recipients = [space.address("paul"), "personne@mss.test", space.address("julie")]
    results = _lmtp(space).deliver(space.message("Trois"), SENDER, recipients)
    assert list(results) == recipients
    assert results[space.address("paul")].delivered
    assert results[space.address("julie")].delivered
    unknown = results["personne@mss.test"]
    assert isinstance(unknown.error, UnknownMailbox)
    assert unknown.code == 550 and unknown.error.enhanced == "5.1.1"


def test_sender_copy_into_sent(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    token = _token()
    marie = mailstore_space.address("marie")
    result = _lmtp(mailstore_space).deliver(mailstore_space.message(f"Copie {token}"), marie,
                                            [marie], folder="Sent")[marie]
    assert result.delivered
    client = _client(mailstore_space, "marie")
    client.select_folder("Sent")
    assert client.search(["SUBJECT", token])
    client.select_folder("INBOX")
    assert not client.search(["SUBJECT", token])
    client.logout()


def test_unsafe_folder_name_refused(mailstore_space: TrustSpace) -> None:
    with pytest.raises(ValueError):
        _lmtp(mailstore_space).deliver(b"x", SENDER, [mailstore_space.address("marie")],
                                       folder="../Trash")


def test_over_quota_is_refused_whole(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    """Nina has 1 MB: a 1.5 MB message is refused for her (552 5.2.2, nothing written),
    delivered to Paul in the same transaction."""
    space = mailstore_space
    token = _token()
    raw = space.message(f"Imagerie {token}", body="x" * 76 + "\n") * 1
    raw += (b"y" * 76 + b"\r\n") * 20_000
    nina, paul = space.address("nina"), space.address("paul")
    results = _lmtp(space).deliver(raw, SENDER, [nina, paul])
    assert results[paul].delivered
    refused = results[nina].error
    assert isinstance(refused, OverQuota)
    assert refused.smtp_code == 552 and refused.enhanced == "5.2.2" and refused.permanent
    client = _client(space, "nina")
    count = client.select_folder("INBOX")[b"EXISTS"]
    assert not client.search(["SUBJECT", token])
    quota = client.get_quota_root("INBOX")[1][0]
    client.logout()
    assert quota.limit == 1024 and quota.usage < 1024
    # Nothing half-written: no temporary file, one message file per message IMAP shows.
    mails = space.settings.mail_dir / "mss.test" / "nina.morel" / "sdbox" / "mailboxes"
    names = [p.name for p in (mails / "INBOX" / "dbox-Mails").iterdir()]
    assert not [n for n in names if n.startswith("temp.")]
    assert len([n for n in names if n.startswith("u.")]) == count


def test_quota_reported_over_imap(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    client = _client(mailstore_space, "marie")
    roots, quotas = client.get_quota_root("INBOX")
    client.logout()
    assert quotas[0].resource == "STORAGE"
    assert quotas[0].limit == mailstore_space.settings.mailbox_quota_mb * 1024


def test_store_unreachable_is_temporary(tmp_path: object) -> None:
    results = LmtpClient("/nonexistent/lmtp", timeout=2).deliver(b"x", SENDER, ["a@mss.test"])
    error = results["a@mss.test"].error
    assert isinstance(error, TemporaryFailure) and not error.permanent
    assert not results["a@mss.test"].uncertain  # nothing was sent: safe to try again


def _silent_after_first_reply(path: str, ready: threading.Event) -> None:
    """Behaves as a Dovecot LMTP process that saved for the first recipient and died (a panic
    on the second): greets, takes the transaction and the data, answers once, hangs up. The
    real panic cannot be caused on demand; its log is in the note of issue #17."""
    import socket

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        ready.set()
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b"220 stand-in LMTP\r\n")
            stream.flush()
            while line := stream.readline():
                verb = line[:4].upper()
                if verb == b"LHLO":
                    stream.write(b"250-stand-in\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    stream.write(b"354 go\r\n")
                    stream.flush()
                    while stream.readline() not in (b".\r\n", b""):
                        pass
                    stream.write(b"250 2.0.0 <first> Saved\r\n")
                    stream.flush()
                    return
                else:
                    stream.write(b"250 2.1.0 OK\r\n")
                stream.flush()


def test_no_reply_after_the_data_is_uncertain(tmp_path: Path) -> None:
    """The first recipient's 250 counts; the second, whose reply never came, may have been
    saved anyway: a temporary failure marked ``uncertain`` (the gateway then searches the
    mailbox before delivering again, rather than deliver twice)."""
    path = str(tmp_path / "lmtp")
    ready = threading.Event()
    server = threading.Thread(target=_silent_after_first_reply, args=(path, ready))
    server.start()
    assert ready.wait(5)
    results = LmtpClient(path, timeout=5).deliver(b"Subject: x\r\n\r\nx\r\n", SENDER,
                                                  ["a@mss.test", "b@mss.test"])
    server.join(5)
    assert results["a@mss.test"].delivered and not results["a@mss.test"].uncertain
    second = results["b@mss.test"]
    assert isinstance(second.error, TemporaryFailure) and second.uncertain


def test_move_to_trash(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    token = _token()
    _lmtp(mailstore_space).deliver(mailstore_space.message(f"A jeter {token}"), SENDER,
                                   [mailstore_space.address("julie")])
    client = _client(mailstore_space, "julie")
    client.select_folder("INBOX")
    uids = client.search(["SUBJECT", token])
    client.move(uids, "Trash")
    assert not client.search(["SUBJECT", token])
    client.select_folder("Trash")
    assert client.search(["SUBJECT", token])
    client.logout()


def test_idle_woken_by_lmtp_delivery(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    space = mailstore_space

    def deliver() -> None:
        _lmtp(space).deliver(space.message("Réveil"), SENDER, [space.address("emma")])

    async def scenario() -> list[bytes]:
        client = aioimaplib.IMAP4_SSL("127.0.0.1", space.settings.imaps_port,
                                      ssl_context=space.tls_context(), timeout=10)
        await client.wait_hello_from_server()
        await client.login(space.address("emma"), space.password)
        await client.select("INBOX")
        idle = await client.idle_start(timeout=20)
        await asyncio.sleep(0.2)  # "+ idling" is in
        threading.Thread(target=deliver).start()
        pushed = await client.wait_server_push(timeout=10)
        client.idle_done()
        await asyncio.wait_for(idle, 10)
        await client.logout()
        client.protocol.transport.close()  # aioimaplib leaves it to the server
        await asyncio.sleep(0.1)
        return pushed if isinstance(pushed, list) else [pushed]

    pushed = asyncio.run(scenario())
    assert any(b"EXISTS" in (line if isinstance(line, bytes) else str(line).encode())
               for line in pushed)


def _org_message(space: TrustSpace, token: str) -> None:
    results = _lmtp(space).deliver(space.message(f"Ordonnance {token}"), SENDER,
                                   [space.address("org")])
    assert all(r.delivered for r in results.values())


def test_user_delegate_cannot_expunge_in_organisational_mailbox(
        dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    token = _token()
    _org_message(space, token)
    folder = f'"shared/{space.address("org")}/INBOX"'
    conn = space.imaps()
    conn.login(space.address("julie"), space.password)
    assert conn.select(folder)[0] == "OK"
    rights = conn.myrights(folder)[1][0].split()[-1]
    assert b"r" in rights and b"i" in rights and b"e" not in rights and b"t" not in rights
    found = conn.uid("SEARCH", "SUBJECT", token)[1][0].split()
    conn.uid("STORE", found[0], "+FLAGS", "(\\Deleted)")
    conn.expunge()
    assert conn.uid("SEARCH", "SUBJECT", token)[1][0].split() == found
    conn.logout()


def test_administrator_delegate_can_expunge(dovecot: DovecotService,
                                            mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    token = _token()
    _org_message(space, token)
    folder = f'"shared/{space.address("org")}/INBOX"'
    conn = space.imaps()
    conn.login(space.address("paul"), space.password)
    conn.select(folder)
    found = conn.uid("SEARCH", "SUBJECT", token)[1][0].split()
    conn.uid("STORE", found[0], "+FLAGS", "(\\Deleted)")
    conn.expunge()
    assert conn.uid("SEARCH", "SUBJECT", token)[1][0].split() == []
    conn.logout()


def test_no_delegation_no_access(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    conn = mailstore_space.imaps()
    conn.login(mailstore_space.address("marie"), mailstore_space.password)
    listed = b" ".join(conn.list()[1])
    assert conn.select(f'"shared/{mailstore_space.address("org")}/INBOX"')[0] == "NO"
    conn.logout()
    assert b"pharma" not in listed


def test_the_gateways_in_doubt_search_answers_yes_no_or_unknown(
        dovecot: DovecotService, mailstore_space: TrustSpace, tmp_path: Path) -> None:
    """gateway.deliver.probes.DoveadmProbe on the real store: a long Message-ID found whole (not
    through Xapian's pieces of words), one not there, a folder not created yet (no), and a
    store it cannot read (unknown: the gateway then waits rather than deliver twice)."""
    import re
    from dataclasses import replace

    from gateway.deliver.probes import DoveadmProbe
    from mailstore.config import DovecotPaths

    space, paul = mailstore_space, mailstore_space.address("paul")
    raw = space.message(f"Sondage {_token()}")
    key = re.search(rb"Message-ID: (<[^>]+>)", raw).group(1).decode()  # type: ignore[union-attr]
    assert _lmtp(space).deliver(raw, SENDER, [paul])[paul].delivered
    probe = DoveadmProbe(DovecotPaths.from_settings(space.settings))
    assert probe.holds(paul, "INBOX", key) is True
    assert probe.holds(paul, "INBOX", f"<{os.urandom(16).hex()}@mss.test>") is False
    assert probe.holds(paul, "Jamais-cree", key) is False
    broken = DoveadmProbe(replace(probe.paths, conf=tmp_path / "absent.conf"))
    assert broken.holds(paul, "INBOX", key) is None
