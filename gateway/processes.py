"""The gateway on all the host's cores (issue #19): ``GatewayGroup`` is the ``mss run``
service of the gateway role. It runs one ``GatewayService`` in its own process (listeners,
delivery workers, metrics endpoint) and ``MSS_GATEWAY_PROCESSES`` − 1 more processes
(``gateway.acceptor``), each with its listeners and delivery workers, all bound to the same
ports with ``SO_REUSEPORT``: the kernel spreads new connections over them.

What must be one for the operator is in the database: the queue (leases: each message is
delivered once whichever process took it, ``spool.queue``), the rate limit
(``gateway.accept.rates``) and the directory's change counter that clears every process's
grants (``trust_space.changes``). The scheduled jobs (whitelist, peers' probe, national
directory feed) stay in the first process.

Supervision as for Dovecot (``mailstore.service``): a process that dies is logged and started
again, with a growing pause while it keeps failing; ``stop`` (SIGTERM / Ctrl-C of ``mss run``)
sends SIGTERM to every process (SIGKILL after 15 s). The processes are in sessions of their own,
so that a Ctrl-C in the terminal reaches ``mss run`` only, which stops them in order.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from dataclasses import fields
from typing import Any

from core.db import Database
from core.errors import ConfigError
from core.settings import Settings
from gateway.accept.context import Gateway
from gateway.metrics import Metrics
from gateway.service import GatewayService

log = logging.getLogger("mss.gateway")

MAX_RESTART_PAUSE = 30.0
START_TIMEOUT = 60.0


class Acceptor:
    """One more gateway process (``python -m gateway.acceptor``), fed its settings on stdin
    (never in its arguments or environment: they hold secrets)."""

    def __init__(self, slot: int, settings: Settings, ports: dict[str, int]) -> None:
        self.slot, self.settings, self.ports = slot, settings, ports
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self.metrics_port = 0  # its counters on 127.0.0.1 (gateway.metrics.Merged)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Raises ConfigError: the process did not come up (its reason, when it gave one)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.acceptor"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(_settings_of(self.settings, self.ports)) + "\n")
        self.proc.stdin.close()
        line = _readline(self.proc, START_TIMEOUT)
        answer: dict[str, Any] = json.loads(line) if line.startswith("{") else {}
        if "ports" not in answer:
            self.kill()
            raise ConfigError(f"processus SMTP {self.slot} : "
                              f"{answer.get('error', 'arrêté au démarrage')}")
        self.metrics_port = int(answer.get("metrics") or 0)

    def exposition(self) -> str | None:
        """Its metrics (Prometheus text), or None: not running, or no answer within 2 s."""
        if not self.alive() or not self.metrics_port:
            return None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError as exc:
            log.warning("métriques du processus SMTP %d illisibles : %s", self.slot, exc)
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("processus SMTP %d (pid %s) ne s'arrête pas : SIGKILL", self.slot,
                        self.proc.pid)
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class GatewayGroup:
    """The gateway role of ``mss run`` (see the module docstring)."""

    name = "gateway"

    def __init__(self, settings: Settings, db: Database, *, processes: int | None = None,
                 restart_pause: float = 0.5) -> None:
        self.settings = settings
        self.count = processes or settings.effective_gateway_processes
        self.main = GatewayService(settings, db, reuse_port=self.count > 1)
        self.acceptors: list[Acceptor] = []
        if self.count > 1:
            self.main.metrics.others = self._expositions
        self.restart_pause = restart_pause
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ports(self) -> dict[str, int]:
        return self.main.ports

    @property
    def gw(self) -> Gateway | None:
        """The first process's use-case context (tests and the pair demo read it)."""
        return self.main.gw

    @property
    def metrics(self) -> Metrics:
        """The first process's metrics; its endpoint (``MSS_METRICS_PORT``) also serves the
        other processes' counters, labelled by process (``gateway.metrics.Merged``)."""
        return self.main.metrics

    def _expositions(self) -> list[tuple[str, str]]:
        found = [(str(a.slot), a.exposition()) for a in list(self.acceptors)]
        return [(slot, text) for slot, text in found if text is not None]

    @property
    def pids(self) -> list[int]:
        """This process's and the other gateway processes' (running ones)."""
        return [os.getpid()] + [a.pid for a in self.acceptors if a.alive() and a.pid]

    def start(self) -> None:
        """Raises ConfigError: a port taken, certificates missing, a process not started."""
        self.main.start()  # binds first: ports given as 0 are known from here on
        self._stopping.clear()
        try:
            for slot in range(1, self.count):
                acceptor = Acceptor(slot, self.settings, self.main.ports)
                self.acceptors.append(acceptor)
                acceptor.start()
        except BaseException:
            self.stop()
            raise
        if self.acceptors:
            self._thread = threading.Thread(target=self._supervise, name="gateway-supervisor",
                                            daemon=True)
            self._thread.start()

    def _supervise(self) -> None:
        pauses = {a.slot: self.restart_pause for a in self.acceptors}
        while not self._stopping.wait(0.5):
            for acceptor in self.acceptors:
                if acceptor.alive() or self._stopping.is_set():
                    continue
                code = acceptor.proc.returncode if acceptor.proc is not None else None
                log.error("processus SMTP %d (pid %s) arrêté de façon inattendue (code %s) : "
                          "redémarrage", acceptor.slot, acceptor.pid, code)
                acceptor.wait(1)
                if self._stopping.wait(pauses[acceptor.slot]):
                    return
                acceptor.restarts += 1
                try:
                    acceptor.start()
                    log.warning("processus SMTP %d redémarré (pid %s)", acceptor.slot,
                                acceptor.pid)
                    pauses[acceptor.slot] = self.restart_pause
                except ConfigError as exc:
                    log.error("redémarrage en échec : %s", exc.message)
                    pauses[acceptor.slot] = min(pauses[acceptor.slot] * 2, MAX_RESTART_PAUSE)

    def endpoints(self) -> list[str]:
        pids = " ".join(map(str, self.pids))
        shared = f"ports partagés (SO_REUSEPORT), pids {pids}" if self.count > 1 else f"pid {pids}"
        return self.main.endpoints() + [f"processus SMTP   {self.count} ({shared})"]

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(START_TIMEOUT + 5)
            self._thread = None
        for acceptor in self.acceptors:
            acceptor.terminate()
        for acceptor in self.acceptors:
            acceptor.wait(15)
        self.acceptors = []
        self.main.stop()


def _settings_of(settings: Settings, ports: dict[str, int]) -> dict[str, Any]:
    """Every setting, as ``Settings.load`` takes them, with the ports the first process bound
    (a port given as 0 was chosen by the system)."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "extra"}
    values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
    values.update({f"{name}_port": port for name, port in ports.items()})
    return values


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's first line of output, or "" after ``timeout`` (it is then killed)."""
    out = proc.stdout
    assert out is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join(5)
    return found[0] if found else ""
