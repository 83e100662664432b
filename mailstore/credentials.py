"""The webmail's master user: how mss opens a mailbox for a user it has already authenticated
(password + code, CPS card) without knowing that user's password.

Dovecot's master-user login: ``<user address>*webmail`` with the master secret. The secret is
256 random bits generated once into ``DATA_DIR/dovecot/master-secret`` (0600, readable by mss's
processes only); Dovecot gets only its salted SHA-512 in ``master-users`` (a fast hash is right
for a random 256-bit secret; argon2 is for human passwords). The master passdb has ``pass =
yes``: the target account must still pass mss's normal rules (active, not locked, mailbox
published), and the session is the user's own, ACLs included (``acl_user = %u``).

With several mail stores (``MSS_MAIL_STORES``) a second master user, ``mss-proxy``, lets one
store open a mailbox of another after checking the client's credentials itself
(``mailstore.sql.Proxying``). Its secret is derived from mss's secret key (HMAC-SHA-256), which
every host of an installation shares, and its ``allow_real_nets`` are the stores' addresses:
the master secret is refused from any other address, whatever the client claims.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

MASTER_USER = "webmail"
MASTER_USERS_FILE = "master-users"
MASTER_SECRET_FILE = "master-secret"


@dataclass(frozen=True)
class MasterCredentials:
    """Log in as ``login_for(address)`` with ``secret`` to open ``address``'s mailbox."""

    user: str
    secret: str

    def login_for(self, address: str) -> str:
        return f"{address}*{self.user}"

    def __repr__(self) -> str:  # never show the secret
        return f"MasterCredentials(user={self.user!r})"


def master_credentials(settings: Settings) -> MasterCredentials:
    """The master user and its secret, created on first use."""
    return MasterCredentials(MASTER_USER, _secret(settings.data_dir.resolve() / "dovecot"))


def proxy_secret(settings: Settings) -> str:
    """The secret of ``mss-proxy`` (hex, safe inside Dovecot's SQL and passwd-file)."""
    return hmac.new(settings.secret(), b"mss dovecot proxy master", hashlib.sha256).hexdigest()


def _secret(conf_dir: Path) -> str:
    path = conf_dir / MASTER_SECRET_FILE
    if not path.exists():
        conf_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def ssha512(secret: str, salt: bytes | None = None) -> str:
    """Dovecot's ``{SSHA512}`` scheme: base64(SHA-512(secret + salt) + salt)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.sha512(secret.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def write_master_users(conf_dir: Path, group: str | None,
                       proxy: tuple[str, str, list[str]] | None = None) -> Path:
    """Write Dovecot's ``master-users`` passwd-file. ``group``: the group of Dovecot's auth
    process when running as root (it reads the file after dropping privileges). ``proxy``:
    (user, secret, addresses it may come from) of the stores' proxy master user."""
    secret = _secret(conf_dir)
    path = conf_dir / MASTER_USERS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    keep = [line for line in lines if line.startswith(f"{MASTER_USER}:")][:1]
    wanted = keep if keep and _matches(keep[0], secret) else [f"{MASTER_USER}:{ssha512(secret)}"]
    if proxy is not None:
        user, proxy_secret, nets = proxy
        extra = "allow_real_nets=" + ",".join(nets)
        old = [line for line in lines if line.startswith(f"{user}:")][:1]
        wanted.append(old[0] if old and old[0].endswith(f"::::::{extra}")
                      and _matches(old[0].removesuffix(f"::::::{extra}"), proxy_secret)
                      else f"{user}:{ssha512(proxy_secret)}::::::{extra}")
    if wanted != lines:  # else keep it: no rewrite per start
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{line}\n" for line in wanted))
        os.replace(tmp, path)
    if group is not None:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o640)  # explicit: `mss` runs with umask 077, and Dovecot's auth must read it
    return path


def _matches(line: str, secret: str) -> bool:
    _, _, hashed = line.partition(":")
    if not hashed.startswith("{SSHA512}"):
        return False
    raw = base64.b64decode(hashed[len("{SSHA512}"):])
    return ssha512(secret, raw[64:]) == hashed
