"""The webmail's IMAP layer (mailstore.imap, mailstore.listing, mailstore.pool) against the
real Dovecot, through the master user over TLS."""

from __future__ import annotations

import imaplib
import os
from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING

import pytest

from mailstore import listing
from mailstore.errors import ImapAuthFailed, ImapError, MailboxNotFound
from mailstore.imap import MailboxSession, imaplib_of, shared_folder
from mailstore.lmtp import LmtpClient
from mailstore.pool import ImapPool
from mailstore.service import DovecotService
from webmail.mail.badge import Voucher

if TYPE_CHECKING:
    from tests.mailstore_fixtures import TrustSpace

pytest_plugins = ["tests.mailstore_fixtures"]
VOUCHER = Voucher("mss.test", b"\x00" * 32)  # no message here carries a sealed verdict


@pytest.fixture
def pool(dovecot: DovecotService, mailstore_space: TrustSpace) -> Iterator[ImapPool]:
    pool = ImapPool.for_settings(mailstore_space.settings, timeout=10)
    yield pool
    pool.close()


def _deliver(space: TrustSpace, who: str, subject: str, **kwargs: str) -> None:
    raw = space.message(subject, to=space.address(who), **kwargs)
    result = LmtpClient.for_settings(space.settings).deliver(raw, "marie.martin@mss.test",
                                                             [space.address(who)])
    assert all(r.delivered for r in result.values())


def _folder_with(space: TrustSpace, pool: ImapPool, who: str, count: int) -> tuple[str, list]:
    """A fresh folder of ``who`` holding ``count`` messages with known dates."""
    folder = f"T{os.urandom(3).hex()}"
    dates = [f"Mon, {10 + i} Nov 2025 10:00:00 +0100" for i in range(count)]
    with pool.session(space.address(who)) as s:
        s.client.create_folder(folder)
        for i, when in enumerate(dates):
            s.append(folder, space.message(f"Sujet {i}", date=when, sender=f"exp{i:03d}@mss.test",
                                           body=f"Texte numéro {i:03d}.\n"))
    return folder, dates


def _page(s: MailboxSession, folder: str, page: int = 1, per_page: int = 50
          ) -> listing.Listing:
    """A page of ``folder``'s list lines, newest (Date field) first, read as the webmail's
    list reads them: the sorted UIDs, then ``listing.rows`` of the page's."""
    uids = s.sorted_uids(folder)
    chunk = uids[max(page - 1, 0) * per_page:][:per_page]
    return listing.Listing(listing.rows(s, folder, chunk, VOUCHER), len(uids), page, per_page)


def test_sessions_are_reused(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    address = mailstore_space.address("emma")
    for _ in range(3):
        with pool.session(address) as s:
            s.folders()
    assert pool.opened == 1 and pool.idle_count(address) == 1


def test_imaplib_under_imapclient(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    """``imaplib_of`` reads IMAPClient's private ``_imap`` (IMAPClient 4.1.0 has no public
    accessor): this fails if a new IMAPClient moves or renames it."""
    with pool.session(mailstore_space.address("emma")) as s:
        raw = imaplib_of(s.client)
        assert isinstance(raw, imaplib.IMAP4)
        assert getattr(raw, "sslobj", raw.sock) is s.client.socket()  # the same connection
        typ, _ = raw.noop()
        assert typ == "OK"


def test_folders_with_unread_counts(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    address = mailstore_space.address("leo")
    with pool.session(address) as s:
        before = {f.name: f for f in s.folders()}
    _deliver(mailstore_space, "leo", "Nouveau")
    with pool.session(address) as s:
        after = {f.name: f for f in s.folders()}
    assert list(after)[0] == "INBOX"
    assert after["INBOX"].unseen == before["INBOX"].unseen + 1
    assert after["Sent"].special_use == "\\Sent" and after["Trash"].special_use == "\\Trash"


def test_page_newest_first(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    folder, _ = _folder_with(mailstore_space, pool, "emma", 5)
    with pool.session(mailstore_space.address("emma")) as s:
        first = _page(s, folder, page=1, per_page=2)
        last = _page(s, folder, page=3, per_page=2)
    assert first.total == 5
    assert [e.subject for e in first.rows] == ["Sujet 4", "Sujet 3"]
    assert [e.subject for e in last.rows] == ["Sujet 0"]
    assert first.rows[0].sender == "exp004@mss.test" and not first.rows[0].seen


def test_message_raw_parsed_and_seen(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    folder, _ = _folder_with(mailstore_space, pool, "emma", 1)
    with pool.session(mailstore_space.address("emma")) as s:
        uid = _page(s, folder).rows[0].uid
        peeked = s.message(folder, uid, mark_seen=False)
        read = s.message(folder, uid)
        envelope = _page(s, folder).rows[0]
        with pytest.raises(MailboxNotFound):
            s.message(folder, uid + 100)
    assert peeked.raw == read.raw and b"Sujet 0" in read.raw
    assert read.parsed["Subject"] == "Sujet 0"
    assert "\\Seen" not in peeked.flags and envelope.seen


def test_flags_move_expunge_append(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    folder, _ = _folder_with(mailstore_space, pool, "leo", 3)
    with pool.session(mailstore_space.address("leo")) as s:
        uids = [e.uid for e in _page(s, folder).rows]
        s.set_flags(folder, uids[:1], ["\\Flagged"])
        assert "\\Flagged" in _page(s, folder).rows[0].flags
        s.clear_flags(folder, uids[:1], ["\\Flagged"])
        assert "\\Flagged" not in _page(s, folder).rows[0].flags
        s.move(folder, uids[:1], "Trash")
        s.expunge(folder, uids[1:2])
        assert _page(s, folder).total == 1
        uid = s.append("Drafts", mailstore_space.message("Brouillon"), ["\\Draft"])
        assert uid is not None and s.message("Drafts", uid).parsed["Subject"] == "Brouillon"
        with pytest.raises(MailboxNotFound):
            _page(s, "Nulle-part")


def test_search(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    folder, _ = _folder_with(mailstore_space, pool, "emma", 4)
    with pool.session(mailstore_space.address("emma")) as s:
        # Full-text search (mailstore.fts): Xapian indexes words of 3 characters or more
        by_text = s.search(folder, text="002")
        by_sender = s.search(folder, sender="exp003@mss.test")
        by_subject = s.search(folder, text="sujet")
        in_range = s.search(folder, since=date(2025, 11, 11), before=date(2025, 11, 13))
        s.message(folder, by_sender[0])  # now seen
        unseen = s.search(folder, unseen=True)
    assert len(by_text) == 1 and len(by_sender) == 1
    assert len(by_subject) == 4 and by_subject[0] > by_subject[-1]  # newest first
    assert len(in_range) == 2 and len(unseen) == 3 and by_sender[0] not in unseen


def test_quota(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    with pool.session(mailstore_space.address("nina")) as s:
        quota = s.quota()
    assert quota.limit_kb == 1024 and quota.percent is not None


def test_organisational_mailbox_rights_through_the_webmail(pool: ImapPool,
                                                           mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    folder = shared_folder(space.address("org"))
    _deliver(space, "org", "Pour la pharmacie")
    with pool.session(space.address("julie")) as s:
        uid = _page(s, folder).rows[0].uid
        with pytest.raises(ImapError, match="droits"):
            s.expunge(folder, [uid])
    with pool.session(space.address("paul")) as s:
        s.expunge(folder, [uid])
        assert uid not in s.search(folder)


def test_refused_mailbox(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    with pytest.raises(ImapAuthFailed), pool.session(mailstore_space.address("sophie")):
        pass


def test_failed_session_is_not_kept(pool: ImapPool, mailstore_space: TrustSpace) -> None:
    address = mailstore_space.address("emma")
    with pytest.raises(RuntimeError), pool.session(address):
        raise RuntimeError("boom")
    assert pool.idle_count(address) == 0


def test_idle_expiry_and_health_check(dovecot: DovecotService,
                                      mailstore_space: TrustSpace) -> None:
    address = mailstore_space.address("leo")
    expiring = ImapPool.for_settings(mailstore_space.settings, idle_ttl=0.0)
    checked = ImapPool.for_settings(mailstore_space.settings, check_after=0.0)
    for pool in (expiring, checked):
        for _ in range(2):
            with pool.session(address) as s:
                s.noop()
        pool.close()
    assert expiring.opened == 2 and checked.opened == 1
