"""The mailboxes' S/MIME certificates and private keys, decrypted once per process and kept in
memory (``security.load_mailbox_key`` costs ~45 ms on purpose). Keys are never logged, never
written anywhere, and dropped when the mailbox's certificate changes."""

from __future__ import annotations

import logging
import threading

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import bindparam, select

from certs.smime import PrivateKey
from core.db import Executor
from gateway.accept.protection import load_mailbox_key
from trust_space.models import Mailbox

Pair = tuple[x509.Certificate, PrivateKey]
log = logging.getLogger("mss.gateway")
_PAIR = select(Mailbox.smime_cert_pem, Mailbox.smime_key_pem).where(
    Mailbox.address == bindparam("address"), Mailbox.operator_id.is_(None))


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


class KeyRing:
    """Local mailboxes' (certificate, key) pairs by address, cached by certificate PEM."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._pairs: dict[str, tuple[str, Pair]] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:  # never show keys
        return f"KeyRing({len(self._pairs)} boîtes)"

    def signer(self, session: Executor, address: str) -> Pair | None:
        """The pair of local mailbox ``address``, or None when it has no key."""
        row = session.execute(_PAIR, {"address": address.lower()}).first()
        cert_pem, key_pem = row if row is not None else (None, None)
        if not cert_pem or not key_pem:
            return None
        with self._lock:
            cached = self._pairs.get(address.lower())
            loading = self._loading.setdefault(address.lower(), threading.Lock())
        if cached is not None and cached[0] == cert_pem:
            return cached[1]
        with loading:  # one thread derives the key; the others wait for it, not redo it
            with self._lock:
                cached = self._pairs.get(address.lower())
            if cached is not None and cached[0] == cert_pem:
                return cached[1]
            return self._load(address, cert_pem, key_pem)

    def _load(self, address: str, cert_pem: str, key_pem: str) -> Pair | None:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = load_mailbox_key(key_pem, self._secret)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            # The relay stamps its own signatures without verifying them again: a key that
            # does not match its certificate must never sign.
            log.error("clé S/MIME et certificat discordants pour une boîte : clé ignorée")
            return None
        pair = (cert, key)
        with self._lock:
            self._pairs[address.lower()] = (cert_pem, pair)
        return pair
