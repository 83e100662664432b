"""The use cases behind the SMTP commands: each runs checks or steps inside short transactions
and returns what the handler needs to reply (CONVENTIONS.md, 1 and 6). MAIL FROM and RCPT TO
are single checks (``gateway.accept.checks``), their grants kept a few seconds
(``Decisions``); DATA runs the channel's steps (``gateway.accept.steps``).

They are synchronous (database, crypto) and run in the handler's thread pool.
"""

from __future__ import annotations

from cryptography import x509

from certs.errors import CertError
from certs.validation import validate
from gateway.accept import checks, steps
from gateway.accept.checks import Route
from gateway.accept.context import Envelope, Gateway
from gateway.errors import SenderRefused
from trust_space.naming import normalise_dn
from trust_space.policy import Identity


# ---------------------------------------------------------------------- submission
def known_sender(gw: Gateway, identity: Identity, address: str) -> bool:
    """True when ``sender`` granted this recently (``Decisions``): no database needed."""
    return gw.decisions.get(("from", identity, address.lower())) is not None


def sender(gw: Gateway, identity: Identity, address: str) -> None:
    """MAIL FROM on the submission ports."""
    seen = gw.decisions.generation
    with gw.db.reading() as conn:
        checks.check_sender(conn, identity, address)
    gw.decisions.put(("from", identity, address.lower()), True, seen)


def known_route(gw: Gateway, address: str, *, local_only: bool = False) -> Route | None:
    """The route ``recipient`` granted recently, if any."""
    route = gw.decisions.get(("rcpt", local_only, address.lower()))
    return route if isinstance(route, Route) else None


def recipient(gw: Gateway, address: str, *, local_only: bool = False) -> Route:
    """RCPT TO."""
    seen = gw.decisions.generation
    with gw.db.reading() as conn:
        route = checks.route_recipient(conn, address, {gw.settings.domain},
                                       local_only=local_only)
    gw.decisions.put(("rcpt", local_only, address.lower()), route, seen)
    return route


def submit(gw: Gateway, login: str, identity: Identity, env: Envelope) -> str:
    """DATA on the submission ports: the queue id once the message is durably queued."""
    return steps.run(steps.SUBMISSION, steps.Work(gw, env, login, identity))


# ---------------------------------------------------------------------- relay (peers)
def peer_sender(gw: Gateway, cert: x509.Certificate | None, address: str) -> str:
    """MAIL FROM on the relay port: the peer's normalised DN once its certificate validated
    (chain, CRL) and matches the whitelist entry of the sender's domain."""
    if cert is None:
        raise SenderRefused("Certificat client d'opérateur exigé / operator client certificate "
                            "required", code="peer_no_certificate")
    try:
        validate(cert, gw.trust.store(), purpose="client")
    except CertError as exc:
        raise SenderRefused(f"Certificat d'opérateur refusé / operator certificate refused : "
                            f"{exc.message}", code=f"peer_{exc.code}") from None
    dn = normalise_dn(cert.subject.rfc4514_string())
    with gw.db.reading() as conn:
        checks.check_peer(conn, dn, address)
    return dn


def relay(gw: Gateway, peer_dn: str, env: Envelope) -> str:
    """DATA on the relay port: open (decrypt, verify), stamp, queue for local delivery."""
    return steps.run(steps.RELAY, steps.Work(gw, env, peer_dn))
