"""A ManageSieve client (RFC 5804) for the webmail: list, read, write, activate a mailbox's
Sieve scripts on Dovecot's ManageSieve service (``mailstore.sieveconf``).

Why ManageSieve and not ``doveadm sieve``: it is the mail store's network protocol, so the
webmail works the same when it runs on another machine than Dovecot (``mss run --role``); the
server compiles a script before storing it (a script that does not compile is refused with
Pigeonhole's message, never half-installed) and applies its quotas; and the login is the one
the webmail already uses for IMAP: the master user for the person's mailbox (or an
organisational one, ``mailstore.sql``), over STARTTLS checked against mss's CA.

Only the subset the webmail needs: STARTTLS, AUTHENTICATE PLAIN, LISTSCRIPTS, GETSCRIPT,
PUTSCRIPT, SETACTIVE, DELETESCRIPT, LOGOUT. Responses are read strictly (§4: atoms, quoted
strings, literals ``{n}``/``{n+}``); anything else closes the connection with an error.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from core.settings import Settings
from mailstore.credentials import MasterCredentials, master_credentials
from mailstore.errors import MailstoreError

MAX_LINE = 8192
MAX_LITERAL = 1024 * 1024


class SieveError(MailstoreError):
    """ManageSieve refused or failed; ``message`` is the server's words when it gave any."""

    code = "managesieve"


class SieveUnavailable(SieveError):
    """The service cannot be reached, or answered something that is not ManageSieve."""

    code = "managesieve_unavailable"


@dataclass(frozen=True)
class Script:
    name: str
    active: bool


@dataclass(frozen=True)
class Reply:
    status: str  # OK / NO / BYE
    code: str  # the response code's first atom, upper-case ("" when none)
    text: str


class SieveConnection:
    """One logged-in ManageSieve session (not thread-safe)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.io: BinaryIO = sock.makefile("rb")

    # ------------------------------------------------------------------ commands
    def list_scripts(self) -> list[Script]:
        lines, reply = self._command(b"LISTSCRIPTS")
        _check(reply)
        found = []
        for tokens in lines:
            if not tokens:
                raise SieveUnavailable("réponse LISTSCRIPTS illisible")
            found.append(Script(tokens[0], len(tokens) > 1 and tokens[1].upper() == "ACTIVE"))
        return found

    def get_script(self, name: str) -> str:
        lines, reply = self._command(b"GETSCRIPT " + _string(name))
        _check(reply)
        if len(lines) != 1 or len(lines[0]) != 1:
            raise SieveUnavailable("réponse GETSCRIPT illisible")
        return lines[0][0]

    def put_script(self, name: str, text: str) -> None:
        """Store (and have the server compile) ``text``. Raises SieveError with the
        compiler's message when it does not compile or is over quota."""
        _, reply = self._command(b"PUTSCRIPT " + _string(name) + b" " + _literal(text))
        _check(reply)

    def set_active(self, name: str) -> None:
        """Make ``name`` the active script ("" deactivates every script)."""
        _, reply = self._command(b"SETACTIVE " + _string(name))
        _check(reply)

    def delete_script(self, name: str) -> None:
        _, reply = self._command(b"DELETESCRIPT " + _string(name))
        _check(reply)

    def logout(self) -> None:
        try:
            self._command(b"LOGOUT")
        except (OSError, SieveError):
            pass
        finally:
            self.sock.close()

    # ------------------------------------------------------------------ protocol
    def _command(self, line: bytes) -> tuple[list[list[str]], Reply]:
        try:
            self.sock.sendall(line + b"\r\n")
            return read_response(self.io)
        except OSError as exc:
            raise SieveUnavailable(f"ManageSieve injoignable ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class SieveService:
    """Where ManageSieve listens, and how the webmail logs in there."""

    host: str
    port: int
    context: ssl.SSLContext
    credentials: MasterCredentials
    timeout: float = 20.0

    @classmethod
    def for_settings(cls, settings: Settings) -> SieveService:
        context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
        return cls(settings.effective_imap_host, settings.managesieve_port, context,
                   master_credentials(settings))

    @contextmanager
    def session(self, address: str) -> Iterator[SieveConnection]:
        """A session on ``address``'s scripts (master-user login), logged out after use.

        Raises:
            SieveUnavailable: not configured, unreachable, or TLS/login failed.
        """
        if self.port <= 0:
            raise SieveUnavailable("ManageSieve n'est pas activé (MSS_MANAGESIEVE_PORT = 0)")
        conn = self._open(address)
        try:
            yield conn
        finally:
            conn.logout()

    def _open(self, address: str) -> SieveConnection:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise SieveUnavailable(f"ManageSieve injoignable ({type(exc).__name__})") from exc
        try:
            plain = raw.makefile("rb")
            _check(read_response(plain)[1])  # capabilities, then OK
            raw.sendall(b"STARTTLS\r\n")
            _check(read_response(plain)[1])
            sock = self.context.wrap_socket(raw, server_hostname=self.host)
            conn = SieveConnection(sock)
            _check(read_response(conn.io)[1])  # RFC 5804 §2.2: capabilities again after TLS
            login = self.credentials.login_for(address)
            blob = base64.b64encode(f"\0{login}\0{self.credentials.secret}".encode())
            _, reply = conn._command(b'AUTHENTICATE "PLAIN" "' + blob + b'"')
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise SieveUnavailable(f"ManageSieve : TLS impossible ({type(exc).__name__})") from exc
        except SieveError:
            raw.close()
            raise
        if reply.status != "OK":
            conn.sock.close()
            raise SieveUnavailable(f"ManageSieve : connexion refusée pour {address}")
        return conn


# ---------------------------------------------------------------------- wire format
def _string(value: str) -> bytes:
    """A quoted string when it can be one (RFC 5804 §4), else a literal."""
    data = value.encode()
    if b"\r" in data or b"\n" in data or b"\0" in data or len(data) > 1000:
        return _literal(value)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _literal(value: str) -> bytes:
    data = value.encode()
    return b"{%d+}\r\n" % len(data) + data


def _check(reply: Reply) -> None:
    if reply.status != "OK":
        raise SieveError(reply.text or f"ManageSieve : {reply.status}")


def read_response(io: BinaryIO) -> tuple[list[list[str]], Reply]:
    """Data lines (their token values) up to the final OK/NO/BYE line.

    Raises:
        SieveUnavailable: the connection closed, or a line that does not parse.
    """
    lines: list[list[str]] = []
    while True:
        tokens = _read_tokens(io)
        if tokens and tokens[0][1] and tokens[0][0].upper() in ("OK", "NO", "BYE"):
            return lines, _reply(tokens[0][0].upper(), tokens[1:])
        lines.append([value for value, _atom in tokens])


def _reply(status: str, rest: list[tuple[str, bool]]) -> Reply:
    code = ""
    if rest and rest[0][0].startswith("("):
        code = rest[0][0].strip("()").split(" ")[0].upper()
        rest = rest[1:]
    return Reply(status, code, rest[0][0] if rest else "")


def _read_tokens(io: BinaryIO) -> list[tuple[str, bool]]:
    """One response line as (value, is a bare atom) pairs; a literal's data is read too."""
    line = _read_line(io)
    tokens: list[tuple[str, bool]] = []
    pos = 0
    while pos < len(line):
        char = line[pos:pos + 1]
        if char == b" ":
            pos += 1
        elif char == b'"':
            pos, value = _quoted(line, pos)
            tokens.append((value, False))
        elif char == b"{":
            if not line.endswith(b"}"):
                raise SieveUnavailable("littéral ManageSieve mal formé")
            digits = line[pos + 1:-1].rstrip(b"+")
            if not digits.isdigit() or int(digits) > MAX_LITERAL:
                raise SieveUnavailable("littéral ManageSieve mal formé ou trop grand")
            data = io.read(int(digits))
            if len(data) != int(digits):
                raise SieveUnavailable("connexion ManageSieve fermée")
            tokens.append((data.decode("utf-8", "replace"), False))
            line, pos = _read_line(io), 0  # the rest of the response line
        elif char == b"(":
            end = line.find(b")", pos)
            if end < 0:
                raise SieveUnavailable("code de réponse ManageSieve mal formé")
            tokens.append((line[pos:end + 1].decode("utf-8", "replace"), False))
            pos = end + 1
        else:
            end = line.find(b" ", pos)
            end = len(line) if end < 0 else end
            tokens.append((line[pos:end].decode("ascii", "replace"), True))
            pos = end
    return tokens


def _quoted(line: bytes, pos: int) -> tuple[int, str]:
    out = bytearray()
    pos += 1
    while pos < len(line):
        char = line[pos]
        if char == 0x5C and pos + 1 < len(line):  # backslash
            out.append(line[pos + 1])
            pos += 2
        elif char == 0x22:
            return pos + 1, out.decode("utf-8", "replace")
        else:
            out.append(char)
            pos += 1
    raise SieveUnavailable("chaîne ManageSieve non terminée")


def _read_line(io: BinaryIO) -> bytes:
    line = io.readline(MAX_LINE + 2)
    if not line:
        raise SieveUnavailable("connexion ManageSieve fermée")
    if not line.endswith(b"\r\n"):
        raise SieveUnavailable("ligne ManageSieve trop longue ou mal terminée")
    return line[:-2]
