"""The configured OpenID Connect provider (Pro Santé Connect, or the demo's stand-in), as the
webmail's login and the IMAP/SMTP token checks see it (issue #16): one HTTP session with the
provider's CA and our client certificate, its discovery document, and access-token
introspection (RFC 7662) with a cache no longer than the token's life.

Protocol only: who may use which mailbox is ``trust_space``'s; the webmail's login flow is
Authlib's. Tokens are never stored (ECO.1.2.5): the cache is in memory, keyed by a hash.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from core.errors import MssError
from core.settings import Settings

TIMEOUT = 10.0  # seconds per request to the provider
DISCOVERY_SECONDS = 3600.0  # the discovery document is read again after an hour
CACHE_LIMIT = 10_000  # introspection answers kept at most (then the oldest half goes)


class TokenRefused(MssError):
    """An access token that does not open the door. ``reason``: ``invalid`` (unknown, expired,
    revoked), ``audience`` (issued to a client we do not accept), ``acr`` (too weak),
    ``identity`` (no national id), ``unavailable`` (the provider did not answer)."""

    code = "token_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenInfo:
    national_id: str  # 8 + RPPS / 0 + ADELI, from the provider's id claim
    client_id: str
    expires_at: float  # epoch seconds
    acr: str


def http_session(settings: Settings) -> requests.Session:
    """A session to the provider: its CA (``MSS_OIDC_CA_FILE``, else the system's), our client
    certificate when client authentication is mutual TLS; no proxy or CA from the
    environment (``REQUESTS_CA_BUNDLE`` would silently replace ``verify``)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.oidc_ca_file or True
    if settings.oidc_client_cert and settings.oidc_client_key:
        session.cert = (settings.oidc_client_cert, settings.oidc_client_key)
    return session


def client_auth(settings: Settings) -> tuple[str, str] | None:
    """HTTP Basic credentials (client_secret_basic), or None with mutual TLS
    (``tls_client_auth``: the client id goes in the form)."""
    if settings.oidc_client_secret:
        return settings.oidc_client_id, settings.oidc_client_secret
    return None


ACR_ORDER = ("eidas1", "eidas2", "eidas3")  # PSC's levels, weakest first


def acr_at_least(acr: str, minimum: str) -> bool:
    """True when ``acr`` is ``minimum`` or stronger (unknown values only match themselves)."""
    if acr == minimum:
        return True
    if acr in ACR_ORDER and minimum in ACR_ORDER:
        return ACR_ORDER.index(acr) >= ACR_ORDER.index(minimum)
    return False


class Provider:
    """The provider named by the settings. Thread-safe; one per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._cache: dict[str, TokenInfo] = {}

    def metadata(self) -> dict[str, Any]:
        """The discovery document (``/.well-known/openid-configuration``), cached an hour.

        Raises:
            TokenRefused: ``unavailable`` when it cannot be read or names another issuer.
        """
        with self._lock:
            if self._discovery and time.monotonic() - self._discovery[0] < DISCOVERY_SECONDS:
                return self._discovery[1]
        issuer = self.settings.oidc_issuer.rstrip("/")
        try:
            with http_session(self.settings) as http:
                answer = http.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
                answer.raise_for_status()
                data = dict(answer.json())
        except (requests.RequestException, ValueError) as exc:
            raise TokenRefused("unavailable", "Pro Santé Connect ne répond pas / identity "
                               f"provider unavailable ({type(exc).__name__})") from exc
        if data.get("issuer", "").rstrip("/") != issuer:  # OpenID Connect Discovery §4.3
            raise TokenRefused("unavailable", "Pro Santé Connect : émetteur inattendu / "
                               "unexpected issuer")
        with self._lock:
            self._discovery = (time.monotonic(), data)
        return data

    def introspect(self, token: str) -> TokenInfo:
        """What the provider says of an access token (RFC 7662), checked: active, not expired,
        issued to our client or an accepted one (``MSS_OIDC_ACCEPTED_CLIENTS``), acr at least
        ``MSS_OIDC_ACR`` when the provider tells it, and carrying a national id.

        Raises:
            TokenRefused: with the reason (see the class).
        """
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = time.time()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached.expires_at > now:
            return cached
        data = self._ask(token)
        info = self._check(data, now)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                for old in sorted(self._cache, key=lambda k: self._cache[k].expires_at)[
                        :CACHE_LIMIT // 2]:
                    del self._cache[old]
            self._cache[key] = info
        return info

    def _ask(self, token: str) -> dict[str, Any]:
        endpoint = self.metadata().get("introspection_endpoint")
        if not endpoint:
            raise TokenRefused("unavailable", "Pro Santé Connect : pas d'introspection / "
                               "no introspection endpoint")
        form = {"token": token, "token_type_hint": "access_token"}
        if client_auth(self.settings) is None:
            form["client_id"] = self.settings.oidc_client_id
        try:
            with http_session(self.settings) as http:
                answer = http.post(endpoint, data=form, auth=client_auth(self.settings),
                                   timeout=TIMEOUT, headers={"Accept": "application/json"})
                answer.raise_for_status()
                return dict(answer.json())
        except (requests.RequestException, ValueError) as exc:
            raise TokenRefused("unavailable", "Pro Santé Connect ne répond pas / identity "
                               f"provider unavailable ({type(exc).__name__})") from exc

    def _check(self, data: dict[str, Any], now: float) -> TokenInfo:
        s = self.settings
        expires = data.get("exp")
        if data.get("active") is not True or not isinstance(expires, int | float) \
                or expires <= now:
            raise TokenRefused("invalid", "Jeton invalide ou expiré / invalid or expired token")
        accepted = {s.oidc_client_id, *(c.strip() for c in s.oidc_accepted_clients.split(","))}
        audience = data.get("aud")
        audiences = set(audience if isinstance(audience, list) else [audience] if audience
                        else [])
        if data.get("client_id") not in accepted - {""} and not audiences & (accepted - {""}):
            raise TokenRefused("audience", "Jeton destiné à un autre service / token issued "
                               "for another audience")
        acr = str(data.get("acr") or "")
        if acr and not acr_at_least(acr, s.oidc_acr):
            raise TokenRefused("acr", f"Niveau d'authentification insuffisant ({acr}) / "
                               "authentication level too low")
        national = str(data.get(s.oidc_id_claim) or "")
        if not national:
            raise TokenRefused("identity", "Jeton sans identifiant national / token without "
                               "a national identifier")
        return TokenInfo(national, str(data.get("client_id") or ""), float(expires), acr)
