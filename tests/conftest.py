"""Shared fixtures: settings in a temp data dir, and a real database on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine, text

from core.db import Base, Database, load_models
from core.settings import Settings
from mailstore.service import DovecotService, log_lines
from tests.pg import TempPostgres
from trust_space import accounts

# Fixture modules, registered here (before any test module imports them) so that pytest
# rewrites their asserts whatever the collection order.
pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures", "tests.pair_fixtures"]

_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """Cheap argon2id parameters for the passwords the tests make and check (the same code,
    the same PHC strings, verified by the same Dovecot): the production ones cost ~0.2 s of
    CPU per hash and the suite makes about a thousand. ``accounts.PRODUCTION_HASHER`` is
    tested on its own (test_accounts.py, test_mailstore_auth.py); the ``mss`` processes that
    tests start use it."""
    accounts.HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


# The longest modules (browsers, several mss processes, kill -9 bursts), longest first, then
# the other browser modules: ``setup.sh test`` spreads modules over two processes
# (pytest-xdist, ``--dist loadfile``), which take the next module as they become free, so a
# long module left for the end would run alone while the other process waits.
LONG_MODULES = ("test_webmail_writing_browser", "test_demo_pair", "test_webmail_live_browser",
                "test_webmail_list_browser", "test_webmail_mail_browser", "test_gateway_crash",
                "test_webmail_first_hour_browser", "test_webmail_sieve_browser",
                "test_webmail_reading_browser", "test_gateway_processes", "test_topology",
                "test_topology_netns", "test_webmail_authz", "test_webmail_settings_safety",
                "test_bench_search", "test_webmail_sieve", "test_webmail_list",
                "test_cert_renewal", "test_whitelist_fetch", "test_selftest", "test_oauth_sasl",
                "test_attacks_auth")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``LONG_MODULES`` first, in that order, then the other browser modules, then the rest;
    each module's tests in their own order."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.stem
        if name in LONG_MODULES:
            return 0, LONG_MODULES.index(name)
        return (1 if name.endswith("_browser") else 2), 0
    items.sort(key=rank)  # stable: the order within a module and among the rest is kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a running Dovecot shows that Dovecot's warnings and errors and
    the end of its log: a connection it closed leaves nothing else to go on (CI keeps no
    temp directory)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    seen: set[Path] = set()
    for name, value in getattr(item, "funcargs", {}).items():
        service = value if isinstance(value, DovecotService) else getattr(value, "dovecot", None)
        if isinstance(service, DovecotService) and service.paths.log not in seen:
            seen.add(service.paths.log)
            report.sections.append((f"journal de Dovecot ({name})", _dovecot_log(service)))


def _dovecot_log(service: DovecotService) -> str:
    path = service.paths.log
    try:
        lines = log_lines(path, window=262144)
    except OSError as exc:
        return f"{path} illisible : {exc}"
    alarms = [line for line in lines if ": Info: " not in line and ": Debug: " not in line]
    return "\n".join([f"{path} : avertissements et erreurs (les 40 derniers)", *alarms[-40:],
                      "fin du journal (30 lignes)", *lines[-30:]])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL server (admin database) for the whole session."""
    url = os.environ.get("MSS_TEST_PG_URL")
    if url:
        yield url
        return
    server = TempPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_url: str) -> str:
    """A template database holding the schema; each test clones it (fast CREATE DATABASE)."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS mss_template"))
        conn.execute(text("CREATE DATABASE mss_template"))
    admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/mss_template"
    engine = create_engine(url)
    load_models()
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


def _fresh_pg_database(pg_url: str) -> str:
    name = f"mss_t{os.getpid()}_{next(_counter)}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE mss_template"))
    admin.dispose()
    return pg_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database with the schema: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mss.db'}"
        Database(url).create_all()
        return url
    request.getfixturevalue("pg_template")
    return _fresh_pg_database(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """SQLite only, for tests of logic that does not depend on the database engine."""
    database = Database(f"sqlite:///{tmp_path / 'mss.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh data directory, isolated from the caller's MSS_* variables."""
    data = tmp_path / "data"
    data.mkdir()
    return Settings.load(data_dir=data, environ={}, demo_password="Demo-Passw0rd")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no schema at all (migration tests), on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        pg = request.getfixturevalue("pg_url")
        name = f"mss_e{os.getpid()}_{next(_counter)}"
        admin = create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = pg.rsplit("/", 1)[0] + "/" + name
    database = Database(url)
    yield database
    database.dispose()
