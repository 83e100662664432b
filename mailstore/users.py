"""The system users Dovecot's processes run as.

As a normal user, every Dovecot process runs as that user. As root, Dovecot's own split
applies: login processes as ``dovenull``, internal services as ``dovecot``, and mail (imap,
lmtp) as a dedicated ``vmail`` system user when it exists (``setup.sh`` creates it), else as
``dovecot`` with a warning.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from core.errors import ConfigError

log = logging.getLogger("mss.mailstore")

MAIL_USER = "vmail"


@dataclass(frozen=True)
class ProcessUsers:
    """The system users Dovecot's processes run as (see the module docstring)."""

    owner: str  # the user mss runs as; owns the LMTP socket
    internal: str
    login: str
    mail: str
    mail_uid: int
    mail_gid: int
    privileged: bool  # running as root: privileges are dropped per service

    @property
    def internal_group(self) -> str:
        return group_name(pwd.getpwnam(self.internal).pw_gid)

    @classmethod
    def detect(cls, mail_user: str | None = None) -> ProcessUsers:
        me = pwd.getpwuid(os.geteuid())
        if os.geteuid() != 0:
            return cls(me.pw_name, me.pw_name, me.pw_name, me.pw_name, me.pw_uid, me.pw_gid,
                       False)
        for name in ("dovecot", "dovenull"):
            _require_user(name)
        mail = _mail_user(mail_user)
        return cls(me.pw_name, "dovecot", "dovenull", mail.pw_name, mail.pw_uid, mail.pw_gid,
                   True)


def _require_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"utilisateur système « {name} » absent : installez dovecot-core "
                          "(apt-get install dovecot-imapd dovecot-lmtpd)") from None


def _mail_user(wanted: str | None) -> pwd.struct_passwd:
    if wanted:
        return _require_user(wanted)
    try:
        return pwd.getpwnam(MAIL_USER)
    except KeyError:
        log.warning("utilisateur système %s absent : les boîtes appartiendront à dovecot "
                    "(créez-le : useradd --system --user-group --shell /usr/sbin/nologin %s)",
                    MAIL_USER, MAIL_USER)
        return _require_user("dovecot")


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
