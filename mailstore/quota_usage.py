"""How full the mailboxes are, as Dovecot's quota plugin counts them (``quota = count``, the
limit from the userdb's ``quota_rule``: ``Mailbox.quota_mb`` or ``MSS_MAILBOX_QUOTA_MB``; see
``mailstore.config`` and ``mailstore.sql``).

One ``doveadm quota get -A`` lists every local mailbox (the userdb's iterate query) with its
usage and limit. It opens each mailbox (creating the storage of one never used, as a first
delivery would): measured on 2,011 mailboxes, 3.5 s (8.5 s the first time), so it is never
run on a scrape's path: ``QuotaWatch`` keeps the last summary and refreshes it in a
background thread once it is older than ``ttl`` (5 minutes). The summary holds counts and a
ratio only: the metrics carry no address (no personal data in metrics); ``mss quota`` lists
the addresses for the operator.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailstore.config import DovecotPaths
from mailstore.errors import DovecotUnavailable

log = logging.getLogger("mss.mailstore")

THRESHOLDS = (80, 90, 100)  # percent of the limit
TTL = 300.0  # seconds a summary is served before doveadm runs again
TIMEOUT = 600.0  # one doveadm run over every mailbox


@dataclass(frozen=True)
class Usage:
    """One mailbox: storage used and its limit (KiB; None: no limit), messages, and the
    highest used/limit ratio over the limited resources (None: nothing limited)."""

    address: str
    used_kib: int
    limit_kib: int | None
    messages: int
    ratio: float | None


@dataclass(frozen=True)
class Summary:
    """What the metrics export: per threshold, how many mailboxes are at or over it; the
    highest ratio; how many mailboxes were measured."""

    over: dict[int, int]
    max_ratio: float
    mailboxes: int


def parse(text: str) -> list[Usage]:
    """``doveadm -f tab quota get -A``: a header line, then one line per mailbox and resource
    (``user, quota name, type, value, limit, %``; STORAGE in KiB, limit ``-`` when none).

    Raises:
        DovecotUnavailable: not that table.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].lower().startswith("username\t"):
        raise DovecotUnavailable("doveadm quota : réponse inattendue")
    rows: dict[str, dict[str, tuple[int, int | None]]] = {}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) < 5:
            raise DovecotUnavailable("doveadm quota : ligne inattendue")
        user, _name, kind, value, limit = fields[:5]
        try:
            amount = int(value)
            bound = None if limit.strip() in ("-", "") else int(limit)
        except ValueError:
            raise DovecotUnavailable("doveadm quota : valeur inattendue") from None
        rows.setdefault(user, {})[kind.upper()] = (amount, bound)
    return [_usage(user, resources) for user, resources in rows.items()]


def _usage(user: str, resources: dict[str, tuple[int, int | None]]) -> Usage:
    ratios = [value / limit for value, limit in resources.values() if limit]
    used, limit = resources.get("STORAGE", (0, None))
    messages = resources.get("MESSAGE", (0, None))[0]
    return Usage(user, used, limit or None, messages, max(ratios) if ratios else None)


def read_all(paths: DovecotPaths, *, timeout: float = TIMEOUT) -> list[Usage]:
    """Every mailbox's usage, from the running Dovecot configured under ``paths``.

    Raises:
        DovecotUnavailable: doveadm missing, Dovecot never configured or not running here,
            doveadm failing or too slow.
    """
    binary = shutil.which("doveadm") or "/usr/bin/doveadm"
    if not paths.conf.is_file():
        raise DovecotUnavailable(f"Dovecot n'est pas configuré ici ({paths.conf} absent)")
    command = [binary, "-c", str(paths.conf), "-f", "tab", "quota", "get", "-A"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise DovecotUnavailable("doveadm absent (paquet dovecot-core)") from None
    except subprocess.TimeoutExpired:
        raise DovecotUnavailable(f"doveadm quota : pas de réponse en {timeout:.0f} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        raise DovecotUnavailable(f"doveadm quota en échec (code {done.returncode}) : {reason}")
    return parse(done.stdout)


def at_or_over(usage: Usage, percent: int) -> bool:
    """Filled to ``percent`` of the limit or more (in whole permille: 79.96 % is 80 %)."""
    return usage.ratio is not None and round(usage.ratio * 1000) >= percent * 10


def summarise(usages: Iterable[Usage], thresholds: Iterable[int] = THRESHOLDS) -> Summary:
    listed = list(usages)
    over = {t: sum(1 for u in listed if at_or_over(u, t)) for t in thresholds}
    ratios = [u.ratio for u in listed if u.ratio is not None]
    return Summary(over, max(ratios, default=0.0), len(listed))


class QuotaWatch:
    """The last ``Summary`` for the metrics, cheap to ask for: when it is older than ``ttl``
    a background thread runs ``read`` again, and the caller gets the previous one at once
    (the very first call waits up to ``wait`` seconds). A failed refresh keeps the previous
    summary for up to three ``ttl``, then there is none (no sample rather than a stale one)."""

    def __init__(self, read: Callable[[], list[Usage]], *, ttl: float = TTL,
                 wait: float = 2.0) -> None:
        self.read, self.ttl, self.wait = read, ttl, wait
        self._lock = threading.Lock()
        self._summary: Summary | None = None
        self._good_at = self._tried_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._failing = False

    def current(self) -> Summary | None:
        with self._lock:
            if self._thread is None and time.monotonic() - self._tried_at >= self.ttl:
                self._tried_at = time.monotonic()
                self._thread = threading.Thread(target=self._refresh, name="quota",
                                                daemon=True)
                self._thread.start()
            thread, first = self._thread, self._summary is None
        if thread is not None and first:
            thread.join(self.wait)
        with self._lock:
            if time.monotonic() - self._good_at > 3 * self.ttl:
                return None
            return self._summary

    def _refresh(self) -> None:
        try:
            summary = summarise(self.read())
        except Exception as exc:  # a metrics helper thread must never die silently
            reason = exc.message if isinstance(exc, DovecotUnavailable) else repr(exc)
            with self._lock:
                if not self._failing:
                    log.warning("quotas des boîtes illisibles : %s", reason)
                self._failing, self._thread = True, None
            return
        with self._lock:
            if self._failing:
                log.info("quotas des boîtes de nouveau lisibles")
            self._summary, self._good_at, self._failing = summary, time.monotonic(), False
            self._thread = None
