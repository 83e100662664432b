"""Shared fixtures: settings in a temp data dir, and a real database on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from core.db import Base, Database, load_models
from core.settings import Settings
from tests.pg import TempPostgres

# Fixture modules, registered here (before any test module imports them) so that pytest
# rewrites their asserts whatever the collection order.
pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures", "tests.pair_fixtures"]

_counter = itertools.count()


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
