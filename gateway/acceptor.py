"""``python -m gateway.acceptor``: one more gateway process of ``mss run``
(``gateway.processes.GatewayGroup``). Reads its settings as one JSON line on stdin, binds the
group's ports with ``SO_REUSEPORT``, runs its listeners and delivery workers, answers one JSON
line on stdout (``{"ports": …, "metrics": port}`` or ``{"error": …}``; its counters are served
on 127.0.0.1 at that port for the first process's endpoint), and runs until SIGTERM or until
the process that started it is gone."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading

from core.db import Database
from core.errors import MssError
from core.logs import configure
from core.settings import Settings
from gateway.service import GatewayService, db_connections

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the group's first process dies, even by SIGKILL (prctl(2), Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's stop still applies
        return
    if os.getppid() != parent:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    parent = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _die_with_parent(parent)
    values = json.loads(sys.stdin.readline())
    try:
        settings = Settings.load(data_dir=values.pop("data_dir"), environ={}, **values)
    except MssError as exc:
        print(json.dumps({"error": exc.message}), flush=True)
        return 1
    configure(settings.log_level)
    db = Database(settings.effective_database_url, connections=db_connections(settings))
    service = GatewayService(settings, db, reuse_port=True, metrics=False)
    try:
        service.start()
    except MssError as exc:
        print(json.dumps({"error": exc.message}), flush=True)
        return 1
    endpoint = service.metrics.serve_local()  # merged into the first process's /metrics
    print(json.dumps({"ports": service.ports, "pid": os.getpid(),
                      "metrics": endpoint.server_port}), flush=True)
    stop.wait()
    service.stop()
    endpoint.shutdown()
    endpoint.server_close()
    db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
