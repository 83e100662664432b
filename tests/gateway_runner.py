"""``python -m tests.gateway_runner DATA_DIR [NAME=VALUE …]``: one ``GatewayService`` in a process
of its own (a ``GatewayGroup`` of N processes with ``gateway_processes=N``), until SIGTERM — the
crash tests kill it with SIGKILL instead. Prints its ports as one JSON line once listening."""

from __future__ import annotations

import json
import signal
import sys
import threading

from core.db import Database
from core.logs import configure
from core.settings import Settings
from gateway.processes import GatewayGroup
from gateway.service import GatewayService


def main(argv: list[str]) -> None:
    configure()  # to stderr: the crash test keeps it in DATA_DIR/gateway-runner.log
    overrides = dict(arg.split("=", 1) for arg in argv[2:])
    settings = Settings.load(data_dir=argv[1], environ={}, **overrides)
    db = Database(settings.effective_database_url)
    # gateway_processes=N given: the group of mss run (gateway.processes), else one process
    service = (GatewayGroup(settings, db) if settings.gateway_processes > 1
               else GatewayService(settings, db))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    print(json.dumps(service.ports), flush=True)
    stop.wait()
    service.stop()
    db.dispose()


if __name__ == "__main__":
    main(sys.argv)
