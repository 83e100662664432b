"""The webmail's master user: how mss opens a mailbox for a user it has already authenticated
(password + code, CPS card) without knowing that user's password.

Dovecot's master-user login: ``<user address>*webmail`` with the master secret. The secret is
256 random bits generated once into ``DATA_DIR/dovecot/master-secret`` (0600, readable by mss's
processes only); Dovecot gets only its salted SHA-512 in ``master-users`` (a fast hash is right
for a random 256-bit secret; argon2 is for human passwords). The master passdb has ``pass =
yes``: the target account must still pass mss's normal rules (active, not locked, mailbox
published), and the session is the user's own, ACLs included (``acl_user = %u``).
"""

from __future__ import annotations

import base64
import grp
import hashlib
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


def write_master_users(conf_dir: Path, group: str | None) -> Path:
    """Write Dovecot's ``master-users`` passwd-file. ``group``: the group of Dovecot's auth
    process when running as root (it reads the file after dropping privileges)."""
    secret = _secret(conf_dir)
    path = conf_dir / MASTER_USERS_FILE
    if not (path.exists() and _matches(path, secret)):  # else keep it: no rewrite per start
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{MASTER_USER}:{ssha512(secret)}\n")
        os.replace(tmp, path)
    if group is not None:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o640)  # explicit: `mss` runs with umask 077, and Dovecot's auth must read it
    return path


def _matches(path: Path, secret: str) -> bool:
    line = path.read_text().strip()
    _, _, hashed = line.partition(":")
    if not hashed.startswith("{SSHA512}"):
        return False
    raw = base64.b64decode(hashed[len("{SSHA512}"):])
    return ssha512(secret, raw[64:]) == hashed
