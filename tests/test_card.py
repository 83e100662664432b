"""CPS cards on real SoftHSM2 tokens (certs/card.py), certified by the real CA (certs/pki.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11

from certs import card as card_module
from certs.card import CardReader, SoftHsmCards, verify_challenge
from certs.errors import CardError, CardNotFound, PinLocked, WrongPin
from certs.pki import CardIdentity, Pki
from certs.validation import TrustStore, validate
from core.db import Database

PIN = "1234"
SO_PIN = "87654321"
RPPS = CardIdentity("810001234567", "Jeanne", "Martin", "Médecin", "jeanne.martin@mss.test")
ADELI = CardIdentity("0751234567", "Paul", "Durand", "Infirmier")


@dataclass
class Deck:
    """A cards_dir with two provisioned cards, and the CA that certified them."""

    cards: SoftHsmCards
    pki: Pki
    db: Database
    rpps_label: str
    adeli_label: str


@pytest.fixture(scope="module")
def deck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deck]:
    base = tmp_path_factory.mktemp("deck")
    db = Database(f"sqlite:///{base / 'mss.db'}")
    db.create_all()
    pki = Pki.create(base / "pki", "Opérateur de test", "mss.test")
    cards = SoftHsmCards(base / "cards")
    with db.transaction() as session:
        rpps = cards.provision(pki, session, RPPS, pin=PIN, so_pin=SO_PIN)
        adeli = cards.provision(pki, session, ADELI, pin=PIN)
    yield Deck(cards, pki, db, rpps.label, adeli.label)
    db.dispose()


def _new_cards(tmp_path: Path, sqlite_db: Database, identity: CardIdentity,
               name: str) -> tuple[SoftHsmCards, Pki, str]:
    pki = Pki.create(tmp_path / f"pki-{name}", "Opérateur de test", "mss.test")
    cards = SoftHsmCards(tmp_path / name)
    with sqlite_db.transaction() as session:
        label = cards.provision(pki, session, identity, pin=PIN).label
    return cards, pki, label


def _chains_to(cert: x509.Certificate, pki: Pki) -> None:
    chain = validate(cert, TrustStore.from_pki_dir(pki.pki_dir), purpose="client")
    assert chain[0] == cert and chain[-1] == pki.root


# ---------------------------------------------------------------------- provisioning, reading
def test_soft_hsm_cards_is_a_card_reader(deck: Deck) -> None:
    reader: CardReader = deck.cards
    assert sorted(reader.list_cards()) == sorted([deck.rpps_label, deck.adeli_label])


@pytest.mark.parametrize("identity", [RPPS, ADELI], ids=["rpps", "adeli"])
def test_read_identity_returns_the_holder_and_a_ca_certificate(
    deck: Deck, identity: CardIdentity
) -> None:
    label = f"CPS-{identity.national_id}"
    info = deck.cards.read_identity(label, PIN)
    assert info.label == label
    assert info.identity.national_id == identity.national_id
    assert (info.identity.first_name, info.identity.last_name) == (
        identity.first_name, identity.last_name)
    assert info.serial and info.certificate == deck.cards.certificate(label)
    _chains_to(info.certificate, deck.pki)
    public = info.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048


def test_challenge_signed_on_the_card_verifies_with_its_certificate(deck: Deck) -> None:
    challenge = os.urandom(32)
    signature = deck.cards.sign_challenge(deck.rpps_label, PIN, challenge)
    cert = deck.cards.certificate(deck.rpps_label)
    assert verify_challenge(cert, challenge, signature)
    assert not verify_challenge(cert, challenge + b"x", signature)
    assert not verify_challenge(deck.cards.certificate(deck.adeli_label), challenge, signature)
    assert not verify_challenge(cert, challenge, signature[:-1] + bytes([signature[-1] ^ 1]))


def test_private_key_is_generated_on_the_card_and_never_leaves_it(deck: Deck) -> None:
    cert = deck.cards.certificate(deck.rpps_label)
    with deck.cards._session(deck.rpps_label, PIN) as session:
        key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA)
        cert_obj = next(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))
        flags = {a: key[a] for a in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE,
                                     Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE,
                                     Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL)}
        for secret in (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.VALUE):
            with pytest.raises((p11.AttributeSensitive, p11.AttributeTypeInvalid)):
                key[secret]
        modulus = int.from_bytes(key[Attribute.MODULUS], "big")
        key_id, cert_id = key[Attribute.ID], cert_obj[Attribute.ID]
    assert flags == {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                     Attribute.EXTRACTABLE: False, Attribute.ALWAYS_SENSITIVE: True,
                     Attribute.NEVER_EXTRACTABLE: True, Attribute.LOCAL: True}
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.public_numbers().n == modulus
    assert key_id == cert_id == x509.SubjectKeyIdentifier.from_public_key(public).digest


def test_private_objects_are_hidden_without_the_pin(deck: Deck) -> None:
    with deck.cards._session(deck.rpps_label) as session:
        assert list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})) == []
        assert len(list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))) == 1


# ---------------------------------------------------------------------- errors
def test_wrong_pin_is_refused_without_echoing_it(deck: Deck) -> None:
    for bad in ("9876", "12", "x" * 300):
        with pytest.raises(WrongPin, match="^Code PIN incorrect$") as caught:
            deck.cards.read_identity(deck.rpps_label, bad)
        assert bad not in str(caught.value) and bad not in repr(caught.value.__cause__)
    with pytest.raises(WrongPin):
        deck.cards.sign_challenge(deck.rpps_label, "0000", b"challenge")


def test_failed_login_leaves_no_session_behind(deck: Deck) -> None:
    """python-pkcs11 0.10 leaks the session when C_Login fails; a leaked read-only session
    would make SoftHSM2 refuse the SO login with CKR_SESSION_READ_ONLY_EXISTS."""
    with pytest.raises(WrongPin):
        deck.cards.read_identity(deck.rpps_label, "9876")
    with deck.cards._library() as lib:
        token = lib.get_token(token_label=deck.rpps_label)
        with token.open(rw=True, so_pin=SO_PIN):
            pass


def test_softhsm2_does_not_lock_the_pin(deck: Deck) -> None:
    """Real CPS cards lock after 3 wrong PINs; SoftHSM2 never does (CKR_PIN_INCORRECT forever),
    so PinLocked cannot be produced by a real token here: see the mapping test below."""
    for _ in range(6):
        with pytest.raises(WrongPin):
            deck.cards.read_identity(deck.adeli_label, "0000")
    assert deck.cards.read_identity(deck.adeli_label, PIN).identity.national_id == "0751234567"


@pytest.mark.parametrize(("raised", "expected", "text"), [
    (p11.PinLocked(), PinLocked, "Carte bloquée : trop de codes PIN erronés"),
    (p11.PinIncorrect(), WrongPin, "Code PIN incorrect"),
    (p11.PinLenRange(), WrongPin, "Code PIN incorrect"),
    (p11.TokenNotPresent(), CardNotFound, "Carte introuvable : CPS-1"),
    (p11.DeviceError(), CardError, "Erreur de la carte CPS-1 (DeviceError)"),
])
def test_pkcs11_errors_map_to_card_errors(
    raised: p11.PKCS11Error, expected: type[CardError], text: str
) -> None:
    error = card_module._card_error(raised, "CPS-1")
    assert type(error) is expected and str(error) == text


def test_unknown_label_is_card_not_found(deck: Deck) -> None:
    with pytest.raises(CardNotFound, match="^Carte introuvable : CPS-899999999999$"):
        deck.cards.read_identity("CPS-899999999999", PIN)
    with pytest.raises(CardNotFound):
        deck.cards.certificate("CPS-899999999999")
    with pytest.raises(CardNotFound):
        deck.cards.sign_challenge("CPS-899999999999", PIN, b"challenge")


def test_a_label_is_provisioned_once(deck: Deck) -> None:
    with deck.db.transaction() as session, pytest.raises(CardError, match="déjà"):
        deck.cards.provision(deck.pki, session, RPPS, pin="4321")
    assert deck.cards.read_identity(deck.rpps_label, PIN).identity.national_id == "810001234567"


def test_failed_provisioning_leaves_no_card(tmp_path: Path, sqlite_db: Database) -> None:
    pki = Pki.create(tmp_path / "pki", "Opérateur de test", "mss.test")
    cards = SoftHsmCards(tmp_path / "cards")
    bad = CardIdentity("81234", "Jeanne", "Martin", "Médecin")  # the CA refuses this national id
    with sqlite_db.transaction() as session, pytest.raises(ValueError, match="identifiant"):
        cards.provision(pki, session, bad, pin=PIN)
    with sqlite_db.transaction() as session, pytest.raises(CardError, match="4 à 255"):
        cards.provision(pki, session, ADELI, pin="12")
    assert cards.list_cards() == []
    assert list((tmp_path / "cards" / "tokens").iterdir()) == []


# ---------------------------------------------------------------------- library life cycle
def test_two_cards_dirs_in_one_process(
    tmp_path: Path, sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    unrelated = str(tmp_path / "somebody-elses-softhsm2.conf")
    monkeypatch.setenv("SOFTHSM2_CONF", unrelated)
    first, pki_1, label_1 = _new_cards(tmp_path, sqlite_db, RPPS, "first")
    second, pki_2, label_2 = _new_cards(tmp_path, sqlite_db, ADELI, "second")
    assert (first.list_cards(), second.list_cards()) == ([label_1], [label_2])
    with pytest.raises(CardNotFound):
        first.certificate(label_2)

    def round_trip(cards: SoftHsmCards, label: str) -> bool:
        challenge = os.urandom(16)
        signature = cards.sign_challenge(label, PIN, challenge)
        return verify_challenge(cards.certificate(label), challenge, signature)

    with ThreadPoolExecutor(4) as pool:  # interleaved: each call must re-point the library
        jobs = [pool.submit(round_trip, *pair)
                for pair in [(first, label_1), (second, label_2)] * 6]
        assert all(job.result() for job in jobs)
    _chains_to(first.certificate(label_1), pki_1)
    _chains_to(second.certificate(label_2), pki_2)
    assert os.environ["SOFTHSM2_CONF"] == unrelated


def test_token_created_by_another_process_is_seen(tmp_path: Path) -> None:
    cards = SoftHsmCards(tmp_path / "cards")
    assert cards.list_cards() == []  # library initialised before the other process writes
    env = {**os.environ, "SOFTHSM2_CONF": str(cards.conf_path)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "EXTERNE",
                    "--so-pin", SO_PIN, "--pin", PIN], env=env, check=True, capture_output=True)
    with pytest.raises(CardError, match="ne porte pas de certificat"):
        cards.certificate("EXTERNE")  # found after one re-initialisation, but empty
    assert cards.list_cards() == ["EXTERNE"]


def test_forked_child_uses_the_cards(deck: Deck) -> None:
    deck.cards.list_cards()  # initialised in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: never return into pytest
        status = 1
        try:
            challenge = b"dans l'enfant"
            signature = deck.cards.sign_challenge(deck.rpps_label, PIN, challenge)
            cert = deck.cards.certificate(deck.rpps_label)
            status = 0 if verify_challenge(cert, challenge, signature) else 2
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0
    assert deck.cards.certificate(deck.rpps_label)


def test_softhsm2_util_sees_the_cards(deck: Deck) -> None:
    env = {**os.environ, "SOFTHSM2_CONF": str(deck.cards.conf_path)}
    shown = subprocess.run(["softhsm2-util", "--show-slots"], env=env, check=True,
                           capture_output=True, text=True).stdout
    info = deck.cards.read_identity(deck.rpps_label, PIN)
    assert deck.rpps_label in shown and deck.adeli_label in shown
    assert info.serial in shown
