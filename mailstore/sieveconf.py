"""Sieve in the mail store: Dovecot Pigeonhole (Debian ``dovecot-sieve``,
``dovecot-managesieved``), configured by ``mailstore.config``.

- **Delivery**: LMTP runs the mailbox's active script (``sieve`` plugin). Scripts live in the
  mailbox's home: ``~/sieve/<name>.sieve``, the active one linked from ``~/.dovecot.sieve``.
  The webmail writes one script of its own (``mailstore.sievescript``) through ManageSieve;
  a professional may upload theirs with any ManageSieve client (Thunderbird's add-on, …).
- **ManageSieve** (RFC 5804) on ``MSS_MANAGESIEVE_PORT`` (0: not offered), STARTTLS required
  before any authentication like IMAP (``ssl = required``), with the same passdbs: application
  passwords, certificates (EXTERNAL), tokens where IMAP takes them, and the webmail's master
  user. ``mss dns`` publishes it as ``_sieve._tcp`` (RFC 5804 §1.8).
- **What a script may do**: file into folders, flags, vacation (RFC 5230), and the usual tests.
  Not ``redirect`` (``sieve_max_redirects = 0``: automatic forwarding out of a secure mailbox is
  not offered), not ``reject``/``ereject`` (a rejection would leave with a null sender, which the
  gateway's submission refuses) nor ``enotify`` (a mailto notification is a forward by another
  name): a script asking for them does not compile, so ManageSieve refuses it up front.
- **Vacation**: at most one reply per sender per period (``:days``, between 1 and 90 days, 7 by
  default). Pigeonhole never answers an automatic message or a list (RFC 3834 §2: a null
  sender, ``Auto-Submitted`` other than ``no``, ``Precedence: bulk/list/junk``, ``List-Id`` and
  the other list fields, ``MAILER-DAEMON``/``owner-``/``-request`` senders), nor a message that
  is not addressed to the mailbox in To/Cc (``sieve_vacation_dont_check_recipient = no``: mss
  has no aliases, a mailbox's address is its Dovecot user, organisational ones included, so
  the check holds; it keeps Bcc copies and list traffic unanswered, as RFC 5230 §4.5 wants).
- **Where replies go**: through the gateway, never directly (``mailstore.sendmail``). They are
  sent with the mailbox as envelope sender (``sieve_vacation_send_from_recipient``: the
  gateway's submission refuses a null sender) and so get the gateway's signature and a copy in
  the mailbox's Sent folder, a trace of what was answered in its name.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from core.db import Database
from core.settings import Settings
from mailstore.users import ProcessUsers

log = logging.getLogger("mss.mailstore")

SENDMAIL_FILE = "sendmail.py"  # a copy of mailstore/sendmail.py
SUBMIT_FILE = "submit.json"  # where and as whom it submits (holds the secret)
BEFORE_FILE = "before.sieve"  # run before every mailbox's own script
SCRIPT_NAME = "mss-webmail"  # the one script the webmail writes (mailstore.sievescript)
MAX_SCRIPT_KB = 256


def service_login(settings: Settings) -> str:
    """The SERVICE account the mail store submits with (``mailstore@<domain>``)."""
    return f"mailstore@{settings.domain}"


def protocols(settings: Settings) -> str:
    """Extra words for ``protocols``: ManageSieve when it has a port."""
    return " sieve" if settings.managesieve_port > 0 else ""


def dovecot_conf(settings: Settings, conf_dir: Path, users: ProcessUsers) -> str:
    """Top-level settings, the ``plugin {}`` block of Pigeonhole, and the ManageSieve
    service (module docstring)."""
    sendmail = (f"{_interpreter(users)} -I {conf_dir / SENDMAIL_FILE} "
                f"{conf_dir / SUBMIT_FILE} %u")
    return f"""\
sendmail_path = {sendmail}
submission_timeout = 60 secs
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_before = {conf_dir / BEFORE_FILE}
  sieve_max_script_size = {MAX_SCRIPT_KB}K
  sieve_quota_max_scripts = 20
  sieve_quota_max_storage = 2M
  sieve_max_redirects = 0
  sieve_extensions = -enotify -reject
  sieve_vacation_min_period = 1d
  sieve_vacation_default_period = 7d
  sieve_vacation_max_period = 90d
  sieve_vacation_send_from_recipient = yes
  sieve_vacation_dont_check_recipient = no
}}
{_managesieve(settings, users)}"""


def _managesieve(settings: Settings, users: ProcessUsers) -> str:
    if settings.managesieve_port <= 0:
        return "# ManageSieve: not offered (MSS_MANAGESIEVE_PORT = 0)\n"
    chroot = "" if users.privileged else "  chroot =\n"
    return f"""\
service managesieve-login {{
{chroot}  inet_listener sieve {{
    address = {settings.listen_address}
    port = {settings.managesieve_port}
  }}
}}
protocol sieve {{
  managesieve_implementation_string = mss
  managesieve_logout_format = bytes=%i/%o
}}
"""


# The gateway's copy of a message a mailbox sent arrives by LMTP at <address>+Sent
# (mailstore.lmtp): it stays in Sent, out of reach of the mailbox's filters and replies.
# ``fileinto`` and not ``keep``: Pigeonhole runs the next script of the sequence (the
# mailbox's own) only while the implicit keep is still pending, and an explicit ``keep``
# leaves it pending (sieve-multiscript.c); ``fileinto`` cancels it.
BEFORE_SCRIPT = """\
# Written by mss (mailstore/sieveconf.py), run before each mailbox's own script.
require ["envelope", "subaddress", "fileinto"];
if envelope :detail "to" "Sent" {
  fileinto "Sent";
  stop;
}
"""


def write_files(settings: Settings, conf_dir: Path, users: ProcessUsers, secret: str) -> None:
    """The script run before every mailbox's own (compiled here: Dovecot's mail processes
    may not write beside it), the ``sendmail`` program and its ``submit.json`` (readable by
    the mail user only)."""
    from mailstore.config import _write

    _write(conf_dir / BEFORE_FILE, BEFORE_SCRIPT)
    binary = conf_dir / BEFORE_FILE.replace(".sieve", ".svbin")
    try:
        subprocess.run(["sievec", str(conf_dir / BEFORE_FILE), str(binary)], check=True,
                       capture_output=True, timeout=30)
        os.chmod(binary, 0o644)
    except (OSError, subprocess.SubprocessError) as exc:  # Dovecot then compiles it itself
        log.warning("sievec : %s non compilé (%s)", BEFORE_FILE, type(exc).__name__)

    shutil.copyfile(Path(__file__).with_name("sendmail.py"), conf_dir / f".{SENDMAIL_FILE}")
    os.chmod(conf_dir / f".{SENDMAIL_FILE}", 0o644)
    os.replace(conf_dir / f".{SENDMAIL_FILE}", conf_dir / SENDMAIL_FILE)
    conf = {"host": settings.effective_submission_host, "port": settings.submission_port,
            "login": service_login(settings),
            "secret": secret, "ca": str(settings.pki_dir.resolve() / "ca.pem")}
    if users.privileged:  # the mail user cannot read pki/: the CA goes beside the file
        ca = conf_dir / "submit-ca.pem"
        _write(ca, (settings.pki_dir / "ca.pem").read_bytes())
        conf["ca"] = str(ca)
    path = conf_dir / SUBMIT_FILE
    _write(path, json.dumps(conf), 0o640 if users.privileged else 0o600)
    if users.privileged:
        os.chown(path, 0, users.mail_gid)


def ensure_submitter(settings: Settings, db: Database) -> str:
    """The mail store's SERVICE account and its password (kept in ``submit.json``); a new
    password when the account or the file is missing. Returns the password."""
    from trust_space.accounts import create_account, find_account, set_password
    from trust_space.models import AccountKind

    path = settings.data_dir.resolve() / "dovecot" / SUBMIT_FILE
    login = service_login(settings)
    with db.transaction() as session:
        account = find_account(session, login)
        if account is not None and path.exists():
            try:
                return str(json.loads(path.read_text())["secret"])
            except (OSError, ValueError, KeyError):
                pass
        password = secrets.token_urlsafe(24) + "aA1"  # strength rules: lower, upper, digit
        if account is None:
            create_account(session, login=login, kind=AccountKind.SERVICE, password=password)
        else:
            set_password(account, password)
    return password


@functools.cache
def _interpreter(users: ProcessUsers) -> str:
    """A Python the mail user can run (mss's own may live where it cannot read, under
    ``/root`` for instance; the program needs the standard library only)."""
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    if not users.privileged:
        return sys.executable
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-I", "-c", "import json, smtplib, ssl"],
                                  user=users.mail_uid, group=users.mail_gid, extra_groups=[],
                                  env={}, capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return candidate
    from core.errors import ConfigError
    raise ConfigError("aucun interpréteur Python utilisable par l'utilisateur du courrier "
                      "pour les réponses automatiques : installez python3")
