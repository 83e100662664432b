"""The published whitelist's stand-in for tests (issue #20): a real HTTPS server on loopback
with a certificate from a throwaway test CA, serving whatever list the test sets, with ETag /
Last-Modified and 304 answers, and the misbehaviours a fetch must survive (an error status,
a redirection, silence, an oversized body)."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trust_space.whitelist import WhitelistEntry, render_whitelist

NOW = datetime.now(UTC)
LAST_MODIFIED = "Thu, 13 Mar 2025 14:54:10 GMT"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


class TestCa:
    """A throwaway CA (EC keys: fast) writing its PEM chain and server pairs under ``where``."""

    __test__ = False  # not a pytest class

    def __init__(self, where: Path, name: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.where, self.key = where, ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tests mss")])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - timedelta(days=1))
                     .not_valid_after(NOW + timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(
                         digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                         self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.pem = where / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=7))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        pair = Pair(self.where / f"{name}.crt", self.where / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return pair


@dataclass
class Seen:
    path: str
    if_none_match: str
    if_modified_since: str


@dataclass
class ListServer:
    """HTTPS on 127.0.0.1: ``body`` at any path, with a strong ETag (its SHA-256) and a fixed
    Last-Modified; ``status`` other than 200 answers that status (302 with a Location);
    ``silent`` accepts connections and never answers."""

    pair: Pair
    body: bytes = b""
    status: int = 200
    encoding: str = ""  # sent as Content-Encoding (the body is then already encoded)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.seen.append(Seen(self.path, self.headers.get("If-None-Match", ""),
                                        self.headers.get("If-Modified-Since", "")))
                etag = '"' + hashlib.sha256(server.body).hexdigest()[:32] + '"'
                if server.status != 200:
                    self.send_response(server.status)
                    if server.status in (301, 302):
                        self.send_header("Location", "https://ailleurs.example/liste.xml")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", LAST_MODIFIED)
                if server.encoding:
                    self.send_header("Content-Encoding", server.encoding)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pair.cert, self.pair.key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.httpd.server_port}/listeblanchemssante.xml"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SilentServer:
    """A TCP port that accepts and then says nothing (a TLS handshake never completes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entry(domain: str, cn: str, org: str = "Pair", description: str = "") -> WhitelistEntry:
    return WhitelistEntry(domain=domain, certificate_dn=f"CN={cn},O={org},C=FR",
                          description=description or f"Opérateur de {domain}",
                          responsible_contact=f"resp@{domain}",
                          updated_at=datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC))


def listing(*entries: WhitelistEntry) -> bytes:
    return render_whitelist(entries)
