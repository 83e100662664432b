"""LMTP delivery into Dovecot, for the gateway's queue workers (RFC 2033).

One LMTP transaction carries the message to all its local recipients; after the final dot the
server answers **once per accepted recipient**, in RCPT order (RFC 2033 §4.2) — smtplib reads
only one reply there, so ``deliver`` reads the others itself. Each recipient gets its own
``Result``: a message is never "half delivered" to one mailbox (Dovecot saves it whole or not
at all), but it can be delivered to some recipients and refused for others, and the caller
must act per recipient (retry the temporary failures, bounce the permanent ones).

**A reply that never came.** Once the final dot is sent, the store may save the message and
then die (a Dovecot process that panics on a later recipient, a timeout while it commits)
before it answers: the recipients still waiting for their reply get a ``TemporaryFailure``
marked ``uncertain``, and the caller must check the mailbox before delivering again (the
gateway's in-doubt path) — retrying blindly would deliver twice.

Delivery into a named folder (the sender's copy into ``Sent``) uses the recipient's detail:
``marie.martin+Sent@mss.test`` with Dovecot's ``lmtp_save_to_detail_mailbox``. Folder names are
restricted to a safe set so that a caller cannot aim anywhere else. LMTP cannot set flags: the
copy in ``Sent`` arrives unseen (the webmail shows no unread count for ``Sent``).

**Where.** Dovecot's LMTP unix socket on the same host (the default), or, for a gateway on
another host, LMTP over TLS (``MSS_LMTP_URL=lmtps://host:port``): TLS 1.2 or later with the
suites of ``certs.suites``, the store's certificate checked against the trust space's CA and
``host``, and the gateway's client certificate (``Settings.lmtp_client_pair``), without which
the store refuses the connection.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from certs.suites import MODERN_TLS12_SUITES
from core.errors import ConfigError
from core.settings import Settings
from mailformat.lineends import to_crlf
from mailformat.replies import parse_reply
from mailstore.config import DovecotPaths
from mailstore.errors import (
    DeliveryError,
    OverQuota,
    PermanentFailure,
    TemporaryFailure,
    UnknownMailbox,
)

_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Result:
    """The outcome for one recipient: ``error`` is None when delivered."""

    recipient: str
    code: int
    text: str
    error: DeliveryError | None = None
    uncertain: bool = False  # the data went out, no reply came: the store may hold it

    @property
    def delivered(self) -> bool:
        return self.error is None


class LmtpOptions(TypedDict, total=False):
    """``LmtpClient``'s keyword options, for ``LmtpClient.for_settings``."""

    timeout: float
    local_hostname: str


class LmtpClient:
    """Delivers over Dovecot's LMTP unix socket (``DATA_DIR/run/dovecot/lmtp``), or over TLS
    to ``target``:``port`` when given a ``tls`` context."""

    def __init__(self, target: str | Path, *, port: int = 0,
                 tls: ssl.SSLContext | None = None, timeout: float = 60.0,
                 local_hostname: str = "mss") -> None:
        self.target = str(target)
        self.port, self.tls = port, tls
        self.timeout = timeout
        self.local_hostname = local_hostname

    @classmethod
    def for_settings(cls, settings: Settings, **kwargs: Unpack[LmtpOptions]) -> LmtpClient:
        """The client ``MSS_LMTP_URL`` asks for.

        Raises:
            ConfigError: lmtps:// without a readable client certificate and key.
        """
        endpoint = settings.lmtp_endpoint
        if endpoint is None or not endpoint.tls:
            return cls(DovecotPaths.from_settings(settings).lmtp_socket, **kwargs)
        return cls(endpoint.host, port=endpoint.port, tls=client_context(settings), **kwargs)

    def _connect(self) -> smtplib.LMTP:
        if self.tls is None:
            return smtplib.LMTP(self.target, local_hostname=self.local_hostname,
                                timeout=self.timeout)
        return _LmtpOverTls(self.target, self.port, local_hostname=self.local_hostname,
                            timeout=self.timeout, context=self.tls)

    def deliver(self, raw: bytes, sender: str, recipients: Sequence[str],
                folder: str = "INBOX") -> dict[str, Result]:
        """Deliver ``raw`` (an RFC 5322 message) to each local recipient's ``folder``.

        Never raises for a refused recipient: look at each ``Result.error``
        (``UnknownMailbox``, ``OverQuota``, ``TemporaryFailure``, ``PermanentFailure``).
        A store that cannot be reached gives every recipient a ``TemporaryFailure``.

        Raises:
            ValueError: an unsafe folder name, or no recipient.
        """
        if not recipients:
            raise ValueError("aucun destinataire")
        targets = {rcpt: _with_folder(rcpt, folder) for rcpt in recipients}
        results: dict[str, Result] = {}
        waiting: list[str] = []  # after the final dot: the recipients whose reply is due
        try:
            with self._connect() as conn:
                self._transaction(conn, raw, sender, targets, results, waiting)
        except (OSError, smtplib.SMTPException) as exc:
            failure = _unreachable(exc)
            for rcpt in recipients:
                results.setdefault(rcpt, Result(rcpt, failure.smtp_code, failure.reply, failure,
                                                uncertain=rcpt in waiting))
        return {rcpt: results[rcpt] for rcpt in recipients}

    def _transaction(self, conn: smtplib.LMTP, raw: bytes, sender: str,
                     targets: dict[str, str], results: dict[str, Result],
                     waiting: list[str]) -> None:
        conn.ehlo_or_helo_if_needed()
        data = _dot_stuffed(raw)
        options = ["BODY=8BITMIME"] if conn.has_extn("8bitmime") and not data.isascii() else []
        code, reply = conn.mail(sender, options)
        if code != 250:
            for rcpt in targets:
                results[rcpt] = _result(rcpt, code, reply)
            return
        accepted = []
        for rcpt, target in targets.items():
            code, reply = conn.rcpt(target)
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                results[rcpt] = _result(rcpt, code, reply)
        if not accepted:
            conn.rset()
            return
        self._data(conn, data, accepted, results, waiting)

    @staticmethod
    def _data(conn: smtplib.LMTP, data: bytes, accepted: list[str],
              results: dict[str, Result], waiting: list[str]) -> None:
        code, reply = conn.docmd("DATA")
        if code != 354:
            for rcpt in accepted:
                results[rcpt] = _result(rcpt, code, reply)
            return
        waiting += accepted  # from the first byte on: the store may save it without the dot
        conn.send(data + b".\r\n")
        for rcpt in accepted:  # RFC 2033 §4.2: one reply per accepted RCPT, in order
            code, reply = conn.getreply()
            results[rcpt] = _result(rcpt, code, reply)


def deliver(settings: Settings, raw: bytes, sender: str, recipients: Sequence[str],
            folder: str = "INBOX") -> dict[str, Result]:
    """``LmtpClient.for_settings(settings).deliver(...)``."""
    return LmtpClient.for_settings(settings).deliver(raw, sender, recipients, folder)


def client_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+ towards the mail store's LMTP: its certificate must chain to the trust space's
    CA and name the host of ``MSS_LMTP_URL``; ours is ``Settings.lmtp_client_pair``.

    Raises:
        ConfigError: the client certificate or its key is missing or unreadable.
    """
    cert, key = settings.lmtp_client_pair
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(settings.pki_dir / "ca.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_TLS12_SUITES)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"certificat client LMTP illisible ({cert}, {type(exc).__name__}) : "
                          "lancez « mss init » ou « mss cert issue lmtp NOM » et indiquez-le "
                          "dans MSS_LMTP_CLIENT_CERT / MSS_LMTP_CLIENT_KEY") from None
    return context


class _LmtpOverTls(smtplib.LMTP):
    """LMTP over implicit TLS (smtplib has SMTP_SSL, no LMTP_SSL): the socket is wrapped, with
    the host name checked, before the greeting is read."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext,
                 local_hostname: str, timeout: float) -> None:
        self.context = context
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((host, port), timeout)
        try:
            return self.context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise


def _with_folder(address: str, folder: str) -> str:
    if folder.upper() == "INBOX":
        return address
    if not _FOLDER.match(folder):
        raise ValueError(f"nom de dossier refusé pour une livraison : « {folder} »")
    local, at, domain = address.rpartition("@")
    if not at or "+" in local:
        raise ValueError(f"adresse de livraison invalide : « {address} »")
    return f"{local}+{folder}@{domain}"


def _dot_stuffed(raw: bytes) -> bytes:
    """CRLF line ends, leading dots doubled (RFC 5321 §4.5.2), a final CRLF."""
    data = to_crlf(raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data)


def _result(rcpt: str, code: int, reply: bytes | str) -> Result:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    error = classify(code, text)
    return Result(rcpt, code, text, error)


def classify(code: int, text: str) -> DeliveryError | None:
    """The error for an LMTP reply; None for success."""
    if 200 <= code < 300:
        return None
    enhanced = parse_reply(text).enhanced
    what = f"{code} {text}".strip()
    if enhanced in ("5.2.2", "4.2.2") or code in (452, 552) and "quota" in text.lower():
        return OverQuota(f"Boîte pleine / mailbox full ({what})", smtp_code=code,
                         enhanced=enhanced or ("5.2.2" if code >= 500 else "4.2.2"), reply=text)
    if enhanced == "5.1.1" or code == 550:
        return UnknownMailbox(f"Boîte inconnue / unknown mailbox ({what})", smtp_code=code,
                              enhanced=enhanced or "5.1.1", reply=text)
    if 400 <= code < 500:
        return TemporaryFailure(f"Échec temporaire / temporary failure ({what})",
                                smtp_code=code, enhanced=enhanced or "4.3.0", reply=text)
    return PermanentFailure(f"Livraison refusée / delivery refused ({what})",
                            smtp_code=code if code >= 500 else 554,
                            enhanced=enhanced or "5.3.0", reply=text)


def _unreachable(exc: Exception) -> TemporaryFailure:
    reason = type(exc).__name__
    return TemporaryFailure(f"Magasin de courrier injoignable / mail store unreachable ({reason})",
                            smtp_code=451, enhanced="4.4.1", reply=reason)
