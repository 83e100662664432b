"""The same Dovecot configuration on PostgreSQL: Dovecot's pgsql passdb/userdb read mss's
accounts, locks and certificate mapping from the shared database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

from mailstore.service import DovecotService

if TYPE_CHECKING:
    from tests.mailstore_fixtures import TrustSpace

pytest_plugins = ["tests.mailstore_fixtures"]
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_dovecot(pg_url: str, mailstore_space: TrustSpace) -> Iterator[TrustSpace]:
    from tests.mailstore_fixtures import TEST_OPTIONS, build  # after plugin registration

    name = f"mss_mailstore_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    settings = mailstore_space.sibling_settings(database_url=url)
    shutil.rmtree(settings.pki_dir)  # a CA of its own, recorded in this database
    space = build(settings)
    service = DovecotService(settings, space.db, options=TEST_OPTIONS)
    service.start()
    yield space
    service.stop()
    space.db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
    shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


def test_pgsql_passdb_password_login(pg_dovecot: TrustSpace) -> None:
    assert "pgsql" in (pg_dovecot.settings.data_dir / "dovecot" /
                       "sql-password.conf.ext").read_text()
    conn = pg_dovecot.imaps()
    assert conn.login(pg_dovecot.address("marie"), pg_dovecot.password)[0] == "OK"
    assert conn.getquotaroot("INBOX")[0] == "OK"
    conn.logout()


@pytest.mark.parametrize(("who", "password"), [("marie", "wrong-Passw0rd"),
                                               ("louis", "Demo-Passw0rd"),
                                               ("sophie", "Demo-Passw0rd")])
def test_pgsql_passdb_refusals(pg_dovecot: TrustSpace, who: str, password: str) -> None:
    conn = pg_dovecot.imaps()
    with pytest.raises(conn.error, match="AUTHENTICATIONFAILED"):
        conn.login(pg_dovecot.address(who), password)
    conn.shutdown()


def test_pgsql_external(pg_dovecot: TrustSpace) -> None:
    conn = pg_dovecot.imaps("marie")
    assert conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    conn.logout()
