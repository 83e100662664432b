"""Does a mailbox folder hold a Message-ID? The question a queue worker asks before delivering
again a recipient left in doubt (``gateway.deliver.workers``: a worker killed after LMTP took
the data, or Dovecot silent after it): yes, it is not delivered twice; no, it is delivered;
unknown (``None``), it waits for its next attempt, still in doubt.

Both probes read the field exactly, never through the full-text index (fts-xapian finds the
whole parts of a Message-ID only, ``mailstore/fts.py``):

- ``DoveadmProbe``, when the gateway runs beside its one mail store (LMTP on Dovecot's unix
  socket): ``doveadm search`` on the store's files, without the full-text plugins.
- ``ImapProbe``, when the mail is elsewhere (``MSS_LMTP_URL=lmtps://…``, or several stores,
  ``MSS_MAIL_STORES``): the gateway's host has no mail files, or only its own store's. It logs
  in over IMAPS at ``MSS_IMAP_HOST`` as the recipient through the master user (the store
  proxies a mailbox held by another, as for the webmail), lists the folder's messages arrived
  since the day before acceptance (SEARCH SINCE: dates, not the index) and reads their
  Message-ID fields (``MailboxSession.uids_with_header``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta

from core.settings import Settings
from mailstore.config import BASE_PLUGINS, DovecotPaths
from mailstore.errors import ImapError, MailboxNotFound
from mailstore.pool import ImapPool

log = logging.getLogger("mss.gateway")

DOVEADM_NOT_FOUND = 68  # doveadm's exit code for a mailbox that does not exist (EX_NOHOST)

Probe = Callable[[str, str, str, datetime], "bool | None"]


class DoveadmProbe:
    """``doveadm search`` on this host's store (see the module docstring)."""

    def __init__(self, paths: DovecotPaths) -> None:
        self.paths = paths
        self.binary = shutil.which("doveadm") or "/usr/bin/doveadm"

    def holds(self, address: str, folder: str, message_key: str,
              accepted: datetime | None = None) -> bool | None:
        """True: the folder holds it; False: it does not (or the folder does not exist yet);
        None: the search failed (the store busy or down)."""
        # Without the full-text plugins: an exact header match, never Xapian's pieces of
        # words (a long Message-ID is not in its index whole; found nothing = delivered twice).
        command = [self.binary, "-c", str(self.paths.conf), "-o",
                   f"mail_plugins={BASE_PLUGINS}", "search", "-u", address,
                   "mailbox", folder, "header", "Message-ID", message_key]
        try:
            done = subprocess.run(command, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("doveadm search (dédoublonnage) impossible : %s", type(exc).__name__)
            return None
        if done.returncode == 0:
            return bool(done.stdout.strip())
        if done.returncode == DOVEADM_NOT_FOUND:
            return False
        log.warning("doveadm search (dédoublonnage) en échec, code %s : %s",
                    done.returncode, done.stderr.decode(errors="replace").strip()[:300])
        return None


class ImapProbe:
    """The same question over IMAPS, from another host than the mail (module docstring).
    ``pool``: a factory, called on the first question (the master secret is read then, not
    when the gateway starts)."""

    def __init__(self, pool: Callable[[], ImapPool]) -> None:
        self._factory = pool
        self._pool: ImapPool | None = None

    @property
    def pool(self) -> ImapPool:
        if self._pool is None:
            self._pool = self._factory()
        return self._pool

    def holds(self, address: str, folder: str, message_key: str,
              accepted: datetime | None = None) -> bool | None:
        try:
            session = self.pool.connect(address)
        except ImapError as exc:  # store down, or the account refused (locked, closed)
            log.warning("recherche IMAP (dédoublonnage) impossible : %s", exc.message)
            return None
        try:
            # SINCE compares dates in the store's time zone: a day earlier covers any zone.
            since = (accepted - timedelta(days=1)).date() if accepted else None
            found = session.uids_with_header(folder, "Message-ID", message_key, since=since)
        except MailboxNotFound as exc:
            # A folder never created holds nothing; one the store lists but would not open
            # (a disk or permission error of the moment, on INBOX too) cannot say: « no »
            # there would deliver the message a second time.
            try:
                listed = session.listed(folder)
            except ImapError:
                listed = True
            if not listed:
                return False
            log.warning("recherche IMAP (dédoublonnage) : dossier listé mais illisible : %s",
                        exc.message)
            return None
        except ImapError as exc:
            log.warning("recherche IMAP (dédoublonnage) en échec : %s", exc.message)
            return None
        finally:
            session.logout()
        return bool(found)


def probe_for(settings: Settings) -> Probe:
    """``DoveadmProbe`` beside the one store, ``ImapProbe`` when the mail is elsewhere."""
    endpoint = settings.lmtp_endpoint
    if settings.stores or (endpoint is not None and endpoint.tls):
        return ImapProbe(lambda: ImapPool.for_settings(settings, timeout=30)).holds
    return DoveadmProbe(DovecotPaths.from_settings(settings)).holds
