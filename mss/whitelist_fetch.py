"""Following the MSSanté whitelist (issue #20): a ``mss.run.Service`` that fetches
``MSS_WHITELIST_URL`` every ``MSS_WHITELIST_FETCH_SECONDS`` (sooner again after a failure)
and applies it through ``trust_space.whitelist_history.follow``; the transport is
``core.download`` (server certificate checked against ``MSS_WHITELIST_CA``).

Started with the gateway role, like the national directory feed: outbound work done by the
process that has the way out, in a thread of its own. Several gateway processes share one
database: each looks at the last recorded fetch before fetching, so they do not pile up (two
at the same instant at worst; the second then finds the list unchanged).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import timedelta

from core.db import Database
from core.download import getter
from core.settings import Settings
from trust_space import whitelist_history as history

log = logging.getLogger("mss.whitelist")
RETRY = timedelta(minutes=15)  # after a failed fetch, instead of the full period
SCHEDULED = "planifié"


def follow_now(db: Database, settings: Settings, *, requested_by: str, actor: str | None = None,
               dry_run: bool = False) -> history.FetchReport:
    """One fetch of ``MSS_WHITELIST_URL`` (which must be set)."""
    url = settings.whitelist_url
    return history.follow(db, url, getter(url, ca_file=settings.whitelist_ca),
                          requested_by=requested_by, actor=actor, dry_run=dry_run,
                          local_domains={settings.domain})


class WhitelistFollower:
    """The scheduled fetch as a service of ``mss run``; idle when the URL is empty."""

    name = "liste-blanche"

    def __init__(self, settings: Settings, db: Database, *, poll: float | None = None) -> None:
        self.settings, self.db = settings, db
        self.poll = poll if poll is not None else min(60.0, settings.whitelist_fetch_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.whitelist_url:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mss-whitelist", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A fetch under way ends by its own timeout; the thread is a daemon.
            self._thread.join(timeout=2)
            self._thread = None

    def endpoints(self) -> list[str]:
        s = self.settings
        if not s.whitelist_url:
            return ["Liste blanche : non suivie (MSS_WHITELIST_URL vide ; « mss whitelist "
                    "import » pour la charger à la main)"]
        hours = s.whitelist_fetch_seconds / 3600
        return [f"Liste blanche : suivie depuis {s.whitelist_url} (toutes les {hours:g} h, "
                f"certificat vérifié par {s.whitelist_ca or 'le magasin du système'})"]

    def run_once(self) -> history.FetchReport | None:
        """Fetch when due; the report, or None when not due."""
        every = timedelta(seconds=self.settings.whitelist_fetch_seconds)
        with self.db.read() as session:
            if not history.due(session, every, RETRY):
                return None
        report = follow_now(self.db, self.settings, requested_by=SCHEDULED)
        level = logging.INFO if report.outcome in history.GOOD else logging.WARNING
        log.log(level, "liste blanche : %s — %s", report.outcome.value, report.detail[:300])
        if report.applied and report.applied.warnings:
            log.warning("liste blanche : %d avertissement(s) (DN changé ou domaine retiré), "
                        "à voir sur la page Liste blanche", len(report.applied.warnings))
        return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never bring the service down; tried again at the next poll
                log.exception("liste blanche : récupération en échec")
            self._stop.wait(self.poll)


def disable_in_toml(settings: Settings) -> bool:
    """The demo follows no published list: ``whitelist_url = ""`` appended to mss.toml,
    unless mss.toml or the environment already says something. Returns True when written."""
    toml = settings.data_dir / "mss.toml"
    text = toml.read_text(encoding="utf-8") if toml.exists() else ""
    if "whitelist_url" in text or "MSS_WHITELIST_URL" in os.environ:
        return False
    with toml.open("a", encoding="utf-8") as fh:
        fh.write("\n# The demo does not follow the national whitelist (mss/whitelist_fetch.py).\n"
                 f"whitelist_url = {json.dumps('')}\n")
    return True
