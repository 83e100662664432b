"""Monthly usage indicators an operator sends to the trust space's manager (MSSanté
référentiel #1 Opérateurs: the operator reports its activity every month; DSFT opérateurs
2019, "statistiques" sent each month to the agency's web service).

**Format: assumed.** The agency's exact file layout was not found in the references available
here, so the layout below is ours, kept simple to map onto whatever the agency asks: one CSV
file per indicator family, semicolon-separated, UTF-8 without BOM, CRLF line ends (RFC 4180),
French headers, every row carrying the operator's id and the month (``AAAA-MM``):

- ``…_bal.csv``: per mailbox type (``PER`` personal, ``ORG`` organisational, ``APP``
  applicative, the directory's codes), the mailboxes open at the end of the month (published
  before it ends and not closed by then; suspended ones count), opened (first published) and
  closed during the month;
- ``…_messages.csv``: per type of the sending / receiving mailbox, messages sent (accepted on
  submission, once per message) and those with a recipient at another operator, messages
  received (one per local mailbox delivered into) and those that came from another operator;
  delivery reports the relay writes itself (DSN, MDN) are not counted;
- ``…_connexions.csv``: per channel (``WEB``, ``IMAP``, ``SMTP``) and authentication method,
  successful connections and distinct accounts. Every expected pair is listed, zero or not;
  the webmail's own SMTP log-ins (service account) are not user connections.

Sources: the audit trail (``login`` and its ``method``; ``imap.login``, ``smtp.auth`` and
their ``mechanism``; ``smtp.submit``; ``smtp.relay.receive``; ``mailbox.close``), the relay's
delivery timeline (``delivery_event``) and the directory (``mailbox``, ``account``). Months are
Paris months (``core.localtime``): 23:30 UTC on 30 November is already December.

Limits: IMAP's audit does not tell an application password from an account's own password
(PLAIN/LOGIN count as application passwords, the only password Dovecot takes from a person
unless ``MSS_IMAP_SMTP_WEB_PASSWORD``); a mailbox closed with no dated ``mailbox.close``
record is taken as closed before the month.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import AuditRecord
from core.errors import MssError
from core.localtime import PARIS
from spool.events import Event, SmtpAction, of_kinds
from spool.models import DeliveryEvent, RecipientKind
from trust_space.models import Account, AccountKind, Mailbox, MailboxKind, MailboxState

MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre")
TYPES = {MailboxKind.PERSONAL: "PER", MailboxKind.ORGANISATIONAL: "ORG",
         MailboxKind.APPLICATIVE: "APP"}
TYPE_LABELS = {"PER": "personnelle", "ORG": "organisationnelle", "APP": "applicative",
               "INC": "hors annuaire"}
CHANNELS = {"WEB": "webmail", "IMAP": "IMAP", "SMTP": "SMTP"}
METHODS = {"CPS": "carte CPS (certificat)", "CERT_APP": "certificat applicatif",
           "MDP_OTP": "mot de passe + code à usage unique",
           "MDP_APP": "mot de passe d'application", "MDP": "mot de passe du compte",
           "PSC": "Pro Santé Connect (jeton)", "AUTRE": "autre"}
EXPECTED = (("WEB", "CPS"), ("WEB", "MDP_OTP"), ("WEB", "PSC"),
            ("IMAP", "CPS"), ("IMAP", "CERT_APP"), ("IMAP", "MDP_APP"), ("IMAP", "PSC"),
            ("SMTP", "CPS"), ("SMTP", "CERT_APP"), ("SMTP", "MDP_APP"), ("SMTP", "MDP"),
            ("SMTP", "PSC"))
_WEB_METHODS = {"card": "CPS", "email": "MDP_OTP", "sms": "MDP_OTP", "totp": "MDP_OTP",
                "psc": "PSC", "oidc": "PSC", "prosanteconnect": "PSC"}
_TOKENS = frozenset({"OAUTHBEARER", "XOAUTH2"})
_OPERATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_CHUNK = 500
HEADERS = {
    "bal": ("id_operateur", "mois", "type_bal", "libelle_type_bal",
            "nb_bal_ouvertes_fin_de_mois", "nb_bal_ouvertes_dans_le_mois",
            "nb_bal_fermees_dans_le_mois"),
    "messages": ("id_operateur", "mois", "type_bal", "libelle_type_bal", "nb_messages_envoyes",
                 "dont_vers_autres_operateurs", "nb_messages_recus",
                 "dont_depuis_autres_operateurs"),
    "connexions": ("id_operateur", "mois", "canal", "mode_authentification",
                   "libelle_mode_authentification", "nb_connexions",
                   "nb_utilisateurs_distincts"),
}


class IndicatorError(MssError):
    code = "indicators"


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in Paris time."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``AAAA-MM``. Raises IndicatorError: anything else."""
        found = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if not found or not 1 <= int(found[2]) <= 12 or int(found[1]) < 2000:
            raise IndicatorError(f"mois invalide « {text[:20]} » : attendu AAAA-MM, "
                                 "par exemple 2026-11", code="bad_month")
        return cls(int(found[1]), int(found[2]))

    @classmethod
    def of(cls, when: datetime) -> Month:
        local = when.astimezone(PARIS)
        return cls(local.year, local.month)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    @property
    def start(self) -> datetime:
        """Midnight on the 1st, Paris time, as UTC (the database's times)."""
        return datetime(self.year, self.month, 1, tzinfo=PARIS).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def french(self) -> str:
        return f"{MONTHS_FR[self.month - 1]} {self.year}"


@dataclass
class MailboxCounts:
    open_at_end: int = 0
    opened: int = 0
    closed: int = 0


@dataclass
class MessageCounts:
    sent: int = 0
    sent_to_peers: int = 0
    received: int = 0
    received_from_peers: int = 0


@dataclass
class ConnectionCounts:
    connections: int = 0
    accounts: set[str] = field(default_factory=set)


@dataclass
class Indicators:
    operator_id: str
    month: Month
    mailboxes: dict[str, MailboxCounts]
    messages: dict[str, MessageCounts]
    connections: dict[tuple[str, str], ConnectionCounts]


def check_operator_id(value: str) -> str:
    """Raises IndicatorError: not a plain identifier (it names the files)."""
    if not _OPERATOR_ID.fullmatch(value):
        raise IndicatorError(f"identifiant d'opérateur invalide « {value[:40]} » : lettres, "
                             "chiffres, « . », « _ » et « - » seulement", code="bad_operator_id")
    return value


def compute(session: Session, month: Month, operator_id: str) -> Indicators:
    """The month's indicators, read-only."""
    kinds = _mailbox_types(session)
    return Indicators(check_operator_id(operator_id), month, _mailboxes(session, month),
                      _messages(session, month, kinds), _connections(session, month))


# ------------------------------------------------------------------ mailboxes
def _mailbox_types(session: Session) -> dict[str, str]:
    rows = session.execute(select(Mailbox.address, Mailbox.kind)
                           .where(Mailbox.operator_id.is_(None)))
    return {address.lower(): TYPES[kind] for address, kind in rows}


def _close_dates(session: Session) -> dict[int, datetime]:
    """Mailbox id → when an operator closed it (``webmail.operator.accounts``)."""
    dates: dict[int, datetime] = {}
    rows = session.execute(select(AuditRecord.at, AuditRecord.request).where(
        AuditRecord.action == "mailbox.close", AuditRecord.outcome == "ok"))
    for at, request in rows:
        box = _json(request).get("mailbox_id")
        if isinstance(box, int):
            dates[box] = min(at, dates.get(box, at))
    return dates


def _mailboxes(session: Session, month: Month) -> dict[str, MailboxCounts]:
    counts = {code: MailboxCounts() for code in TYPES.values()}
    closed_at = _close_dates(session)
    rows = session.execute(select(Mailbox.id, Mailbox.kind, Mailbox.state, Mailbox.published_at)
                           .where(Mailbox.operator_id.is_(None)))
    for box_id, kind, state, published_at in rows:
        c = counts[TYPES[kind]]
        closed = closed_at.get(box_id)
        if state is MailboxState.CLOSED and closed is None:
            closed = month.start  # closed, date unknown: not open during this month's end
        if published_at is not None and published_at < month.end and \
                (closed is None or closed >= month.end):
            c.open_at_end += 1
        if published_at is not None and month.start <= published_at < month.end:
            c.opened += 1
        if box_id in closed_at and month.start <= closed_at[box_id] < month.end:
            c.closed += 1
    return counts


# ------------------------------------------------------------------ messages
def _messages(session: Session, month: Month, kinds: dict[str, str]) -> dict[str, MessageCounts]:
    counts: dict[str, MessageCounts] = defaultdict(MessageCounts)
    sent: dict[str, str] = {}  # queue id → sender's type
    for target, request in _audit(session, month, (SmtpAction.SUBMIT,)):
        sent[target] = kinds.get(str(_json(request).get("from", "")).lower(), "INC")
    for queue_id in _to_peers(session, list(sent)):
        counts[sent[queue_id]].sent_to_peers += 1
    for kind in sent.values():
        counts[kind].sent += 1
    delivered = session.execute(select(DeliveryEvent.queue_id, DeliveryEvent.recipient).where(
        DeliveryEvent.event == Event.DELIVERED, of_kinds(RecipientKind.LOCAL),
        DeliveryEvent.at >= month.start, DeliveryEvent.at < month.end)).all()
    origins = _origins(session, {queue_id for queue_id, _ in delivered})
    for queue_id, recipient in delivered:
        origin = origins.get(queue_id)
        if origin is None:  # a report the relay wrote itself (DSN, MDN)
            continue
        c = counts[kinds.get(recipient.lower(), "INC")]
        c.received += 1
        c.received_from_peers += origin == SmtpAction.RECEIVE
    return {code: counts[code] for code in (*TYPES.values(), *(["INC"] if "INC" in counts else []))}


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _to_peers(session: Session, queue_ids: list[str]) -> set[str]:
    """The queue ids that had a recipient at another operator (their "queued" events)."""
    found: set[str] = set()
    for chunk in _chunks(queue_ids):
        found.update(session.scalars(select(DeliveryEvent.queue_id).where(
            DeliveryEvent.queue_id.in_(chunk), DeliveryEvent.event == Event.QUEUED,
            of_kinds(RecipientKind.PEER, RecipientKind.CLEAR))))
    return found


def _origins(session: Session, queue_ids: set[str]) -> dict[str, str]:
    """Queue id → how it came in (``smtp.submit`` or ``smtp.relay.receive``)."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(queue_ids)):
        rows = session.execute(select(AuditRecord.target, AuditRecord.action).where(
            AuditRecord.action.in_((SmtpAction.SUBMIT, SmtpAction.RECEIVE)),
            AuditRecord.target.in_(chunk)))
        found.update({target: action for target, action in rows})
    return found


# ------------------------------------------------------------------ connections
def _connections(session: Session, month: Month) -> dict[tuple[str, str], ConnectionCounts]:
    counts = {pair: ConnectionCounts() for pair in EXPECTED}
    accounts = {login: kind for login, kind in session.execute(
        select(Account.login, Account.kind))}
    rows = session.execute(select(AuditRecord.actor, AuditRecord.action, AuditRecord.request)
                           .where(AuditRecord.action.in_(("login", "imap.login", "smtp.auth")),
                                  AuditRecord.outcome == "ok",
                                  AuditRecord.at >= month.start, AuditRecord.at < month.end))
    for actor, action, request in rows:
        login = actor.lower()
        kind = accounts.get(login)
        if action == "smtp.auth" and kind is AccountKind.SERVICE:
            continue  # the webmail submitting for someone already counted on WEB
        pair = _method(action, _json(request), kind)
        c = counts.setdefault(pair, ConnectionCounts())
        c.connections += 1
        c.accounts.add(login)
    return counts


def _method(action: str, request: dict[str, Any], kind: AccountKind | None) -> tuple[str, str]:
    if action == "login":
        method = str(request.get("method", "")).lower().replace(" ", "").replace("_", "")
        return "WEB", _WEB_METHODS.get(method, "AUTRE")
    channel = "IMAP" if action == "imap.login" else "SMTP"
    mechanism = str(request.get("mechanism", "")).upper()
    if mechanism in _TOKENS:
        return channel, "PSC"
    if mechanism == "EXTERNAL":
        return channel, "CERT_APP" if kind is AccountKind.APPLICATIVE else "CPS"
    if mechanism in ("PLAIN", "LOGIN"):
        own = channel == "SMTP" and "app_password" not in request
        return channel, "MDP" if own else "MDP_APP"
    return channel, "AUTRE"


# ------------------------------------------------------------------ helpers
def _audit(session: Session, month: Month, actions: Iterable[str]) -> Iterator[tuple[str, str]]:
    yield from session.execute(select(AuditRecord.target, AuditRecord.request).where(
        AuditRecord.action.in_(tuple(actions)),
        AuditRecord.at >= month.start, AuditRecord.at < month.end)).all()


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------ output
def tables(ind: Indicators) -> dict[str, list[tuple[object, ...]]]:
    """Family → rows (header first), as the CSV files hold them."""
    head = (ind.operator_id, ind.month.label)
    bal = [(*head, code, TYPE_LABELS[code], c.open_at_end, c.opened, c.closed)
           for code, c in ind.mailboxes.items()]
    messages = [(*head, code, TYPE_LABELS[code], c.sent, c.sent_to_peers, c.received,
                 c.received_from_peers) for code, c in ind.messages.items()]
    connections = [(*head, channel, method, METHODS[method], c.connections, len(c.accounts))
                   for (channel, method), c in ind.connections.items()]
    return {"bal": [HEADERS["bal"], *bal], "messages": [HEADERS["messages"], *messages],
            "connexions": [HEADERS["connexions"], *connections]}


def write_files(ind: Indicators, out_dir: Path) -> list[Path]:
    """One CSV per family in ``out_dir`` (created), each written whole then renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family, rows in tables(ind).items():
        path = out_dir / f"indicateurs_{ind.operator_id}_{ind.month.label}_{family}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh, delimiter=";").writerows(rows)
        os.replace(tmp, path)
        written.append(path)
    return written


def summary(ind: Indicators) -> list[str]:
    """The totals, in French, for ``--dry-run`` and the end of a run."""
    boxes, msgs, conns = ind.mailboxes, ind.messages.values(), ind.connections
    by_type = ", ".join(f"{TYPE_LABELS[k]}s : {c.open_at_end}" for k, c in boxes.items())
    by_channel = ", ".join(
        f"{label} : {sum(c.connections for (ch, _), c in conns.items() if ch == code)}"
        for code, label in CHANNELS.items())
    methods: Counter[str] = Counter()
    for (_, method), c in conns.items():
        methods[method] += c.connections
    lines = [
        f"Indicateurs de {ind.month.french} — opérateur {ind.operator_id} "
        "(mois calendaire, heure de Paris)",
        f"BAL ouvertes en fin de mois : {sum(c.open_at_end for c in boxes.values())} "
        f"({by_type})",
        f"BAL ouvertes dans le mois : {sum(c.opened for c in boxes.values())} ; "
        f"fermées dans le mois : {sum(c.closed for c in boxes.values())}",
        f"Messages envoyés : {sum(c.sent for c in msgs)}, dont "
        f"{sum(c.sent_to_peers for c in msgs)} vers d'autres opérateurs",
        f"Messages reçus : {sum(c.received for c in msgs)}, dont "
        f"{sum(c.received_from_peers for c in msgs)} d'autres opérateurs",
        f"Connexions : {sum(c.connections for c in conns.values())} ({by_channel})",
    ]
    lines += [f"  {METHODS[m]} : {methods[m]}" for m in METHODS if m in methods]
    return lines
