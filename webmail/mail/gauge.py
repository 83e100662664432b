"""The quota gauge of a mailbox (issue #17): "312 Mo sur 1 Go", amber from 80 %, red from
90 %, shown under the folder list and updated with the live counts (``webmail.mail.live``).

Read over IMAP by ``mailstore.imapquota``: GETQUOTAROOT for one's own mailbox; for an
organisational mailbox, which Dovecot does not show to delegates, the size of its folders
against the quota the directory gives it (the same rule as Dovecot's userdb,
``mailstore.sql.user_query``: ``Mailbox.quota_mb``, else ``MSS_MAILBOX_QUOTA_MB``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from mailstore.imap import MailboxSession, Quota
from mailstore.imapquota import own_usage, shared_usage
from trust_space.models import Mailbox
from webmail.context import mss
from webmail.mail.access import Box

WARN, FULL = 80.0, 90.0  # per cent: amber, then red


def limit_kb(box: Box) -> int:
    """The quota the directory gives ``box``, in units of 1024 octets."""
    with mss().db.read() as session:
        mailbox = session.get(Mailbox, box.id)
        mb = mailbox.quota_mb if mailbox is not None and mailbox.quota_mb else None
    return (mb or mss().settings.mailbox_quota_mb) * 1024


def box_quota(session: MailboxSession, box: Box) -> Quota | None:
    """How full ``box`` is, read in the user's session; None when the server does not say."""
    try:
        if box.is_own:
            return own_usage(session.client)
        return shared_usage(session.client, box.address, limit_kb(box))
    except IMAPClientAbortError:
        raise
    except IMAPClientError:
        return None


@dataclass(frozen=True)
class Gauge:
    """A quota as the page shows it."""

    used_kb: int
    limit_kb: int

    @property
    def percent(self) -> float:
        return min(100.0, 100.0 * self.used_kb / self.limit_kb)

    @property
    def level(self) -> str:
        """"ok", "warn" (amber, from 80 %) or "full" (red, from 90 %)."""
        return "full" if self.percent >= FULL else "warn" if self.percent >= WARN else "ok"

    @property
    def text(self) -> str:
        """``312 Mo sur 1 Go``."""
        return f"{size_kb_fr(self.used_kb)} sur {size_kb_fr(self.limit_kb)}"

    @property
    def note(self) -> str:
        """What the person should know beyond the numbers (empty under 80 %)."""
        if self.level == "full":
            return ("Boîte presque pleine : supprimez des messages ou videz la corbeille, "
                    "sinon les prochains messages seront refusés.")
        if self.level == "warn":
            return "Boîte bientôt pleine."
        return ""

    @property
    def value(self) -> int:
        return min(self.used_kb, self.limit_kb)

    @property
    def low(self) -> float:
        """<meter low>: just under 80 %, so that 80 % itself is amber (HTML's meter keeps a
        value equal to ``low`` in the optimum region)."""
        return self.limit_kb * WARN / 100 - 0.5

    @property
    def high(self) -> float:
        return self.limit_kb * FULL / 100 - 0.5

    def json(self) -> dict[str, Any]:
        return {"used": self.used_kb, "limit": self.limit_kb, "value": self.value,
                "low": self.low, "high": self.high, "percent": round(self.percent),
                "level": self.level, "text": self.text, "note": self.note}


def gauge(quota: Quota | None) -> Gauge | None:
    """The gauge of a quota, None without a limit."""
    if quota is None or not quota.limit_kb or quota.limit_kb <= 0:
        return None
    return Gauge(max(0, quota.used_kb), quota.limit_kb)


def size_kb_fr(kb: int) -> str:
    """A size given in units of 1024 octets, as French readers write it: ``820 ko``,
    ``2,5 Mo``, ``312 Mo``, ``1 Go``."""
    if kb < 1024:
        return f"{kb} ko"
    value, unit = kb / 1024, "Mo"
    if value >= 1024:
        value, unit = value / 1024, "Go"
    if value >= 10:
        return f"{round(value)} {unit}"
    text = f"{value:.1f}".removesuffix(".0").replace(".", ",")
    return f"{text} {unit}"
