"""The operator's account pages and the refusal of a registration with its reason (issue #15
item 4), through the real webmail (Flask test client on the mail-store trust space): each
action changes the account and is audited; attack tests: a professional, an anonymous
visitor, an operator who only typed the password, an operator session opened without TOTP, a
forged account id, a GET that would change something, a missing CSRF token."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta

from sqlalchemy import select, update

from core.audit import AuditRecord
from core.db import utcnow
from tests.webmail_helpers import OPERATOR, PASSWORD, Web, login, login_operator, post, token
from trust_space.models import (
    Account,
    AccountState,
    Mailbox,
    MailboxState,
    OtpChannel,
    Professional,
)

pytest_plugins = ["tests.webmail_fixtures"]
EMMA = "emma.garnier@mss.test"
LEO = "leo.faure@mss.test"


def _account(web: Web, login_: str) -> Account:
    with web.space.db.transaction() as session:
        found = session.scalar(select(Account).where(Account.login == login_))
        assert found is not None
        session.expunge(found)
        return found


def _audit(web: Web, action: str, target: str) -> list[AuditRecord]:
    with web.space.db.transaction() as session:
        rows = session.scalars(select(AuditRecord).where(
            AuditRecord.action == action, AuditRecord.target == target)
            .order_by(AuditRecord.id)).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def _operator(web: Web):  # type: ignore[no-untyped-def]
    client = web.client()
    login_operator(web, client)
    return client


def _base(web: Web, login_: str) -> str:
    return f"/operateur/comptes/{_account(web, login_).id}"


def test_search_by_address_name_and_number(web: Web) -> None:
    op = _operator(web)
    for q in ("emma.garnier@", "Garnier Emma", "garnier", "10000000008", "810000000008"):
        page = op.get(f"/operateur/comptes?q={q}").get_data(as_text=True)
        assert EMMA in page and "Emma Garnier" in page, q
    nothing = op.get("/operateur/comptes?q=Zzzyx").get_data(as_text=True)
    assert "Aucun compte ne correspond à « Zzzyx »" in nothing
    escaped = op.get("/operateur/comptes?q=<script>").get_data(as_text=True)
    assert "<script>" not in escaped.split("</header>", 1)[1]
    wildcard = op.get("/operateur/comptes?q=%25").get_data(as_text=True)
    assert "Aucun compte ne correspond à « % »" in wildcard  # a letter, not a LIKE wildcard


def test_unlock_suspend_reactivate_are_audited(web: Web) -> None:
    op = _operator(web)
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == EMMA).values(
            failed_attempts=5, locked_until=utcnow() + timedelta(minutes=15)))
    base = _base(web, EMMA)
    assert "bloqué jusqu'au" in op.get(base).get_data(as_text=True)
    assert post(op, base, {}, action=f"{base}/debloquer").status_code == 302
    account = _account(web, EMMA)
    assert account.locked_until is None and account.failed_attempts == 0
    assert "débloqué" in op.get(base).get_data(as_text=True)
    [unlock] = _audit(web, "account.unlock", EMMA)
    assert unlock.actor == OPERATOR and unlock.outcome == "ok"

    confirm = op.get(f"{base}/suspendre").get_data(as_text=True)
    assert "Suspendre le compte ?" in confirm and "Plus aucune connexion" in confirm
    assert _account(web, EMMA).state is AccountState.ACTIVE  # the GET changed nothing
    assert post(op, f"{base}/suspendre", {"motif": "Départ\r\nen retraite"}).status_code == 302
    assert _account(web, EMMA).state is AccountState.SUSPENDED
    [suspend] = _audit(web, "account.suspend", EMMA)
    assert '"motif": "Départ\\nen retraite"' in suspend.request
    refused = post(web.client(), "/connexion", {"identifier": EMMA, "password": PASSWORD})
    assert refused.status_code == 401 and "suspendu" in refused.get_data(as_text=True)
    again = post(op, base, {}, action=f"{base}/suspendre")
    assert "déjà suspendu" in op.get(base).get_data(as_text=True) and again.status_code == 302
    assert _audit(web, "account.suspend", EMMA)[-1].outcome == "account_action_refused"

    assert post(op, base, {}, action=f"{base}/reactiver").status_code == 302
    assert _account(web, EMMA).state is AccountState.ACTIVE
    assert _audit(web, "account.reactivate", EMMA)[-1].outcome == "ok"


def test_suspension_ends_the_holders_session(web: Web) -> None:
    emma = web.client()
    login(web, emma, "emma")
    assert emma.get("/compte").status_code == 200
    op = _operator(web)
    base = _base(web, EMMA)
    assert post(op, f"{base}/suspendre", {}).status_code == 302
    assert emma.get("/compte").status_code == 302  # logged out at once
    post(op, base, {}, action=f"{base}/reactiver")


def test_reset_code_channel_tells_the_holder(web: Web) -> None:
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == LEO).values(
            otp_channel=OtpChannel.TOTP, totp_secret="sealed-seed"))
    op = _operator(web)
    base = _base(web, LEO)
    confirm = op.get(f"{base}/reinitialiser-code").get_data(as_text=True)
    assert "Réinitialiser le code de connexion ?" in confirm
    assert post(op, f"{base}/reinitialiser-code", {}).status_code == 302
    account = _account(web, LEO)
    assert account.otp_channel is OtpChannel.EMAIL and account.totp_secret is None
    assert _audit(web, "account.otp_reset", LEO)[-1].outcome == "ok"
    to, raw = web.mailer.sent[-1]
    assert to == "leo@exemple.fr"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert "réinitialisé" in str(message["Subject"])


def test_close_personal_mailbox_is_final(web: Web) -> None:
    op = _operator(web)
    base = _base(web, "nina.morel@mss.test")
    with web.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == "nina.morel@mss.test"))
        box_id = box.id  # type: ignore[union-attr]
    page = op.get(f"{base}/boites/{box_id}/fermer").get_data(as_text=True)
    assert "Fermer la boîte ?" in page and "définitive" in page
    assert post(op, f"{base}/boites/{box_id}/fermer", {"motif": "Cessation d'activité"}
                ).status_code == 302
    with web.space.db.transaction() as session:
        assert session.get(Mailbox, box_id).state is MailboxState.CLOSED  # type: ignore[union-attr]
    assert _account(web, "nina.morel@mss.test").state is AccountState.SUSPENDED
    [closed] = _audit(web, "mailbox.close", "nina.morel@mss.test")
    assert closed.outcome == "ok" and f'"mailbox_id": {box_id}' in closed.request
    assert op.get(f"{base}/boites/{box_id}/fermer").status_code == 404  # already closed
    assert post(op, base, {}, action=f"{base}/reactiver").status_code == 302
    assert "fermée" in op.get(base).get_data(as_text=True)
    assert _account(web, "nina.morel@mss.test").state is AccountState.SUSPENDED


def test_attack_another_accounts_mailbox_or_an_operator(web: Web) -> None:
    op = _operator(web)
    with web.space.db.transaction() as session:
        marie_box = session.scalar(select(Mailbox.id).where(
            Mailbox.address == "marie.martin@mss.test"))
        lps = session.scalar(select(Account.id).where(Account.login.like("%lps%")))
    base = _base(web, "paul.durand@mss.test")
    forged = post(op, base, {}, action=f"{base}/boites/{marie_box}/fermer")
    assert forged.status_code == 302
    with web.space.db.transaction() as session:
        assert session.get(Mailbox, marie_box).state is MailboxState.PUBLISHED  # type: ignore[union-attr]
    assert _audit(web, "mailbox.close", "paul.durand@mss.test")[-1].outcome == \
        "account_action_refused"
    own = _base(web, OPERATOR)
    for action in ("suspendre", "reinitialiser-code"):
        assert post(op, own, {}, action=f"{own}/{action}").status_code == 302
    operator = _account(web, OPERATOR)
    assert operator.state is AccountState.ACTIVE and operator.otp_channel is OtpChannel.TOTP
    assert op.get("/operateur/comptes/999999").status_code == 404
    if lps is not None:  # an applicative account is not managed here
        assert op.get(f"/operateur/comptes/{lps}").status_code == 404
    assert op.get(f"{base}/effacer").status_code == 404
    assert op.get(f"{base}/reactiver").status_code == 302  # a GET never acts
    assert op.post(f"{base}/suspendre").status_code == 400  # no CSRF token
    assert _account(web, "paul.durand@mss.test").state is AccountState.ACTIVE


ACTIONS = ["debloquer", "suspendre", "reactiver", "reinitialiser-code"]


def test_attack_non_operators_are_refused(web: Web) -> None:
    base = _base(web, EMMA)
    audited = len(_audit(web, "account.suspend", EMMA))
    marie = web.client()
    login(web, marie)
    form_token = token(marie, "/compte")
    assert marie.get("/operateur/comptes?q=emma").status_code == 403
    assert marie.get(base).status_code == 403
    for action in ACTIONS:
        answer = marie.post(f"{base}/{action}", data={"csrf_token": form_token})
        assert answer.status_code == 403, action
    anonymous = web.client()
    assert anonymous.get("/operateur/comptes").status_code == 302
    assert anonymous.post(f"{base}/suspendre").status_code in (302, 400)
    assert _account(web, EMMA).state is AccountState.ACTIVE
    assert len(_audit(web, "account.suspend", EMMA)) == audited


def test_attack_operator_without_the_totp_step(web: Web) -> None:
    base = _base(web, EMMA)
    half = web.client()  # the right password, but no TOTP code yet
    assert post(half, "/connexion", {"identifier": OPERATOR, "password": PASSWORD}
                ).status_code == 302
    for path in ("/operateur/comptes?q=emma", base, "/operateur/inscriptions",
                 "/operateur/journal"):
        answer = half.get(path)
        assert answer.status_code == 302 and "/connexion" in answer.headers["Location"], path
    csrf = token(half, "/connexion/code")
    assert half.post(f"{base}/suspendre", data={"csrf_token": csrf}).status_code == 302
    assert _account(web, EMMA).state is AccountState.ACTIVE


def test_attack_operator_session_opened_without_totp(web: Web) -> None:
    """An operator account whose session was not opened with TOTP (say, a code by e-mail
    after its channel was changed in the database) is refused on every operator page."""
    op = _operator(web)
    with op.session_transaction() as sess:
        sess["login_method"] = "email"
    for path in ("/operateur/comptes", _base(web, EMMA), "/operateur/inscriptions",
                 "/operateur/file"):
        answer = op.get(path)
        assert answer.status_code == 403 and "application d" in answer.get_data(as_text=True)


# ------------------------------------------------------------------ refusal of a registration
def _pending_registration(web: Web, first: str, number: str) -> str:
    """A registration through the real wizard (no card): the pending personal address."""
    from tests.test_webmail_pages import IDENTITY

    client = web.client()
    post(client, "/inscription", {"card": "no"})
    usual = f"{first.lower()}@exemple.fr"
    ident = {**IDENTITY, "email": usual, "email_confirm": usual, "first_name": first,
             "last_name": "Lenoir", "id_number": number}
    assert post(client, "/inscription/identite", ident).status_code == 302
    code = web.mailer.last_code(usual)
    assert post(client, "/inscription/verification", {"code": code}).status_code == 302
    post(client, "/inscription/identifiant", {"password": "Nouveau-Pass1",
                                              "confirm": "Nouveau-Pass1"})
    assert post(client, "/inscription/adresse", {"cgu": "y"}).status_code == 302
    return f"{first.lower()}.lenoir@mss.test"


def test_refusal_asks_reason_and_confirmation_then_mails_them(web: Web) -> None:
    address = _pending_registration(web, "Hugues", "10000000099")
    op = _operator(web)
    page = op.get("/operateur/inscriptions").get_data(as_text=True)
    assert f"/operateur/inscriptions/refuser?adresse={address}" in page
    # The old one-click refusal only leads to the confirmation page.
    direct = post(op, "/operateur/inscriptions", {"address": address, "decision": "refuse"},
                  action="/operateur/inscriptions/decision")
    assert direct.status_code == 302 and "/refuser" in direct.headers["Location"]
    confirm_path = f"/operateur/inscriptions/refuser?adresse={address}"
    confirm = op.get(confirm_path).get_data(as_text=True)
    assert "Refuser l’inscription ?" in confirm and "hugues@exemple.fr" in confirm
    assert "support@mss.test" in confirm
    empty = post(op, confirm_path, {"adresse": address, "motif": "  \r\n "},
                 action="/operateur/inscriptions/refuser")
    assert empty.status_code == 400 and "Indiquez le motif" in empty.get_data(as_text=True)
    _assert_pending(web, address)
    sent = len(web.mailer.sent)
    reason = "Le numéro RPPS indiqué\r\nne correspond pas au nom saisi.\x1b[31m"
    done = post(op, confirm_path, {"adresse": address, "motif": reason},
                action="/operateur/inscriptions/refuser")
    assert done.status_code == 302
    with web.space.db.transaction() as session:
        assert session.scalar(select(Mailbox.state).where(Mailbox.address == address)) \
            is MailboxState.CLOSED
    [refusal] = _audit(web, "registration.refuse", address)
    assert refusal.actor == OPERATOR and "ne correspond pas" in refusal.request
    to, raw = web.mailer.sent[sent]
    assert to == "hugues@exemple.fr"
    body = email.message_from_bytes(raw).get_payload(decode=True).decode().replace("\r\n", "\n")
    assert "Le numéro RPPS indiqué\n    ne correspond pas au nom saisi." in body
    assert "\x1b" not in body and "support@mss.test" in body
    assert "inscription" in op.get("/operateur/inscriptions").get_data(as_text=True)


def _assert_pending(web: Web, address: str) -> None:
    with web.space.db.transaction() as session:
        assert session.scalar(select(Mailbox.state).where(Mailbox.address == address)) \
            is MailboxState.PENDING_VALIDATION


def test_refusal_mail_gives_the_configured_contact(web: Web) -> None:
    from webmail.operator.decision import refused_text

    settings = web.space.settings.replace(operator_contact="Support MSS, 05 59 00 00 00")
    assert settings.effective_operator_contact == "Support MSS, 05 59 00 00 00"
    _subject, text = refused_text("Motif", settings.effective_operator_contact)
    assert re.search(r"contactez votre opérateur : Support MSS, 05 59 00 00 00", text)


def test_attack_refusal_by_a_professional_or_unknown(web: Web) -> None:
    address = _pending_registration(web, "Anne", "10000000098")
    marie = web.client()
    login(web, marie)
    answer = marie.post("/operateur/inscriptions/refuser", data={
        "csrf_token": token(marie, "/compte"), "adresse": address, "motif": "Pirate pirate"})
    assert answer.status_code == 403
    _assert_pending(web, address)
    op = _operator(web)
    assert op.get("/operateur/inscriptions/refuser?adresse=personne@mss.test"
                  ).status_code == 404


def test_reset_confirmation_warns_without_usual_address(web: Web) -> None:
    with web.space.db.transaction() as session:
        session.execute(update(Professional).where(Professional.rpps == "10000000006")
                        .values(usual_email=""))
    op = _operator(web)
    page = op.get(f"{_base(web, 'hugo.blanc@mss.test')}/reinitialiser-code").get_data(
        as_text=True)
    assert "ne pourra plus se connecter qu’avec sa carte CPS" in page
