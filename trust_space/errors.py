"""Errors of the trust space (CONVENTIONS.md, 4): one base, French messages, stable codes.

Protocol adapters (SMTP, IMAP auth, HTTP, CLI) map these to replies in one place each; they
read ``code`` for the machine side and ``message`` (French first) for the human side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.errors import MssError


class TrustSpaceError(MssError):
    """Base of every error raised on purpose by ``trust_space``."""

    code = "trust_space"


class NamingError(TrustSpaceError, ValueError):
    """An address part or an identifier (RPPS, ADELI, FINESS, postal code, domain) is invalid.

    ``reason`` is the short form without the subject ("doit comporter 11 chiffres"), used by the
    importers to build "ligne 4, rpps : doit comporter 11 chiffres".
    """

    code = "naming"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class UnknownProfessional(TrustSpaceError):
    """No professional matches the identifier given (RPPS, ADELI, national id, address)."""

    code = "not_found"


class InvalidTransition(TrustSpaceError):
    """A mailbox publication state change that the life cycle does not allow."""

    code = "invalid_transition"


class WeakPassword(TrustSpaceError, ValueError):
    """A new password does not meet the strength rules; ``problems`` lists them in French."""

    code = "weak_password"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("Mot de passe trop faible : " + " ; ".join(self.problems))


class AuthenticationFailed(TrustSpaceError):
    """Login refused. The message never says whether the login exists (no enumeration)."""

    code = "authentication_failed"

    def __init__(self, message: str = "Identifiant ou mot de passe incorrect.") -> None:
        super().__init__(message)


class AccountLocked(AuthenticationFailed):
    """Too many failures on an existing account: refused until ``locked_until``."""

    code = "account_locked"

    def __init__(self, locked_until: datetime) -> None:
        super().__init__(
            "Accès temporairement bloqué après plusieurs échecs de connexion ; "
            "réessayez plus tard."
        )
        self.locked_until = locked_until


class AccountSuspended(AuthenticationFailed):
    """The right password for an account that an operator suspended."""

    code = "account_suspended"

    def __init__(self) -> None:
        super().__init__("Compte suspendu : contactez votre opérateur de messagerie.")


@dataclass(frozen=True)
class RowError:
    """One problem in an imported file: ``line`` is 1-based (the CSV header is line 1)."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"ligne {self.line}" if self.line else "fichier"
        if self.field:
            where += f", {self.field}"
        return f"{where} : {self.message}"


class ImportFailed(TrustSpaceError):
    """An import was refused as a whole; nothing was written. ``errors`` lists every problem."""

    code = "import_failed"
    shown = 20  # errors spelled out in the message; all are in ``errors``

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = list(errors)
        lines = [str(e) for e in self.errors[: self.shown]]
        if len(self.errors) > self.shown:
            lines.append(f"… et {len(self.errors) - self.shown} autre(s)")
        count = len(self.errors)
        head = f"Import refusé ({count} erreur{'s' if count > 1 else ''}), rien n'a été enregistré"
        super().__init__(head + " :\n" + "\n".join(lines))

