"""Password hashing, strength rules, authentication with lock-out, account look-up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from argon2.profiles import get_default_parameters
from sqlalchemy.orm import Session

from core.db import Database, utcnow
from trust_space import accounts
from trust_space.accounts import (
    authenticate_password,
    check_password_strength,
    create_account,
    create_professional_account,
    find_account,
    find_professional,
    hash_password,
    needs_rehash,
    verify_password,
)
from trust_space.errors import (
    AccountLocked,
    AccountSuspended,
    AuthenticationFailed,
    TrustSpaceError,
    UnknownProfessional,
    WeakPassword,
)
from trust_space.models import (
    AccountKind,
    AccountState,
    Mailbox,
    MailboxKind,
    Professional,
)

PASSWORD = "Secret-Passw0rd"
LOGIN = "marie.martin@mss.test"


@pytest.fixture
def fast_hasher(monkeypatch: pytest.MonkeyPatch) -> PasswordHasher:
    """Cheap argon2 parameters so lock-out tests stay fast; the real ones are tested apart."""
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    monkeypatch.setattr(accounts, "HASHER", hasher)
    return hasher


def test_real_parameters_hash_and_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = accounts.PRODUCTION_HASHER
    monkeypatch.setattr(accounts, "HASHER", hasher)  # the suite runs on cheaper ones
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 65536, 1)
    hashed = hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
    assert verify_password(hashed, PASSWORD)
    assert not needs_rehash(hashed)
    assert get_default_parameters().parallelism != 1  # why we do not use the defaults


def test_verify_mismatch_and_garbage(fast_hasher: PasswordHasher) -> None:
    hashed = hash_password(PASSWORD)
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not-a-hash", PASSWORD)
    assert not needs_rehash(hashed)
    assert needs_rehash(PasswordHasher(time_cost=2, memory_cost=64, parallelism=1).hash("x"))
    assert needs_rehash("not-a-hash")


def test_password_strength() -> None:
    assert check_password_strength(PASSWORD) == []
    assert check_password_strength("abc") == [
        "au moins 8 caractères", "au moins une lettre majuscule", "au moins un chiffre"]
    assert check_password_strength("ABCDEFGH1") == ["au moins une lettre minuscule"]
    with pytest.raises(WeakPassword) as info:
        accounts.set_password(accounts.Account(), "court")
    assert "Mot de passe trop faible" in str(info.value)
    assert isinstance(info.value, ValueError)


def _marie(s: Session, password: str | None = PASSWORD) -> Professional:
    marie = Professional(rpps="10000000001", adeli="641234567", first_name="Marie",
                         last_name="Martin")
    s.add(marie)
    s.add(Mailbox(address=LOGIN, kind=MailboxKind.PERSONAL, professional=marie))
    s.flush()
    create_professional_account(s, marie, "Marie.Martin@mss.test", password)
    return marie


def test_create_and_find(db: Database, fast_hasher: PasswordHasher) -> None:
    with db.transaction() as s:
        marie = _marie(s)
        account = find_account(s, LOGIN)
        assert account is not None and account.login == LOGIN
        assert account.mailbox is not None and account.mailbox.address == LOGIN
        assert account.professional is marie
        assert find_account(s, "  MARIE.MARTIN@mss.test ") is account
        assert find_account(s, "810000000001") is account
        assert find_account(s, "0641234567") is account
        assert find_account(s, "810000000009") is None
        assert find_account(s, "nobody@mss.test") is None
        with pytest.raises(TrustSpaceError, match="déjà utilisé"):
            create_account(s, login=LOGIN, kind=AccountKind.SERVICE)
        for identifier in ("10000000001", "641234567", "810000000001", "0641234567", LOGIN):
            assert find_professional(s, identifier) == (marie, LOGIN)
        with pytest.raises(UnknownProfessional, match="inconnu"):
            find_professional(s, "10000000009")
        # An outdated hash is replaced at the next successful login; the counter resets.
        account.failed_attempts = 3
        old = account.password_hash = PasswordHasher(time_cost=2, memory_cost=64,
                                                     parallelism=1).hash(PASSWORD)
    with db.transaction() as s:
        account = authenticate_password(s, "810000000001", PASSWORD)
        assert account.failed_attempts == 0 and account.last_login_at is not None
        assert account.password_hash is not None and account.password_hash != old
        assert not needs_rehash(account.password_hash)


def _attempt(db: Database, login: str, password: str, **kw: object) -> object:
    """The documented calling pattern: catch inside the transaction so that the failure
    count (and the caller's audit record) is committed."""
    with db.transaction() as s:
        try:
            return authenticate_password(s, login, password, **kw)  # type: ignore[arg-type]
        except AuthenticationFailed as exc:
            return exc


def test_lockout_then_unlock(db: Database, fast_hasher: PasswordHasher) -> None:
    now = utcnow()
    with db.transaction() as s:
        _marie(s)
    for attempt in range(3):
        failed = _attempt(db, LOGIN, f"wrong{attempt}", now=now, max_failures=3)
        assert type(failed) is AuthenticationFailed
    locked = _attempt(db, LOGIN, PASSWORD, now=now + timedelta(minutes=14), max_failures=3)
    assert isinstance(locked, AccountLocked)
    assert "bloqué" in str(locked)
    assert locked.locked_until == now + timedelta(minutes=15)
    # After the lock: the counter starts again from zero (one failure does not re-lock).
    later = now + timedelta(minutes=16)
    assert type(_attempt(db, LOGIN, "wrong", now=later, max_failures=3)) is AuthenticationFailed
    account = _attempt(db, LOGIN, PASSWORD, now=later, max_failures=3)
    assert isinstance(account, accounts.Account)
    assert account.failed_attempts == 0 and account.locked_until is None


def test_unknown_login_same_message(db: Database, fast_hasher: PasswordHasher) -> None:
    with db.transaction() as s:
        _marie(s)
    outcomes = set()
    for login in ("nobody@mss.test", LOGIN, "899999999999"):
        for _ in range(4):  # beyond max_failures: an unknown login is never "locked"
            failed = _attempt(db, login, "wrong", max_failures=3)
            outcomes.add((type(failed), str(failed)))
    locked = ("Accès temporairement bloqué après plusieurs échecs de connexion ; "
              "réessayez plus tard.")
    assert outcomes == {(AuthenticationFailed, "Identifiant ou mot de passe incorrect."),
                        (AccountLocked, locked)}  # only the existing login ever gets locked
    assert type(_attempt(db, "nobody@mss.test", "wrong", max_failures=1)) is AuthenticationFailed


def test_suspended_and_passwordless(db: Database, fast_hasher: PasswordHasher) -> None:
    with db.transaction() as s:
        _marie(s)
        account = find_account(s, LOGIN)
        assert account is not None
        account.state = AccountState.SUSPENDED
        create_account(s, login="lps-cabinet", kind=AccountKind.APPLICATIVE)
    assert isinstance(_attempt(db, LOGIN, PASSWORD), AccountSuspended)
    assert "suspendu" in str(_attempt(db, LOGIN, PASSWORD))
    assert type(_attempt(db, LOGIN, "wrong")) is AuthenticationFailed  # says nothing more
    assert type(_attempt(db, "lps-cabinet", "")) is AuthenticationFailed
