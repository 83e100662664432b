"""Dovecot's life cycle under mss: restart after a crash, reload (CRL, ACLs), clear start-up
errors, a leftover Dovecot replaced, the generated configuration accepted by doveconf."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import delete, select

from mailstore import config
from mailstore.errors import DovecotUnavailable
from mailstore.service import DovecotService, reload_running
from trust_space.models import Delegation, Mailbox, Professional, Role

if TYPE_CHECKING:
    from tests.mailstore_fixtures import TrustSpace

pytest_plugins = ["tests.mailstore_fixtures"]


def _eventually(check: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _external_ok(space: TrustSpace, card: str) -> bool | None:
    """True: EXTERNAL accepted; False: refused (AUTHENTICATIONFAILED); None: the connection
    closed before the greeting, which a connection taken by a login process that a reload is
    stopping gets (seen in CI): no answer, asked again by ``_eventually``."""
    try:
        conn = space.imaps(card)
    except (imaplib.IMAP4.abort, OSError):  # EOF, reset, TLS cut short
        return None
    try:
        return conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    except conn.error:
        return False
    finally:
        conn.shutdown()


def _can_select(space: TrustSpace, who: str, folder: str) -> bool:
    conn = space.imaps()
    conn.login(space.address(who), space.password)
    ok = conn.select(f'"{folder}"')[0] == "OK"
    conn.logout()
    return ok


def test_generated_configuration_is_valid(dovecot: DovecotService) -> None:
    out = subprocess.run(["doveconf", "-c", str(dovecot.paths.conf), "-n"],
                         capture_output=True, text=True, check=True).stdout
    text = dovecot.paths.conf.read_text()
    assert "ssl = required" in out and "ssl_min_protocol = TLSv1.2" in text
    includes = [line.split()[1] for line in text.splitlines() if line.startswith("!include")]
    assert includes == [str(dovecot.paths.conf_dir / "hooks.conf.ext")]  # mss's own, 0600
    assert (dovecot.paths.conf_dir / "hooks.conf.ext").stat().st_mode & 0o077 == 0
    assert "auth_policy_reject_on_fail = yes" in out  # fail closed
    assert len(dovecot.endpoints()) == 4  # IMAP, IMAPS, LMTP, ManageSieve


def test_killed_dovecot_is_restarted(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    old_pid, restarts = dovecot.pid, dovecot.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    assert _eventually(lambda: dovecot.restarts > restarts, 15)
    assert dovecot.wait_ready(20) and dovecot.pid not in (None, old_pid)
    conn = mailstore_space.imaps()
    assert conn.login(mailstore_space.address("marie"), mailstore_space.password)[0] == "OK"
    conn.logout()


def test_reload_applies_a_new_crl(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    assert _external_ok(mailstore_space, "julie")
    mailstore_space.revoke("julie")
    dovecot.reload()
    assert _eventually(lambda: _external_ok(mailstore_space, "julie") is False)


def test_a_new_crl_is_picked_up_without_reload(dovecot: DovecotService,
                                               mailstore_space: TrustSpace) -> None:
    """``mss`` revoking from another process: the supervisor sees the new crl.pem."""
    assert _external_ok(mailstore_space, "emma")
    mailstore_space.revoke("emma")
    assert _eventually(lambda: _external_ok(mailstore_space, "emma") is False)


def test_reload_running_from_another_process(dovecot: DovecotService,
                                             mailstore_space: TrustSpace) -> None:
    assert reload_running(mailstore_space.settings)
    assert not reload_running(mailstore_space.sibling_settings())
    assert dovecot.wait_ready(10)


def test_acls_follow_delegations(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    org_inbox = f"shared/{space.address('org')}/INBOX"
    assert not _can_select(space, "emma", org_inbox)
    with space.db.transaction() as session:
        org = session.scalar(select(Mailbox).where(Mailbox.address == space.address("org")))
        emma = session.scalar(select(Professional).where(Professional.first_name == "Emma"))
        session.add(Delegation(mailbox=org, professional=emma, role=Role.MANAGER))
    report = dovecot.sync_acls()
    assert report.mailboxes[space.address("org")][space.address("emma")] == "lrswipkxte"
    assert _eventually(lambda: _can_select(space, "emma", org_inbox))
    with space.db.transaction() as session:
        session.execute(delete(Delegation).where(Delegation.professional_id == emma.id))
    dovecot.sync_acls()
    assert _eventually(lambda: not _can_select(space, "emma", org_inbox))


def test_port_taken_is_a_clear_error(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = mailstore_space.sibling_settings(imap_port=taken.getsockname()[1])
        service = DovecotService(settings, mailstore_space.db, options=dovecot.options,
                                 start_timeout=10)
        with pytest.raises(DovecotUnavailable) as failure:
            service.start()
        service.stop()
    assert "Address already in use" in failure.value.message
    shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


def test_leftover_dovecot_is_replaced(dovecot: DovecotService,
                                      mailstore_space: TrustSpace) -> None:
    """A Dovecot left running by an mss that was killed (kill -9) is stopped first."""
    settings = mailstore_space.sibling_settings()
    paths = config.prepare(settings, dovecot.users, dovecot.options)
    orphan = subprocess.Popen([config.dovecot_binary(), "-F", "-c", str(paths.conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _eventually(lambda: paths.master_pid.exists())
    service = DovecotService(settings, mailstore_space.db, options=dovecot.options)
    try:
        service.start()
        assert orphan.wait(10) is not None and service.pid != orphan.pid
    finally:
        service.stop()
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    shutil.rmtree(settings.data_dir.parent, ignore_errors=True)
