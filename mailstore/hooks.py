"""mss's HTTP endpoint for Dovecot, on loopback: the auth policy (``mailstore.authpolicy``) and
the exported IMAP events (``mailstore.events``). Started and stopped with Dovecot by
``mailstore.service.DovecotService``.

- ``POST /policy?command=allow|report``: Dovecot's auth process. The request must carry the
  header ``X-Mss-Hook: <secret>`` (``auth_policy_server_api_header``); anything else is 403, so
  that another local user cannot post fake reports (lock someone out, forge audit records) or
  probe locks. Answered synchronously: the lock must be in the database before the next guess.
- ``POST /events/<secret>``: Dovecot's stats process (``event_exporter``, which cannot add a
  header, so the secret is in the path). Events are parsed at once and their audit records
  queued; one writer thread appends them in batches (one transaction per batch), so a slow
  SQLite write never holds Dovecot's stats process. The queue is bounded (``QUEUE_SIZE``): when
  full, records are dropped with an error in mss's log rather than growing without limit.
- ``POST /oauth2/introspect``: Dovecot's ``passdb oauth2`` asking about an access token
  (RFC 7662 form body; ``mailstore.oauth``), when an identity provider is configured. Dovecot
  authenticates with ``client_secret`` = the secret (it cannot add a header there); ``503``
  when the provider does not answer (Dovecot: temporary failure).

The secret, the hash nonce and the port live in ``DATA_DIR/dovecot/hooks.conf.ext`` (0600),
included by ``dovecot.conf``: the main configuration file stays readable by Dovecot's
unprivileged processes without giving the secret away.

Failure direction (health operator: fail closed): ``auth_policy_reject_on_fail = yes``. If this
server does not answer (mss stopped, port closed, timeout, malformed answer), Dovecot refuses
every password and master log-in (2.3.19 ``auth-policy.c``: the result is preset to -1 and
kept on any HTTP or parse error). Exported events that cannot be delivered are lost (logged by
Dovecot's stats process), they never block IMAP.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core import audit
from core.db import Database, utcnow
from core.settings import Settings
from mailstore import authpolicy, events, oauth

log = logging.getLogger("mss.mailstore")

HEADER = "X-Mss-Hook"
HOOKS_FILE = "hooks.conf.ext"
QUEUE_SIZE = 10_000
BATCH = 200
MAX_BODY = 64 * 1024
MASTER_SESSIONS = 10_000  # webmail sessions remembered for "via" (oldest forgotten first)


@dataclass(frozen=True)
class HookEndpoint:
    """Where Dovecot reaches mss, and the shared secrets (never logged: see ``__repr__``)."""

    host: str
    port: int
    secret: str
    nonce: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"HookEndpoint({self.base_url})"

    def dovecot_conf(self) -> str:
        """The text of ``hooks.conf.ext``: policy client and event exporter."""
        fields = " ".join(events.FIELDS)
        return f"""\
auth_policy_server_url = {self.base_url}/policy
auth_policy_server_api_header = {HEADER}:{self.secret}
auth_policy_hash_nonce = {self.nonce}
auth_policy_request_attributes = {authpolicy.REQUEST_ATTRIBUTES}
auth_policy_reject_on_fail = yes
auth_policy_check_before_auth = yes
auth_policy_check_after_auth = yes
auth_policy_report_after_auth = yes
auth_policy_server_timeout_msecs = 5000
event_exporter mss {{
  format = json
  format_args = time-rfc3339
  transport = http-post
  transport_args = {self.base_url}/events/{self.secret}
  transport_timeout = 5 secs
}}
metric mss_imap_command {{
  filter = {events.exporter_filter()}
  exporter = mss
  exporter_include = name timestamps fields
  fields = {fields}
}}
metric mss_mail_expunged {{
  filter = event=mail_expunged
  exporter = mss
  exporter_include = name timestamps fields
  fields = {fields}
}}
"""


class AuditQueue:
    """Audit records written in batches by one thread (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dropped = 0
        self._queue: queue.Queue[events.MailboxAction | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="mss-audit-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, action: events.MailboxAction) -> None:
        try:
            self._queue.put_nowait(action)
        except queue.Full:
            self.dropped += 1
            log.error("journal d'audit : file pleine, action IMAP non journalisée (%s, %s)",
                      action.action, action.actor)

    def stop(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(30)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            actions = [a for a in batch if a is not None]
            try:
                if actions:
                    self._write(actions)
            except Exception:
                log.exception("journal d'audit : %d action(s) IMAP non écrites", len(actions))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if None in batch:
                return

    def _write(self, actions: list[events.MailboxAction]) -> None:
        with self.db.transaction() as session:
            for a in actions:
                audit.record(session, actor=a.actor, action=a.action, target=a.target,
                             outcome=a.outcome, request=a.request)


class HookServer:
    """The HTTP server in a thread of ``mss run`` (or of the test session)."""

    def __init__(self, settings: Settings, db: Database, host: str = "127.0.0.1") -> None:
        self.settings = settings
        self.db = db
        self.audit = AuditQueue(db)
        self._server = _HttpServer(host, self)
        port = int(self._server.server_address[1])
        self.endpoint = HookEndpoint(host, port, secrets.token_urlsafe(32),
                                     secrets.token_urlsafe(16))
        self._masters: OrderedDict[str, str] = OrderedDict()  # session id -> master user
        self._masters_lock = threading.Lock()
        # IMAP tokens (OAUTHBEARER, XOAUTH2), when an identity provider is configured
        self.tokens = oauth.TokenCheck(settings, db) if settings.oidc_issuer else None
        self.stopped = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mss-dovecot-hooks", daemon=True)

    def start(self) -> None:
        self.audit.start()
        self._thread.start()

    def stop(self) -> None:
        self.stopped = True  # connections Dovecot keeps alive are answered 503 from now on
        self._server.shutdown()
        self._server.server_close()
        self.audit.stop()

    # ------------------------------------------------------------------ requests
    def policy(self, command: str, body: Any) -> dict[str, Any] | None:
        """Raises: ValueError: not a request of Dovecot's shape."""
        attempt = authpolicy.LoginAttempt.from_json(body)
        now = utcnow()
        if command == "allow":
            with self.db.transaction() as session:
                status, message = authpolicy.allow(session, attempt, now)
            return {"status": status, "msg": message}
        if command == "report":
            if attempt.success and attempt.is_master and attempt.session:
                self._remember_master(attempt.session, attempt.master_name)
            token = None
            if self.tokens is not None and attempt.by_token:
                token = self.tokens.outcome_for(oauth.remote_key(attempt.remote, attempt.port))
            with self.db.transaction() as session:
                authpolicy.report(session, attempt, now, self.settings, token)
            return None
        raise ValueError(f"unknown policy command {command!r}")

    def introspect(self, form: dict[str, list[str]], remote: str) -> tuple[int, dict[str, Any]]:
        """Dovecot's token introspection (``mailstore.oauth``): (HTTP status, answer)."""
        secret = form.get("client_secret", [""])[0]
        if self.tokens is None or not hmac.compare_digest(secret.encode(),
                                                          self.endpoint.secret.encode()):
            return 403, {"error": "invalid_client"}
        token = form.get("token", [""])[0]
        if not token:
            return 400, {"error": "invalid_request"}
        answer = self.tokens.introspect(token, oauth.parse_remote(remote) if remote else "")
        if answer is None:
            return 503, {"error": "temporarily_unavailable"}
        return 200, answer

    def _remember_master(self, session_id: str, master: str) -> None:
        with self._masters_lock:
            self._masters[session_id] = master
            while len(self._masters) > MASTER_SESSIONS:
                self._masters.popitem(last=False)

    def master_of(self, session_id: str) -> str:
        with self._masters_lock:
            return self._masters.get(session_id, "")

    def exported(self, body: Any) -> int:
        items = body if isinstance(body, list) else [body]
        count = 0
        for item in items:
            action = events.parse(item, self.master_of)
            if action is not None:
                self.audit.put(action)
                count += 1
        return count


class _HttpServer(ThreadingHTTPServer):
    """The standard library's threaded HTTP server on an ephemeral port, knowing the
    ``HookServer`` its handlers answer for."""

    daemon_threads = True

    def __init__(self, host: str, hooks: HookServer) -> None:
        self.hooks = hooks
        super().__init__((host, 0), _Handler)

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """Into mss's log, not a traceback on stderr. Dovecot hanging up before the answer is
        ordinary (its auth process reloaded or stopping, or its request timed out: it then
        decides without us, ``auth_policy_reject_on_fail``)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.info("crochet de Dovecot : connexion fermée avant la réponse (%s)",
                     type(error).__name__)
            return
        log.error("crochet de Dovecot : requête en échec", exc_info=error)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer  # the server that made this handler (socketserver passes it in)
    server_version = "mss-hooks"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: one line per IMAP log-in would flood mss's log (the audit trail has it)."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        hooks = self.server.hooks
        url = urlsplit(self.path)
        secret = hooks.endpoint.secret
        if hooks.stopped:
            self.close_connection = True
            return self._reply(503, {"status": -1, "msg": "stopped"})
        try:
            if url.path == oauth.PATH:
                form = parse_qs(self._raw().decode("utf-8"), keep_blank_values=True)
                code, answer = hooks.introspect(form, self.headers.get(
                    "X-Dovecot-Auth-Remote", ""))
                return self._reply(code, answer)
            body = self._body()
            if url.path == "/policy":
                if not hmac.compare_digest(self.headers.get(HEADER, "").strip().encode(),
                                           secret.encode()):
                    return self._reply(403, {"status": -1, "msg": "forbidden"})
                command = parse_qs(url.query).get("command", [""])[0]
                return self._reply(200, hooks.policy(command, body) or {})
            if url.path.startswith("/events/") and hmac.compare_digest(
                    url.path.removeprefix("/events/").encode(), secret.encode()):
                return self._reply(200, {"queued": hooks.exported(body)})
            return self._reply(403, {"status": -1, "msg": "forbidden"})
        except ConnectionError:
            raise  # Dovecot hung up: no answer to write (_HttpServer.handle_error)
        except ValueError as exc:
            log.warning("requête de Dovecot refusée : %s", exc)
            return self._reply(400, {"status": -1, "msg": "bad request"})
        except Exception:
            log.exception("politique d'authentification : erreur")
            return self._reply(500, {"status": -1, "msg": "internal error"})

    def _raw(self) -> bytes:
        """Raises: ValueError: too long."""
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("body too long")
        return self.rfile.read(length)

    def _body(self) -> Any:
        """Raises: ValueError: too long, not JSON (one object, a list, or JSON lines)."""
        raw = self._raw().decode("utf-8")
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def _reply(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
