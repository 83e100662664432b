"""One file fetched over HTTPS, as the trust space's published lists are (issue #20: the
MSSanté whitelist). Transport only: what the file means is the caller's.

- The server certificate must chain to ``ca_file`` (a PEM bundle: only those anchors, not the
  system's) or, without one, to the system store; the host name is checked as well.
- ``trust_env`` is off: ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or a proxy from the
  environment would silently replace those choices.
- Redirections are not followed (an answer elsewhere is told, with where, so that the
  operator changes the configured address knowingly).
- The body is bounded (``max_bytes``, counted after content decoding, so a compressed bomb
  stops there too) and so is the whole transfer's time, not only each read.
- Conditional GET (RFC 9110 §13.1): ``If-None-Match`` / ``If-Modified-Since`` from the last
  answer's ``ETag`` / ``Last-Modified``; a 304 comes back as ``Fetched(data=None)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from core.errors import MssError

TIMEOUT = 30.0  # seconds: connection, each read, and the whole transfer
MAX_BYTES = 32 * 1024 * 1024  # the national whitelist is about 4 MB (2025)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    """A 200 with its body, or a 304 (``data`` None: the copy we have is current)."""

    data: bytes | None
    etag: str = ""
    last_modified: str = ""

    @property
    def not_modified(self) -> bool:
        return self.data is None


class DownloadFailed(MssError):
    """Nothing usable came back. ``reason``: ``tls`` (certificate refused), ``timeout``,
    ``network`` (no connection), ``http`` (a status other than 200/304), ``too_large``,
    ``config`` (the CA file cannot be read)."""

    code = "download_failed"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _printable(text: str, limit: int = 300) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _session(ca_file: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_file or True
    session.headers.update({"User-Agent": "mss", "Accept": "application/xml, text/xml;q=0.9"})
    return session


def _body(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadFailed(f"fichier trop gros ({int(declared)} octets annoncés, au plus "
                             f"{max_bytes})", reason="too_large")
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise DownloadFailed(f"fichier trop gros (plus de {max_bytes} octets)",
                                 reason="too_large")
        if time.monotonic() > deadline:
            raise DownloadFailed("délai dépassé pendant le transfert", reason="timeout")
    return bytes(body)


def _answer(response: requests.Response, *, etag: str, last_modified: str, max_bytes: int,
            deadline: float) -> Fetched:
    status = response.status_code
    if status == 304:
        return Fetched(None, response.headers.get("ETag", etag),
                       response.headers.get("Last-Modified", last_modified))
    if status in (301, 302, 303, 307, 308):
        where = _printable(response.headers.get("Location", ""), 200) or "?"
        raise DownloadFailed(f"réponse HTTP {status} : redirection vers {where} (non suivie ; "
                             "corrigez l'adresse configurée si elle a changé)", reason="http")
    if status != 200:
        raise DownloadFailed(_printable(f"réponse HTTP {status} {response.reason or ''}"),
                             reason="http")
    data = _body(response, max_bytes, deadline)
    return Fetched(data, response.headers.get("ETag", ""),
                   response.headers.get("Last-Modified", ""))


def get_file(url: str, *, ca_file: str = "", etag: str = "", last_modified: str = "",
             max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT) -> Fetched:
    """GET ``url`` (see the module docstring).

    Raises:
        DownloadFailed: certificate refused, no connection, timeout, an HTTP status other
            than 200/304 (a redirection included), a body over ``max_bytes``, an unreadable
            ``ca_file``. The message is French and names no secret.
    """
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    try:
        with _session(ca_file) as session, session.get(
                url, headers=headers, timeout=(timeout, timeout), stream=True,
                allow_redirects=False) as response:
            return _answer(response, etag=etag, last_modified=last_modified,
                           max_bytes=max_bytes, deadline=deadline)
    except requests.exceptions.SSLError as exc:
        raise DownloadFailed(
            "certificat du serveur refusé (il ne remonte pas à la chaîne configurée, ou ne "
            f"porte pas ce nom) : {_printable(str(exc), 200)}", reason="tls") from None
    except requests.exceptions.Timeout:
        raise DownloadFailed(f"délai dépassé ({timeout:g} s) : le serveur ne répond pas",
                             reason="timeout") from None
    except requests.exceptions.ConnectionError as exc:
        raise DownloadFailed(f"connexion impossible : {_printable(str(exc), 200)}",
                             reason="network") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadFailed(f"échec de la requête : {_printable(str(exc), 200)}",
                             reason="network") from None
    except OSError as exc:  # requests' "Could not find a suitable TLS CA certificate bundle"
        raise DownloadFailed(f"chaîne de certification illisible ({ca_file or 'système'}) : "
                             f"{_printable(str(exc), 200)}", reason="config") from None


def getter(url: str, *, ca_file: str = "", max_bytes: int = MAX_BYTES,
           timeout: float = TIMEOUT) -> Callable[[str, str], Fetched]:
    """``get_file`` bound to one address: ``(etag, last_modified) -> Fetched``."""
    def get(etag: str, last_modified: str) -> Fetched:
        return get_file(url, ca_file=ca_file, etag=etag, last_modified=last_modified,
                        max_bytes=max_bytes, timeout=timeout)

    return get
