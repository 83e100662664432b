"""Support of the browser tests: the SMTP sink, the running site, waiting, a stranger's card."""

from __future__ import annotations

import email
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.settings import Settings
from mss.app import App


class Sink:
    """aiosmtpd handler keeping every message (the smarthost)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, email.message.Message]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, email.message_from_bytes(envelope.content)))
        return "250 OK"


@dataclass
class Site:
    url: str
    settings: Settings
    app: App
    sink: Sink
    shots: list[str] = field(default_factory=list)

    def mails_to(self, to: str) -> list[email.message.Message]:
        return [m for rcpt, m in self.sink.messages if rcpt == to]

    def wait_code(self, to: str, before: int) -> str:
        """The code of the first e-mail to ``to`` after the ``before`` first ones."""
        text = wait(lambda: len(self.mails_to(to)) > before and self.mails_to(to)[before])
        body = text.get_payload(decode=True).decode()
        return re.search(r"\b(\d{6})\b", body).group(1)  # type: ignore[union-attr]

    def sms_code(self, to: str) -> str:
        spool = self.settings.data_dir / "spool" / "sms"
        def newest() -> str | None:
            for path in sorted(spool.glob("*.json"), reverse=True):
                data = json.loads(path.read_text())
                if data["to"] == to:
                    return str(data["text"])
            return None

        return re.search(r"\b(\d{6})\b", wait(newest)).group(1)  # type: ignore[union-attr]


def wait(probe: Callable[[], object], timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stranger_card(tmp: Path) -> Path:
    """A card-like certificate from an authority outside the trust space."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Inconnu Hors"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, "819999999999")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(key, hashes.SHA256()))
    (tmp / "stranger.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "stranger.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp / "stranger.crt"
