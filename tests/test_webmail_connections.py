"""The webmail's HTTPS connections: freed when they close, without waiting for the garbage
collector (issue 19: the webmail's RSS grew by several KB per TLS connection in the soak); and
a connection left silent, or a handshake left half done, holds up nobody else.

cheroot kept each connection in a reference cycle (``webmail.service._HttpConnection``), so a
closed connection, its socket and its pyOpenSSL connection with OpenSSL's buffers lived until a
full collection, thousands of connections later. Here the automatic collector is off while
visitors open connections of their own (the log-in page, a static file), as the soak's do:
what cheroot still holds afterwards is at most the last connection of each worker thread (a
local variable of its loop until its next connection), never one per connection served.
"""

from __future__ import annotations

import gc
import http.client
import socket
import time
from collections.abc import Iterator

import pytest
from cheroot.server import HTTPConnection

from tests.mailstore_fixtures import free_port
from tests.webmail_helpers import Web
from webmail import tls
from webmail.service import THREADS, WebmailService

pytest_plugins = ["tests.webmail_fixtures"]


def _alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


@pytest.fixture
def service(web: Web) -> Iterator[WebmailService]:
    settings = web.space.settings.replace(web_port=free_port(), web_event_streams=0)
    running = WebmailService(settings, web.space.db, mailer=web.mailer)
    running.start()
    yield running
    running.stop()


def test_closed_connections_do_not_wait_for_the_garbage_collector(
        web: Web, service: WebmailService) -> None:
    context = web.space.tls_context()
    visits = 3 * THREADS  # more connections than worker threads, each on its own connection
    gc.collect()
    gc.disable()
    try:
        before = _alive(HTTPConnection), _alive(tls._Connection)
        for i in range(visits):
            conn = http.client.HTTPSConnection("localhost", service.port, context=context,
                                               timeout=10)
            conn.request("GET", "/connexion" if i % 2 else "/static/favicon.svg")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            conn.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(HTTPConnection) - before[0] > THREADS:
            time.sleep(0.1)  # the server sees each close when it next polls the socket
        held = _alive(HTTPConnection) - before[0], _alive(tls._Connection) - before[1]
    finally:
        gc.enable()
    assert held[0] <= THREADS and held[1] <= THREADS, (
        f"{held} connexions encore en mémoire après {visits} visites")


def _visit(web: Web, port: int) -> float:
    started = time.monotonic()
    conn = http.client.HTTPSConnection("localhost", port, context=web.space.tls_context(),
                                       timeout=30)
    try:
        conn.request("GET", "/connexion")
        response = conn.getresponse()
        assert response.status == 200 and b"Connexion" in response.read()
    finally:
        conn.close()
    return time.monotonic() - started


def test_silent_and_stalled_handshakes_do_not_hold_up_other_visitors(
        web: Web, service: WebmailService) -> None:
    """Slow clients, half-open connections, a browser's unused speculative connection, or
    someone doing it on purpose: twenty idle sockets kept every visitor out for 10 s when the
    handshake ran in cheroot's accept path (``webmail.service._Server.process_conn``)."""
    _visit(web, service.port)  # warm
    silent = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
    # Half a ClientHello: the server has started the handshake and waits for the rest.
    stalled = socket.create_connection(("127.0.0.1", service.port))
    stalled.sendall(bytes.fromhex("160301020001"))
    try:
        time.sleep(0.3)  # the server has accepted them all by now
        took = [_visit(web, service.port) for _ in range(3)]
        assert max(took) < 3.0, took  # not the 10 s handshake deadline per silent client
    finally:
        for sock in [*silent, stalled]:
            sock.close()
    assert _visit(web, service.port) < 3.0
