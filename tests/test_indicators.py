"""Monthly usage indicators (``mss indicators``, issue #20): a known history written through the
real domain functions and tables (directory, accounts, Dovecot's auth policy, the gateway's
password log-in, the queue's enqueue / claim / record, the audit trail), the month's totals
exact on SQLite and PostgreSQL, Paris month boundaries, an empty month, the CLI's files and
its refusals."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core import audit
from core.db import Database
from core.settings import Settings
from gateway.accept import auth as gateway_auth
from mailstore import authpolicy
from mss.indicators import IndicatorError, Indicators, Month, compute, summary, tables
from spool import queue as q
from spool.models import Origin, RecipientKind, RecipientState
from tests.test_cli import assert_clean_error, mss
from trust_space import accounts, app_passwords, directory
from trust_space.models import AccountKind, Mailbox, MailboxKind, MailboxState, Operator

DOMAIN = "mss.test"
NOV, DEC = Month(2026, 11), Month(2026, 12)
PASSWORD = "Indicateurs-2026-passe"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    """The time the audit trail and the queue read (``utcnow`` in their modules)."""

    def __init__(self) -> None:
        self.now = utc("2026-09-01T08:00")

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    found = Clock()
    monkeypatch.setattr("core.audit.utcnow", found)
    monkeypatch.setattr("spool.queue.utcnow", found)
    return found


@dataclass
class Space:
    db: Database
    clock: Clock
    boxes: dict[str, Mailbox]
    app_password: str

    def at(self, when: str) -> Space:
        self.clock.now = utc(when)
        return self

    def addr(self, name: str) -> str:
        return self.boxes[name].address


# ------------------------------------------------------------------ the directory
def _person(session: Session, rpps: str, first: str, last: str,
            published: str | None) -> Mailbox:
    pro, _ = directory.upsert_professional(session, rpps=rpps, first_name=first, last_name=last,
                                           profession="Médecin")
    box = directory.new_personal_mailbox(session, pro, DOMAIN)
    if published:
        directory.publish(session, box, now=utc(published))
        accounts.create_professional_account(session, pro, box.address, PASSWORD)
    return box


def _directory(db: Database) -> dict[str, Mailbox]:
    with db.transaction() as s:
        boxes = {
            "marie": _person(s, "10000000001", "Marie", "Martin", "2026-10-05T09:00"),
            "paul": _person(s, "10000000002", "Paul", "Durand", "2026-11-10T09:00"),
            "julie": _person(s, "10000000003", "Julie", "Bernard", "2026-10-01T09:00"),
            "jean": _person(s, "10000000004", "Jean", "Petit", "2026-10-01T09:00"),
            "waiting": _person(s, "10000000005", "Léa", "Roux", None),  # never published
        }
        structure, _ = directory.upsert_structure(s, finess="640000001", name="Pharmacie",
                                                  postal_code="64000")
        pharmacy = directory.new_organisational_mailbox(s, structure, "pharma", "centre", DOMAIN)
        # 00:30 on 1 December in Paris: opened in December, not open at November's end
        directory.publish(s, pharmacy, now=utc("2026-11-30T23:30"))
        lps = Mailbox(address=f"lps.cabinet@{DOMAIN}", kind=MailboxKind.APPLICATIVE,
                      state=MailboxState.PENDING_VALIDATION)
        s.add(lps)
        directory.publish(s, lps, now=utc("2026-09-01T09:00"))
        accounts.create_account(s, login=lps.address, kind=AccountKind.APPLICATIVE,
                                password=PASSWORD, mailbox=lps)
        accounts.create_account(s, login=f"webmail@{DOMAIN}", kind=AccountKind.SERVICE,
                                password=PASSWORD)
        peer = Operator(name="Pair", certificate_dn="CN=pair.test")
        s.add(peer)
        s.flush()
        s.add(Mailbox(address="dr.pair@pair.test", kind=MailboxKind.PERSONAL,
                      state=MailboxState.PUBLISHED, operator_id=peer.id,
                      published_at=utc("2026-10-01T00:00")))
        boxes.update(pharmacy=pharmacy, lps=lps)
    return boxes


def _close(space: Space, name: str, when: str) -> None:
    """What the operator pages do (``webmail.operator.accounts.close``): close, then audit."""
    space.at(when)
    with space.db.transaction() as s:
        account = accounts.find_account(s, space.addr(name))
        assert account is not None
        box = accounts.close_personal_mailbox(s, account, space.boxes[name].id)
        audit.record(s, actor="operateur@mss.test", action="mailbox.close", target=account.login,
                     outcome="ok", request={"mailbox_id": box.id, "via": "operateur",
                                            "ip": "192.0.2.9", "motif": ""})


# ------------------------------------------------------------------ the relay
def _submit(space: Space, login: str, sender: str, rcpts: list[tuple[str, RecipientKind]],
            when: str, origin: Origin = Origin.SUBMISSION) -> str:
    """``gateway.accept.usecases.submit`` / ``relay`` once the message is secured: enqueue,
    audit."""
    space.at(when)
    queue_id = q.new_queue_id()
    if origin is Origin.SUBMISSION:
        rcpts = [*rcpts, (sender, RecipientKind.SENT)]
    with q.appending(space.db) as conn:
        q.enqueue(conn, queue_id=queue_id, origin=origin, envelope_from=sender,
                  message_key=f"<{queue_id}@{DOMAIN}>", submitter=login, size=100,
                  local=b"x", recipients=rcpts, protection="sign")
        summary_ = {"from": sender, "rcpt": [a for a, _ in rcpts], "size": 100}
        if origin is Origin.SUBMISSION:
            audit.record(conn, actor=login, action="smtp.submit", target=queue_id,
                         outcome="queued", request={**summary_, "as": login})
        elif origin is Origin.RELAY:
            audit.record(conn, actor="CN=pair.test", action="smtp.relay.receive",
                         target=queue_id, outcome="queued", request=summary_)
    return queue_id


def _deliver(space: Space, when: str) -> None:
    """A worker's round: claim what is due, record every row delivered."""
    space.at(when)
    claimed = q.claim(space.db, "test", limit=100, lease_seconds=60)
    with q.writing(space.db) as session:
        q.record(session, [q.Done(c, row, RecipientState.DELIVERED, "250", "2.0.0 Ok")
                           for c in claimed for row in c.rows])


# ------------------------------------------------------------------ log-ins
def _web(space: Space, login: str, method: str, when: str, action: str = "login",
         outcome: str = "ok") -> None:
    """``webmail.auth.views``'s records (``webmail.context.record``: the request's ip added)."""
    space.at(when)
    with space.db.transaction() as s:
        audit.record(s, actor=login, action=action, target=login, outcome=outcome,
                     request={"method": method, "ip": "192.0.2.1"})


def _imap(space: Space, login: str, mech: str, when: str, success: bool = True) -> None:
    """Dovecot's auth policy report, as ``mailstore.hooks`` hands it over."""
    space.at(when)
    attempt = authpolicy.LoginAttempt.from_json({
        "login": login, "mech": mech, "remote": "192.0.2.2", "protocol": "imap",
        "tls": True, "success": success})
    with space.db.transaction() as s:
        authpolicy.report(s, attempt, space.clock.now, Settings())


def _smtp_audit(space: Space, login: str, mechanism: str, when: str) -> None:
    """What ``gateway.accept.auth.certificate_login`` / ``token_login`` record on success."""
    space.at(when)
    with space.db.transaction() as s:
        audit.record(s, actor=login, action="smtp.auth", target=login, outcome="ok",
                     request={"mechanism": mechanism, "peer": "192.0.2.3"})


@pytest.fixture
def space(db: Database, clock: Clock) -> Space:
    boxes = _directory(db)
    with db.transaction() as s:
        marie = accounts.find_account(s, boxes["marie"].address)
        assert marie is not None
        _, app_password = app_passwords.create(s, marie, "Thunderbird")
    return Space(db, clock, boxes, app_password)


def _history(space: Space) -> None:
    a = space.addr
    _close(space, "julie", "2026-11-20T10:00")
    _close(space, "jean", "2026-12-02T10:00")
    # Messages: M1 marie → paul, julie and a peer; M2 the practice software → marie;
    # M3 from a peer → marie; M5 sent at 23:00 in Paris on 30 November, delivered at 00:10 on
    # 1 December; M4 (the webmail for paul) sent and delivered on 1 December, Paris time;
    # a DSN to marie (the relay's own report) is not a message received.
    _submit(space, "marie@x", a("marie"), [(a("paul"), RecipientKind.LOCAL),
                                           (a("julie"), RecipientKind.LOCAL),
                                           ("dr.pair@pair.test", RecipientKind.PEER)],
            "2026-11-10T10:00")
    _deliver(space, "2026-11-10T10:01")
    _submit(space, a("lps"), a("lps"), [(a("marie"), RecipientKind.LOCAL)], "2026-11-12T10:00")
    _submit(space, "", "dr.pair@pair.test", [(a("marie"), RecipientKind.LOCAL)],
            "2026-11-15T10:00", Origin.RELAY)
    _submit(space, "", "", [(a("marie"), RecipientKind.LOCAL)], "2026-11-16T10:00", Origin.DSN)
    _deliver(space, "2026-11-16T10:01")
    _submit(space, "paul@x", a("paul"), [(a("marie"), RecipientKind.LOCAL)], "2026-11-30T22:00")
    _deliver(space, "2026-11-30T23:10")
    _submit(space, f"webmail@{DOMAIN}", a("paul"), [(a("marie"), RecipientKind.LOCAL)],
            "2026-11-30T23:30")
    _deliver(space, "2026-11-30T23:31")
    # Web: card, codes (one at 00:30 on 1 November in Paris, one at 00:30 on 1 December),
    # Pro Santé Connect; a password alone is not a log-in, a wrong code is not either.
    _web(space, a("marie"), "card", "2026-11-03T08:00")
    _web(space, a("marie"), "email", "2026-10-31T23:30")
    _web(space, a("marie"), "email", "2026-11-04T08:00")
    _web(space, a("paul"), "sms", "2026-11-05T08:00")
    _web(space, a("paul"), "psc", "2026-11-06T08:00")
    _web(space, a("paul"), "totp", "2026-11-30T23:30")
    _web(space, a("paul"), "", "2026-11-07T08:00", action="login.password")
    _web(space, a("paul"), "", "2026-11-07T08:01", action="login.code", outcome="wrong")
    # IMAP through Dovecot's policy reports (a refused password is not a connection).
    _imap(space, a("marie"), "PLAIN", "2026-11-07T09:00")
    _imap(space, a("marie"), "PLAIN", "2026-11-07T09:01", success=False)
    _imap(space, a("lps"), "EXTERNAL", "2026-11-08T09:00")
    _imap(space, a("paul"), "EXTERNAL", "2026-11-08T09:30")
    _imap(space, a("paul"), "XOAUTH2", "2026-11-09T09:00")
    # SMTP: the gateway's real password log-in (an application password; the practice
    # software's own password; the webmail acting for marie, not a user connection).
    space.at("2026-11-11T09:00")
    gateway_auth.password_login(space.db, a("marie"), space.app_password)
    gateway_auth.password_login(space.db, a("lps"), PASSWORD)
    gateway_auth.password_login(space.db, f"webmail@{DOMAIN}", PASSWORD, a("marie"))
    _smtp_audit(space, a("lps"), "EXTERNAL", "2026-11-11T09:05")
    _smtp_audit(space, a("paul"), "OAUTHBEARER", "2026-11-11T09:10")


def _rows(found: Indicators) -> dict[str, list[tuple[object, ...]]]:
    return {family: rows[1:] for family, rows in tables(found).items()}


def test_month_totals_are_exact(space: Space) -> None:
    _history(space)
    with space.db.read() as s:
        nov = _rows(compute(s, NOV, "op-test"))
        dec = _rows(compute(s, DEC, "op-test"))
    head = ("op-test", "2026-11")
    assert nov["bal"] == [(*head, "PER", "personnelle", 3, 1, 1),  # marie, paul, jean
                          (*head, "ORG", "organisationnelle", 0, 0, 0),
                          (*head, "APP", "applicative", 1, 0, 0)]
    assert nov["messages"] == [(*head, "PER", "personnelle", 2, 1, 4, 1),
                               (*head, "ORG", "organisationnelle", 0, 0, 0, 0),
                               (*head, "APP", "applicative", 1, 0, 0, 0)]
    assert nov["connexions"] == [
        (*head, "WEB", "CPS", "carte CPS (certificat)", 1, 1),
        (*head, "WEB", "MDP_OTP", "mot de passe + code à usage unique", 3, 2),
        (*head, "WEB", "PSC", "Pro Santé Connect (jeton)", 1, 1),
        (*head, "IMAP", "CPS", "carte CPS (certificat)", 1, 1),
        (*head, "IMAP", "CERT_APP", "certificat applicatif", 1, 1),
        (*head, "IMAP", "MDP_APP", "mot de passe d'application", 1, 1),
        (*head, "IMAP", "PSC", "Pro Santé Connect (jeton)", 1, 1),
        (*head, "SMTP", "CPS", "carte CPS (certificat)", 0, 0),
        (*head, "SMTP", "CERT_APP", "certificat applicatif", 1, 1),
        (*head, "SMTP", "MDP_APP", "mot de passe d'application", 1, 1),
        (*head, "SMTP", "MDP", "mot de passe du compte", 1, 1),
        (*head, "SMTP", "PSC", "Pro Santé Connect (jeton)", 1, 1)]
    head = ("op-test", "2026-12")
    assert dec["bal"] == [(*head, "PER", "personnelle", 2, 0, 1),  # jean closed on the 2nd
                          (*head, "ORG", "organisationnelle", 1, 1, 0),
                          (*head, "APP", "applicative", 1, 0, 0)]
    assert dec["messages"][0] == (*head, "PER", "personnelle", 1, 0, 2, 0)  # M4; M4 + M5
    web = {(r[2], r[3]): r[5] for r in dec["connexions"]}
    assert web[("WEB", "MDP_OTP")] == 1 and sum(web.values()) == 1


def test_paris_month_boundaries() -> None:
    # Winter (UTC+1): 23:30 UTC on the last day is already the next month in Paris.
    assert NOV.start == utc("2026-10-31T23:00") and NOV.end == utc("2026-11-30T23:00")
    assert Month.of(utc("2026-11-30T23:30")) == DEC
    # Summer (UTC+2): July starts at 22:00 UTC on 30 June.
    assert Month(2026, 7).start == utc("2026-06-30T22:00")
    assert Month(2026, 12).next() == Month(2027, 1) and Month(2027, 1).previous() == DEC
    for bad in ("2026-13", "2026-00", "26-11", "2026/11", "novembre", "2026-1", " "):
        with pytest.raises(IndicatorError):
            Month.parse(bad)


def test_empty_month(db: Database) -> None:
    with db.read() as s:
        found = compute(s, NOV, DOMAIN)
    rows = _rows(found)
    assert all(r[4:] == (0, 0, 0) for r in rows["bal"])
    assert all(r[4:] == (0, 0, 0, 0) for r in rows["messages"])
    assert len(rows["connexions"]) == 12 and all(r[5:] == (0, 0) for r in rows["connexions"])
    lines = summary(found)
    assert lines[0].startswith("Indicateurs de novembre 2026 — opérateur mss.test")
    assert "Messages envoyés : 0, dont 0 vers d'autres opérateurs" in lines
    assert "Pro Santé Connect (jeton) : 0" in lines[-1]


# ------------------------------------------------------------------ the command
@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    database = Database(f"sqlite:///{data / 'mss.db'}")
    database.create_all()
    clock = Clock()
    monkeypatch.setattr("core.audit.utcnow", clock)
    monkeypatch.setattr("spool.queue.utcnow", clock)
    space = Space(database, clock, _directory(database), "")
    _web(space, space.addr("marie"), "card", "2026-11-03T08:00")
    _web(space, space.addr("paul"), "sms", "2026-11-30T23:30")  # December in Paris
    _submit(space, "marie@x", space.addr("marie"), [(space.addr("paul"), RecipientKind.LOCAL)],
            "2026-11-10T10:00")
    _deliver(space, "2026-11-10T10:01")
    database.dispose()
    yield data


def _csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    return list(csv.reader(raw.decode("utf-8").splitlines(), delimiter=";"))


def test_command_writes_one_file_per_family(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "envoi"
    result = mss(data_dir, "indicators", "--month", "2026-11", "--out", str(out),
                 "--operator-id", "OP-0042")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"indicateurs_OP-0042_2026-11_{f}.csv"
                     for f in ("bal", "connexions", "messages")]
    bal = _csv(out / names[0])
    assert bal[0][:5] == ["id_operateur", "mois", "type_bal", "libelle_type_bal",
                          "nb_bal_ouvertes_fin_de_mois"]
    assert bal[1] == ["OP-0042", "2026-11", "PER", "personnelle", "4", "1", "0"]
    connections = {(r[2], r[3]): r[5:] for r in _csv(out / names[1])[1:]}
    assert connections[("WEB", "CPS")] == ["1", "1"]
    assert connections[("WEB", "MDP_OTP")] == ["0", "0"]  # paul's was in December
    messages = _csv(out / names[2])
    assert messages[1] == ["OP-0042", "2026-11", "PER", "personnelle", "1", "0", "1", "0"]
    assert "Messages envoyés : 1, dont 0 vers d'autres opérateurs" in result.stdout
    assert str(out / names[0]) in result.stdout


def test_dry_run_prints_totals_and_writes_nothing(data_dir: Path, tmp_path: Path) -> None:
    result = mss(data_dir, "indicators", "--month", "2026-12", "--dry-run", "--out",
                 str(tmp_path / "rien"))
    assert result.returncode == 0, result.stderr
    assert "Indicateurs de décembre 2026 — opérateur mss.test" in result.stdout
    assert "BAL ouvertes en fin de mois : 6 (personnelles : 4, organisationnelles : 1, " \
           "applicatives : 1)" in result.stdout
    assert "Connexions : 1 (webmail : 1, IMAP : 0, SMTP : 0)" in result.stdout
    assert "Aucun fichier écrit (--dry-run)." in result.stdout
    assert not (tmp_path / "rien").exists()


@pytest.mark.parametrize(("args", "text"), [
    (["--month", "2026-13"], "mois invalide « 2026-13 » : attendu AAAA-MM"),
    (["--month", "novembre"], "mois invalide « novembre »"),
    (["--month", "2999-01"], "le mois 2999-01 n'a pas commencé"),
    (["--month", "2026-11", "--operator-id", "../../etc"], "identifiant d'opérateur invalide"),
])
def test_bad_arguments_are_clean_errors(data_dir: Path, args: list[str], text: str) -> None:
    assert_clean_error(mss(data_dir, "indicators", *args), text)
