"""The database pool of an ``mss run`` process is sized for the threads its services run
(issue #19): SQLAlchemy's default (5 + 10 overflow) made the ninth delivery worker of a busy
gateway, or a web request beside a busy gateway, wait for a connection."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from core.settings import Settings
from gateway.service import SMTP_WORK_THREADS
from mss.app import App
from mss.run import BACKGROUND_CONNECTIONS, db_connections
from webmail.service import THREADS


def test_the_pool_holds_every_thread_of_the_roles_at_once(tmp_path: Path) -> None:
    app = App(Settings.load(data_dir=tmp_path, environ={"MSS_QUEUE_WORKERS": "12"}))
    gateway = 12 + SMTP_WORK_THREADS + 2
    assert db_connections(app, ["gateway"]) == BACKGROUND_CONNECTIONS + gateway
    assert db_connections(app, ["webmail"]) == BACKGROUND_CONNECTIONS + THREADS + 2
    assert db_connections(app, ["all"]) == BACKGROUND_CONNECTIONS + gateway + THREADS + 2
    assert db_connections(app, ["mailstore"]) == BACKGROUND_CONNECTIONS

    early = app.db  # a command's set-up (mss init) made the engine before the services
    with early.read() as s:
        assert s.execute(text("select 1")).scalar() == 1
    wanted = db_connections(app, ["all"])
    app.size_pool(wanted)
    assert app.db is not early and app.db.engine.pool.size() == wanted  # type: ignore[attr-defined]

    # Every one of those threads holds a connection at the same moment; none waits.
    held, go = threading.Barrier(wanted + 1), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with app.db.read() as s:  # readers: SQLite lets them all in at once
                s.execute(text("select 1"))
                held.wait(30)
                go.wait(10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    app.db.engine.pool._timeout = 2  # type: ignore[attr-defined]  # fail fast, not 30 s
    threads = [threading.Thread(target=hold) for _ in range(wanted)]
    for t in threads:
        t.start()
    try:
        held.wait(30)
    except threading.BrokenBarrierError:
        go.set()
        for t in threads:
            t.join(10)
        raise AssertionError(errors) from None
    assert app.db.engine.pool.checkedout() == wanted  # type: ignore[attr-defined]
    go.set()
    for t in threads:
        t.join(10)
    assert errors == [], errors
    app.size_pool(wanted)  # the same size: the engine stays
    assert app.db.engine.pool.size() == wanted  # type: ignore[attr-defined]
    app.close()
