"""Attacks on the edges of mss (issue #14, item 10), each through the real service: a client
that breaks the TLS handshake after STARTTLS (one WARNING line, no ERROR, no traceback)."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from tests.gateway_fixtures import Operator

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]


def _tls10_client_hello() -> bytes:
    """A TLS 1.0 ClientHello (RFC 2246 §7.4.1.2) offering only AES-CBC-SHA suites."""
    body = (b"\x03\x01" + os.urandom(32) + b"\x00" + b"\x00\x04\x00\x2f\x00\x35"
            + b"\x01\x00")
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


GARBAGE = {"garbage": b"GET / HTTP/1.0\r\n\r\n" * 4, "tls10": _tls10_client_hello()}


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _wait_closed(sock: socket.socket) -> None:
    """Until the server closes the connection (what it sends before is ignored)."""
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, TimeoutError):
        pass


@pytest.mark.parametrize("port", ["submission", "relay"])
@pytest.mark.parametrize("payload", list(GARBAGE))
def test_failed_starttls_handshake_is_one_warning(
        operator: Operator, caplog: pytest.LogCaptureFixture, port: str, payload: str) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", operator.port(port)), timeout=10) as sock:
        assert _read_reply(sock).startswith(b"220")
        sock.sendall(b"EHLO attaquant.test\r\n")
        assert b"STARTTLS" in _read_reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert _read_reply(sock).startswith(b"220")
        sock.sendall(GARBAGE[payload])
        _wait_closed(sock)
    time.sleep(0.3)  # the server's log line is written as it closes
    mine = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in mine] == ["WARNING"], [r.getMessage() for r in mine]
    assert mine[0].exc_info is None and mine[0].name == "mss.gateway"
    assert "127.0.0.1" in mine[0].getMessage() and "STARTTLS" in mine[0].getMessage()
    assert "Traceback" not in caplog.text


def test_garbage_on_the_implicit_tls_port_logs_no_error(
        operator: Operator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", operator.port("submissions")),
                                  timeout=10) as sock:
        sock.sendall(GARBAGE["tls10"])
        _wait_closed(sock)
    time.sleep(0.3)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text
