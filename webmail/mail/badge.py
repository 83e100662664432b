"""The security badge of a message, from the gateway's verdict.

The gateway records its S/MIME verdict in an ``Authentication-Results`` field (RFC 8601,
``smime`` method of RFC 7281) with our authserv-id — the domain — above every other field,
after removing any field that claimed our id (``gateway.accept.opening.stamp``). A reader trusts
only
the **first** field with our authserv-id (RFC 8601 §5); fields of other services are ignored.

A message can still be placed in a folder without the gateway (IMAP APPEND by a client or a
delegate), with a forged or copied field. So a verdict counts only when the gateway's seal over
it verifies (``mailformat.authresults``: an HMAC under the operator's secret, binding the verdict to
the fields a list shows); the list shows nothing else. In the read view a ``pass`` is
confirmed once more by verifying the signature against the trust space (our CA and the peer
operators' CAs, their CRLs) *at the time the gateway received it* and checking that the signer
is the ``From`` address; if that fails the badge is a warning, never trusted. Headers are cut
by ``mailformat.headers`` (the gateway's parser): a header section the gateway would have refused
cannot carry a verdict.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from pathlib import Path

from certs import smime
from certs.errors import CertError
from certs.validation import TrustStore
from mailformat import authresults, headers
from webmail.context import mss


@dataclass(frozen=True)
class Verdict:
    """What our ``Authentication-Results`` field says (``result`` "absent" without one)."""

    result: str  # pass / fail / none / temperror / absent / forged (unsealed) / report
    encrypted: bool | None = None
    signer: str | None = None
    reason: str = ""


def verdict_of(values: list[str], authserv_id: str) -> Verdict:
    """The verdict of the first field among ``values`` (in header order) with our id, read
    with the gateway's grammar (``mailformat.authresults``)."""
    ours = authresults.normal_id(authserv_id)
    for value in values:
        if authresults.normal_id(authresults.authserv_id_of(value)) != ours:
            continue
        try:
            return _smime_verdict(authresults.parse(value))
        except authresults.AuthResultsError:
            return Verdict("temperror", reason="résultat de vérification illisible")
    return Verdict("absent")


def _smime_verdict(found: authresults.AuthResults) -> Verdict:
    """The ``smime`` result (RFC 7281) as the badge reads it: the comment right after the
    result is the hop fact the gateway wrote, ``(encrypted)`` or ``(not encrypted)``."""
    smime = found.result("smime")
    if smime is None:
        return Verdict("none")
    comment = (smime.comment or "").strip().lower()
    encrypted = {"encrypted": True, "not encrypted": False}.get(comment)
    return Verdict(smime.result, encrypted, smime.property("body.smime-identity"),
                   smime.reason or "")


@dataclass(frozen=True)
class Voucher:
    """What tells the gateway's verdict from a copy: our authserv-id and the seal key."""

    authserv_id: str
    key: bytes

    def verdict(self, header: headers.Header) -> tuple[Verdict, datetime | None]:
        """The sealed verdict of a header section and the gateway's time; ``forged`` when a
        field claims our id without a valid seal, ``absent`` when none claims it."""
        found = None if header.defects else \
            authresults.sealed(header.fields, self.authserv_id, self.key)
        if found is not None and found.report is not None:
            return Verdict("report", reason=found.report), found.at
        if found is not None:
            return _smime_verdict(found.results), found.at
        claimed = verdict_of(header.values(authresults.FIELD), self.authserv_id)
        return Verdict("absent" if claimed.result == "absent" else "forged"), None


@dataclass(frozen=True)
class Badge:
    """What the reader shows: ``level`` ok / warn / none, a title and details."""

    level: str
    title: str
    details: list[str] = field(default_factory=list)
    encrypted: bool | None = None


def _hop(encrypted: bool | None, internal: bool = False) -> str:
    if internal:
        return ("Message interne à votre opérateur : il n’a pas quitté ses serveurs (pas de "
                "trajet à chiffrer).")
    if encrypted is None:
        return "Chiffrement sur le trajet : inconnu."
    if encrypted:
        return "Reçu chiffré (S/MIME) jusqu'à notre opérateur."
    return ("Reçu sans chiffrement S/MIME (transmis par les canaux TLS authentifiés de "
            "l’espace de confiance).")


def _internal(message: Message, authserv_id: str) -> bool:
    """A message whose every From address is of our own domain: submitted here, delivered
    here, it never crossed a hop (only a sealed verdict makes this call, see badge_for)."""
    senders = [a.lower() for _, a in email.utils.getaddresses(message.get_all("From", []))]
    return bool(senders) and all(a.rpartition("@")[2] == authserv_id.lower() for a in senders)


def badge_for(raw: bytes, message: Message, voucher: Voucher, store: TrustStore, *,
              sent: bool = False) -> Badge:
    """The badge of a message (see the module docstring). ``sent``: the sender's own copy
    (its protection per recipient is in the delivery timeline, not a hop of its own)."""
    verdict, at = voucher.verdict(headers.parse(headers.split_head(raw)[0]))
    hop = _hop(verdict.encrypted, at is not None and _internal(message, voucher.authserv_id))
    if sent:
        hop = ("Votre copie : la protection appliquée à chaque destinataire est indiquée dans "
               "« Suivi de la remise ».")
    if verdict.result == "forged":
        return Badge("warn", "Signature annoncée mais non confirmée : ne vous y fiez pas",
                     ["Le résultat de vérification affiché dans ce message n’a pas été écrit "
                      "par la passerelle de l’opérateur (message déposé ou modifié depuis)."])
    if verdict.result == "report":
        what = "Avis de remise" if verdict.reason == "dsn" else "Accusé de réception"
        return Badge("ok", f"{what} émis par votre opérateur",
                     ["Message écrit par la passerelle de votre opérateur : son origine est "
                      "garantie."])
    if verdict.result == "pass":
        confirmed = _confirm(raw, message, store, verdict.signer, at)
        if confirmed is None:
            return Badge("ok", f"Signé par {verdict.signer or 'l’expéditeur'} — signature "
                         "vérifiée dans l’espace de confiance", [hop], verdict.encrypted)
        return Badge("warn", "Signature annoncée mais non confirmée : ne vous y fiez pas",
                     [confirmed, hop], verdict.encrypted)
    if verdict.result in ("fail", "temperror"):
        detail = verdict.reason or "la vérification a échoué"
        return Badge("warn", "Attention : signature invalide ou non vérifiable",
                     [f"Motif : {detail}.", hop], verdict.encrypted)
    if verdict.result == "none":
        return Badge("none", "Message non signé", [hop], verdict.encrypted)
    return Badge("none", "Non vérifié par la passerelle",
                 ["Ce message n’a pas été remis par la passerelle de l’opérateur (brouillon ou "
                  "copie déposée par un logiciel) : aucune garantie d’origine."])


def _confirm(raw: bytes, message: Message, store: TrustStore, signer: str | None,
             at: datetime | None) -> str | None:
    """None when the signature verifies at ``at`` (when the gateway received the message) and
    its signer is the ``From`` address; else why not (a short French sentence)."""
    try:
        verified = smime.verify(raw, store, at=at)
    except CertError as exc:
        return f"Vérification locale impossible : {exc.message}"
    senders = {a.lower() for _, a in email.utils.getaddresses(message.get_all("From", []))}
    addresses = {a.lower() for a in verified.addresses}
    if not senders or not senders <= addresses:
        return "Le signataire n’est pas l’expéditeur affiché."
    if signer and signer.lower() not in addresses:
        return "Le signataire diffère de celui annoncé par la passerelle."
    return None


def voucher() -> Voucher:
    """The current webmail's voucher (our domain and the seal key)."""
    app = mss()
    return Voucher(app.settings.domain, app.seal_key)


class StoreCache:
    """Our CA plus the peers' CAs (``TrustStore.with_peers``), re-read when a file changes."""

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self._cached: tuple[tuple[tuple[str, float], ...], TrustStore] | None = None

    def _stamp(self) -> tuple[tuple[str, float], ...]:
        files = [self.pki_dir / "ca.pem", self.pki_dir / "crl.pem",
                 *sorted((self.pki_dir / "peers").glob("*.pem"))]
        return tuple((p.name, p.stat().st_mtime) for p in files if p.exists())

    def get(self) -> TrustStore:
        stamp = self._stamp()
        if self._cached is None or self._cached[0] != stamp:
            self._cached = (stamp, TrustStore.with_peers(self.pki_dir))
        return self._cached[1]
