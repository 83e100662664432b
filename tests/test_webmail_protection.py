""""Chiffrer" tells the truth (issue #15 item 5), through the real webmail, gateway and
Dovecot: before sending, the compose page says per recipient what protection each copy gets
(a colleague's never leaves the operator; a peer's is encrypted end to end when the directory
has its certificate, else sent over the trust space's mutual TLS); after sending, the Sent
copy's timeline says what was done and its badge no longer says "Reçu sans chiffrement"; a
colleague's message reads as internal."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import free_port
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, compose, text, wait_until
from trust_space.models import Mailbox, MailboxKind, MailboxState, TrustedDomain
from trust_space.models import Operator as PeerOperator

pytest_plugins = ["tests.webmail_mail_fixtures"]
PEER_DN = "CN=autre.test,O=Autre Operateur,C=FR"
WITH_CERT, WITHOUT_CERT = "dr.avec@autre.test", "dr.sans@autre.test"


def _cert_pem(mail: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mail)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def peer(mail_operator: Operator) -> None:
    """A whitelisted peer (its relay does not answer) with one mailbox that published a
    certificate and one that did not."""
    with mail_operator.space.db.transaction() as session:
        other = PeerOperator(name="Autre Operateur", certificate_dn=PEER_DN)
        session.add(TrustedDomain(domain="autre.test", operator=other, certificate_dn=PEER_DN,
                                  relay_host="127.0.0.1", relay_port=free_port()))
        session.flush()
        for mail, pem in ((WITH_CERT, _cert_pem(WITH_CERT)), (WITHOUT_CERT, None)):
            session.add(Mailbox(address=mail, kind=MailboxKind.PERSONAL, operator_id=other.id,
                                state=MailboxState.PUBLISHED, display_name=mail,
                                smime_cert_pem=pem))


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul")}


def _protections(client: FlaskClient, box: int, *addresses: str, encrypt: bool) -> dict:
    query = "&".join(f"a={a}" for a in addresses) + ("&chiffrer=1" if encrypt else "")
    answer = client.get(f"/courrier/{box}/protection?{query}")
    assert answer.status_code == 200
    return {p["address"]: p for p in answer.get_json()}


def test_each_recipient_is_told_what_protection_its_copy_gets(
        peer: None, boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    found = _protections(marie, boxes["marie"], address("paul"), WITH_CERT, WITHOUT_CERT,
                         "inconnu@ailleurs.example", encrypt=True)
    assert found[address("paul")]["code"] == "internal"
    assert "sans quitter ses serveurs" in found[address("paul")]["text"]
    assert found[WITH_CERT]["code"] == "end_to_end"
    assert "chiffré de bout en bout" in found[WITH_CERT]["text"]
    assert found[WITHOUT_CERT]["code"] == "trust_space_tls"
    assert "pas de certificat" in found[WITHOUT_CERT]["text"]
    assert found["inconnu@ailleurs.example"]["code"] == "refused"
    plain = _protections(marie, boxes["marie"], WITH_CERT, encrypt=False)
    assert plain[WITH_CERT]["code"] in ("trust_space_tls", "end_to_end")  # the policy decides
    page = html.unescape(text(marie.get(f"/courrier/ecrire?a={WITH_CERT}",
                                        follow_redirects=True)))
    assert "Protection par destinataire" in page and WITH_CERT in page


def test_a_mailbox_the_user_cannot_send_from_gets_nothing(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    """Another user's box id in the URL: refused like every mailbox route."""
    answer = as_user("marie").get(f"/courrier/{boxes['paul']}/protection?a={address('julie')}")
    assert answer.status_code in (403, 404)


def test_sent_copy_says_what_was_done_and_internal_mail_reads_as_internal(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marker = f"chiffrer-{uuid.uuid4().hex[:8]}"
    marie, paul = as_user("marie"), as_user("paul")
    answer = compose(marie, boxes["marie"], to=address("paul"), subject=marker,
                     body="Bonjour.", encrypt="y")
    assert answer.status_code == 302, text(answer)[:2000]
    mail_operator.wait_for(address("paul"), lambda raw: marker.encode() in raw)
    wait_until(lambda: marker in text(marie.get(f"/courrier/{boxes['marie']}?dossier=Sent")))
    sent = text(marie.get(f"/courrier/{boxes['marie']}?dossier=Sent"))
    uid = re.search(rf'/message/(\d+)\?dossier=Sent"[^>]*>{marker}<', sent)
    assert uid is not None
    page = html.unescape(text(marie.get(
        f"/courrier/{boxes['marie']}/message/{uid.group(1)}?dossier=Sent")))
    assert "remis chez votre opérateur sans quitter ses serveurs" in page
    assert "Reçu sans chiffrement" not in page
    inbox = text(paul.get(f"/courrier/{boxes['paul']}?dossier=INBOX"))
    uid = re.search(rf'/message/(\d+)\?dossier=INBOX"[^>]*>{marker}<', inbox)
    assert uid is not None
    read = html.unescape(text(paul.get(
        f"/courrier/{boxes['paul']}/message/{uid.group(1)}?dossier=INBOX")))
    assert "Message interne à votre opérateur" in read and "Reçu sans chiffrement" not in read


def test_mon_compte_tells_when_notices_keep_failing(
        mail_operator: Operator, as_user: Callable[[str], FlaskClient]) -> None:
    """Issue #15 item 6: a notice that cannot be sent was only in the metrics. After three
    failures in a row (the gateway's timeline rows for the usual address), Mon compte says so;
    a notice that goes out again clears it."""
    from sqlalchemy import select

    from spool import queue as q
    from trust_space.models import Professional

    usual = "marie.notices@exemple.fr"
    marie = as_user("marie")  # logged in first: the login code goes to the usual address
    with mail_operator.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == address("marie")))
        assert box is not None
        box.notify_usual_email = True
        pro = session.get(Professional, box.professional_id)
        assert pro is not None
        saved, pro.usual_email = pro.usual_email, usual
        for n in range(3):
            q.event(session, f"Q{n}", f"<n{n}@mss.test>", usual, "deferred",
                    "notify 451 4.4.1 Avis non transmis au relais smtp.exemple.fr:25")
    try:
        page = html.unescape(text(marie.get("/compte")))
        assert "Les avis de nouveau message ne parviennent pas" in page
        assert "3 échecs" in page and usual in page
        with mail_operator.space.db.transaction() as session:
            q.event(session, "Q9", "<n9@mss.test>", usual, "delivered", "notify 250")
        assert "ne parviennent pas" not in html.unescape(text(marie.get("/compte")))
    finally:
        with mail_operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == address("marie")))
            box.notify_usual_email = False  # type: ignore[union-attr]
            pro = session.get(Professional, box.professional_id)  # type: ignore[union-attr]
            pro.usual_email = saved  # type: ignore[union-attr]
