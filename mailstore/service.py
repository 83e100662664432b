"""Dovecot as a child of ``mss run``: configure, start, wait until it answers, supervise,
reload, stop (``mss.run.Service``).

``start`` writes the configuration (``mailstore.config``) and the organisational mailboxes'
ACLs (``mailstore.acl``), starts ``dovecot -F -c DATA_DIR/dovecot/dovecot.conf`` in its own
session (a Ctrl-C in the terminal reaches mss, which stops Dovecot in order), and returns once
the IMAP listener greets and the LMTP socket exists. Before Dovecot, it starts mss's hook server
on loopback (``mailstore.hooks``: the auth policy that shares the lock-out, and the receiver of
IMAP events for the audit trail); it stops after Dovecot. A thread then waits on the process: if
Dovecot dies without being asked to, the event is logged and Dovecot is started again, with a
growing pause while it keeps failing. A Dovecot left running by a previous mss that was killed
is recognised by its pid file and command line, and stopped first.

``reload`` rewrites the configuration, the CA/CRL bundle and the ACLs, then sends SIGHUP:
Dovecot re-reads everything, including the CRL. The supervisor also watches ``pki/ca.pem`` and
``pki/crl.pem``: when any process (``mss`` CLI, webmail) publishes a new CRL, the bundle is
rebuilt and Dovecot reloaded within ``watch_interval`` seconds, so a revoked certificate stops
working without anyone calling ``reload``; ``pki/server.crt`` and ``server.key`` likewise, so
a renewed server certificate (``mss cert renew`` / ``install``) serves the next IMAP sessions.
It watches the mailbox and account states too (``mailstore.states``): a mailbox no longer
published or an account suspended, by any process, loses its open IMAP sessions.
``reload_running`` does the same from another process, for the Dovecot that ``mss run``
started on this data directory.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from core.db import Database
from core.settings import Settings
from mailstore import acl, config, sieveconf, states
from mailstore.credentials import MasterCredentials, master_credentials
from mailstore.errors import DovecotUnavailable
from mailstore.hooks import HookServer
from mailstore.lmtps import LmtpTlsFront

log = logging.getLogger("mss.mailstore")

MAX_RESTART_PAUSE = 30.0


class DovecotService:
    """The mail store service of ``mss run`` (see the module docstring)."""

    name = "mailstore"

    def __init__(self, settings: Settings, db: Database, *,
                 options: config.Options | None = None,
                 users: config.ProcessUsers | None = None,
                 start_timeout: float = 20.0, restart_pause: float = 0.5,
                 watch_interval: float = 2.0) -> None:
        self.settings = settings
        self.db = db
        self.options = options or config.Options()
        self.users = users or config.ProcessUsers.detect()
        self.paths = config.DovecotPaths.from_settings(settings)
        self.start_timeout = start_timeout
        self.restart_pause = restart_pause
        self.watch_interval = watch_interval
        self.restarts = 0
        self._pki_stamp: tuple[tuple[int, int], ...] = ()
        self._closed: states.Closed | None = None
        self.state_rounds = 0  # rounds of _watch_states finished (tests wait for a whole one)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.hooks: HookServer | None = None  # auth policy + IMAP events (mailstore.hooks)
        self.lmtps: LmtpTlsFront | None = None  # LMTP over TLS for other hosts (lmtps)

    # ------------------------------------------------------------------ Service protocol
    def start(self) -> None:
        """Configure and start Dovecot, return when it answers.

        Raises:
            core.errors.ConfigError: Dovecot not installed, certificates missing.
            DovecotUnavailable: Dovecot exits or does not answer in time (message ends with
                the tail of its log: port taken, bad certificate…).
        """
        binary = config.dovecot_binary()
        if self.hooks is None:  # before the configuration, which names its port
            self.hooks = HookServer(self.settings, self.db)
            self.hooks.start()
        try:
            self._write_all()
            self._stop_stale()
            self._stopping.clear()
            self._spawn(binary)
            self._wait_ready()
        except BaseException:
            self.hooks.stop()
            self.hooks = None
            raise
        try:
            self._start_lmtps()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._supervise, args=(binary,),
                                        name="dovecot-supervisor", daemon=True)
        self._thread.start()
        log.info("Dovecot démarré (pid %s)", self.pid)

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL after 10 s) and its supervisor."""
        self._stopping.set()
        if self.lmtps is not None:  # first: no gateway connects to a store going away
            self.lmtps.stop()
            self.lmtps = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("Dovecot ne s'arrête pas : SIGKILL")
                proc.kill()
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(10)
        if self.hooks is not None:  # after Dovecot: its last reports still find mss
            self.hooks.stop()
            self.hooks = None
        self._ready.clear()
        log.info("Dovecot arrêté")

    def _start_lmtps(self) -> None:
        endpoint = self.settings.lmtp_endpoint
        if endpoint is None or not endpoint.tls or self.lmtps is not None:
            return
        front = LmtpTlsFront(self.settings, endpoint, self.paths.lmtp_socket,
                             self.paths.client_ca)
        try:
            front.start()
        except OSError as exc:
            raise DovecotUnavailable(
                f"LMTP sur TLS : impossible d'écouter sur {front.address[0]}:{front.address[1]}"
                f" ({exc.strerror or type(exc).__name__})") from None
        self.lmtps = front

    def endpoints(self) -> list[str]:
        s = self.settings
        return [
            f"IMAP (STARTTLS)  {s.listen_address}:{s.imap_port}",
            f"IMAPS            {s.listen_address}:{s.imaps_port}",
            f"LMTP             unix:{self.paths.lmtp_socket}",
        ] + ([f"LMTPS            {s.listen_address}:{lmtps.port} (certificat client exigé)"]
             if (lmtps := s.lmtp_endpoint) and lmtps.tls else []) + (
            [f"ManageSieve      {s.listen_address}:{s.managesieve_port} (STARTTLS)"]
             if s.managesieve_port > 0 else []) + (
            [f"Magasin          {s.own_store} parmi {', '.join(m.name for m in s.stores)} "
             "(les connexions aux boîtes des autres magasins leur sont relayées)"]
            if s.stores else []) + (
            [] if not s.oidc_issuer or config.imap_tokens(s) else [
            "IMAP : jetons Pro Santé Connect indisponibles sur PostgreSQL (Dovecot 2.3.19, "
            "voir mailstore/config.py imap_tokens) ; SMTP les accepte"])

    # ------------------------------------------------------------------ operations
    def reload(self) -> None:
        """Rewrite configuration, CA/CRL bundle and ACLs; make Dovecot re-read them.

        Raises:
            DovecotUnavailable: Dovecot is not running.
        """
        self._write_all()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise DovecotUnavailable("Dovecot ne tourne pas : rechargement impossible")
        proc.send_signal(signal.SIGHUP)
        log.info("Dovecot : configuration rechargée")

    def sync_acls(self) -> acl.AclReport:
        """Regenerate the organisational mailboxes' ACLs from the delegations (no reload
        needed: Dovecot re-reads ACL files within ``acl_cache_secs``)."""
        return acl.sync(self.db, self.paths, self.users, self.settings)

    def master_credentials(self) -> MasterCredentials:
        """The webmail's master user (see ``mailstore.credentials``)."""
        return master_credentials(self.settings)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def wait_ready(self, timeout: float) -> bool:
        """True once Dovecot answers again (after a restart), False after ``timeout``."""
        return self._ready.wait(timeout)

    # ------------------------------------------------------------------ internals
    def _write_all(self) -> None:
        self._pki_stamp = _pki_stamp(self.settings)
        self.paths = config.prepare(self.settings, self.users, self.options,
                                    self.hooks.endpoint if self.hooks else None,
                                    sieveconf.ensure_submitter(self.settings, self.db))
        if self._closed is None:  # later rounds are the supervisor's (``_watch_states``)
            with self.db.read() as session:
                self._closed = states.closed(session)
        acl.sync(self.db, self.paths, self.users, self.settings)

    def _watch_pki(self) -> None:
        """A new CRL, CA bundle or server certificate on disk (``ssl_cert = <file`` is read
        again at reload): rebuild ``client-ca.pem`` and reload."""
        stamp = _pki_stamp(self.settings)
        proc = self._proc
        if stamp == self._pki_stamp or proc is None or proc.poll() is not None:
            return
        self._pki_stamp = stamp
        config.write_client_ca(self.settings, self.paths)
        proc.send_signal(signal.SIGHUP)
        log.info("Dovecot rechargé : autorité, liste de révocation ou certificat renouvelé")

    def _watch_states(self) -> None:
        """A mailbox no longer published or an account suspended, by any process: ACLs
        rewritten and the sessions that lost their right kicked (``mailstore.states``)."""
        before = self._closed
        try:
            who = states.connected(self.paths)  # first: the states read below are newer
            with self.db.read() as session:
                now = states.closed(session)
                changed = now != before
                kicked = states.to_kick(session, before, now) \
                    if changed and before is not None else {}
            if changed:
                acl.sync(self.db, self.paths, self.users, self.settings)
            for login, why in states.still_connected(who, now).items():
                kicked.setdefault(login, why)
            states.kick(self.db, self.paths, kicked)
        except (SQLAlchemyError, OSError) as exc:  # database or disk away: the next round
            log.warning("suivi des états des boîtes en échec : %s", type(exc).__name__)
            return
        finally:
            self.state_rounds += 1
        self._closed = now

    def _spawn(self, binary: str) -> None:
        self._ready.clear()
        with open(self.paths.log, "ab") as out:  # early errors come before log_path is open
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.paths.conf)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DovecotUnavailable(
                    f"Dovecot s'est arrêté au démarrage (code {proc.returncode}).\n"
                    + log_tail(self.paths.log))
            if (_read_pid(self.paths.master_pid) == proc.pid and self.paths.lmtp_socket.exists()
                    and self._imap_greets()):
                self._ready.set()
                return
            time.sleep(0.05)
        proc.kill()
        proc.wait(5)
        raise DovecotUnavailable(f"Dovecot ne répond pas après {self.start_timeout:.0f} s.\n"
                                 + log_tail(self.paths.log))

    def _imap_greets(self) -> bool:
        host = _connect_host(self.settings.listen_address)
        try:
            with socket.create_connection((host, self.settings.imap_port), timeout=1) as sock:
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def _supervise(self, binary: str) -> None:
        pause = self.restart_pause
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            try:
                code = proc.wait(self.watch_interval)
            except subprocess.TimeoutExpired:
                self._watch_pki()
                self._watch_states()
                continue
            if self._stopping.is_set():
                return
            self._ready.clear()
            log.error("Dovecot s'est arrêté de façon inattendue (code %s) : redémarrage dans "
                      "%.1f s", code, pause)
            if self._stopping.wait(pause):
                return
            self.restarts += 1
            try:
                self._stop_stale()
                self._spawn(binary)
                self._wait_ready()
                log.warning("Dovecot redémarré (pid %s)", self.pid)
                pause = self.restart_pause
            except DovecotUnavailable as exc:
                log.error("redémarrage de Dovecot en échec : %s", exc.message.splitlines()[0])
                pause = min(pause * 2, MAX_RESTART_PAUSE)

    def _stop_stale(self) -> None:
        """Stop a Dovecot a previous mss left running on this data directory."""
        pid = _read_pid(self.paths.master_pid)
        if pid is None or pid == self.pid or not _is_ours(pid, self.paths.conf):
            return
        log.warning("Dovecot (pid %s) resté d'un précédent lancement : arrêt", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def reload_running(settings: Settings) -> bool:
    """From any process: rebuild the CA/CRL bundle and SIGHUP the Dovecot running on this
    data directory. False when none runs (nothing to do: the next start reads the files)."""
    paths = config.DovecotPaths.from_settings(settings)
    pid = _read_pid(paths.master_pid)
    if pid is None or not _is_ours(pid, paths.conf):
        return False
    config.write_client_ca(settings, paths)
    os.kill(pid, signal.SIGHUP)
    return True


def _pki_stamp(settings: Settings) -> tuple[tuple[int, int], ...]:
    stamps = []
    for name in ("ca.pem", "crl.pem", "server.crt", "server.key"):
        try:
            st = (settings.pki_dir / name).stat()
            stamps.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((0, 0))
    return tuple(stamps)


def _connect_host(listen: str) -> str:
    if listen in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if listen in ("::", "[::]"):
        return "::1"
    return listen


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_ours(pid: int, conf: Path) -> bool:
    """A live ``dovecot`` master started on this very configuration file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"dovecot") and str(conf).encode() in cmdline


def log_lines(path: Path, window: int = 8192) -> list[str]:
    """The lines of the last ``window`` bytes of Dovecot's log (Dovecot logs no mail content).

    Raises:
        OSError: the log cannot be read.
    """
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - window))
        return fh.read().decode("utf-8", "replace").splitlines()


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of Dovecot's log, for error messages."""
    try:
        found = log_lines(path)
    except OSError:
        return "(journal de Dovecot illisible)"
    return "Fin du journal de Dovecot (" + str(path) + ") :\n" + "\n".join(found[-lines:])
