"""A client that opens a connection to the webmail and never starts (or never ends) its TLS
handshake must not hold up the others: slow clients, half-open connections, a speculative
connection a browser never uses, or someone doing it on purpose (slowloris)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from tests.mailstore_fixtures import free_port
from tests.webmail_helpers import Web
from webmail.service import WebmailService

pytest_plugins = ["tests.webmail_fixtures"]


@pytest.fixture
def service(web: Web) -> Iterator[WebmailService]:
    settings = web.space.settings.replace(web_port=free_port(), web_event_streams=0)
    running = WebmailService(settings, web.space.db, mailer=web.mailer)
    running.start()
    yield running
    running.stop()


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
