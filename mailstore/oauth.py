"""IMAP with a Pro Santé Connect access token (issue #16): SASL OAUTHBEARER (RFC 7628) and
XOAUTH2, run by Dovecot, decided by mss.

The way: Dovecot 2.3.19's own ``passdb oauth2`` (``mechanisms = oauthbearer xoauth2``) speaks
the mechanisms and RFC 7628's error exchange; its ``introspection_url`` is mss's hook server on
loopback (``mailstore.hooks``), which introspects the token at the provider with ``core.oidc``
and answers in RFC 7662 form: ``{"active": true, "username": <login>}`` when the token's
national id opens an account and its own mailbox (``trust_space.accounts.card_holder`` and
``trust_space.policy.may_authorise``, the very rule of the gateway's EXTERNAL and tokens),
else ``{"active": false}``; ``503`` when the provider does not answer.

Why, from Dovecot 2.3.19's source (tag 2.3.19.1):

- ``src/lib-oauth2/oauth2-request.c`` (``oauth2_introspection_start``): the URL is used as
  written, never %-expanded; in ``post`` mode the body is ``token, client_id, client_secret``;
  ``send_auth_headers`` adds only ``X-Dovecot-Auth-Service/-Local/-Remote``. The user the
  client asked for never reaches the endpoint, so it cannot answer "yes for that mailbox".
- ``src/auth/db-oauth2.c`` (``db_oauth2_validate_username``): the ``username_attribute`` value,
  through ``username_format`` (``%Lu``), must equal the user asked for (OAUTHBEARER's ``a=``,
  XOAUTH2's ``user=``), else USER_UNKNOWN; ``active_attribute``/``active_value`` refuse an
  inactive answer; a status other than 2xx/4xx or bad JSON is an internal failure
  (``[UNAVAILABLE]``, try again).
- ``src/auth/mech-oauth2.c``: both mechanisms need the user; any refusal but an internal
  failure is sent as a continuation, ``{"status":"invalid_token","openid-configuration":…}``
  (OAUTHBEARER; the URL is the passdb's ``openid_configuration_url``) or
  ``{"status":"401","schemes":"bearer","scope":"mail"}`` (XOAUTH2), and the client's next
  response ends in failure (RFC 7628 §3.2.2).

So the endpoint answers the login of the account the token opens and Dovecot compares: a
token opens its holder's own mailbox, as a card does over EXTERNAL (``mailstore.sql``). A
delegated organisational mailbox is reached as with a card, in the shared namespace with the
delegation's rights (``mailstore.acl``): logging in as the organisational mailbox itself would
give owner rights whatever the role. Not chosen: Dovecot introspecting at the provider itself
(its username would be the national id, not a mailbox; it cannot check the accepted practice
software, the acr level, or use the provider's client certificate and cache as ``core.oidc``
does); a Lua passdb (a new Debian package, and the rule written a second time, in Lua).

Lock-out and audit stay the auth policy's (``mailstore.authpolicy``): Dovecot reports every
outcome with the login and mechanism, never the token. To tell a refused token (counted) from
a provider that did not answer (not counted), and to audit why, the endpoint remembers its
last answer per client address and port (``X-Dovecot-Auth-Remote``; ``rport`` in the policy
request) for a minute. Tokens are never stored (ECO.1.2.5), only ``core.oidc``'s cache of
introspection answers, by hash, no longer than the token lives.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from core.db import Database
from core.oidc import TIMEOUT, Provider, TokenRefused
from core.settings import Settings
from trust_space.accounts import card_holder
from trust_space.policy import Identity, may_authorise

PATH = "/oauth2/introspect"
CLIENT_ID = "dovecot"  # how Dovecot authenticates to the endpoint (with the hooks' secret)
USERNAME_ATTRIBUTE = "username"  # RFC 7662 §2.2
REMEMBER_SECONDS = 60.0
REMEMBERED = 10_000


@dataclass(frozen=True)
class TokenOutcome:
    """What the endpoint answered for one attempt. ``reason``: ``ok``, ``invalid``,
    ``audience``, ``acr``, ``identity``, ``unavailable`` (``core.oidc``), ``no_account``, or
    a ``may_authorise`` code (``mailbox_suspended``…). ``login``: the account it opens."""

    reason: str
    login: str = ""
    national_id: str = ""
    client_id: str = ""


def passdb_args(settings: Settings, base_url: str, secret: str) -> str:
    """The text of Dovecot's ``oauth2.conf.ext`` (0600: it holds the hooks' secret)."""
    issuer = settings.oidc_issuer.rstrip("/")
    return (f"introspection_mode = post\n"
            f"introspection_url = {base_url}{PATH}\n"
            f"client_id = {CLIENT_ID}\n"
            f"client_secret = {secret}\n"
            f"username_attribute = {USERNAME_ATTRIBUTE}\n"
            "active_attribute = active\n"
            "active_value = true\n"
            "send_auth_headers = yes\n"
            # RFC 7628 §3.2.2: where the client finds the provider to get a new token
            f"openid_configuration_url = {issuer}/.well-known/openid-configuration\n"
            f"timeout_msecs = {int(TIMEOUT * 1000) + 5000}\n")


def remote_key(ip: str, port: str) -> str:
    return f"{ip.strip().strip('[]')}|{port.strip()}"


def parse_remote(header: str) -> str:
    """``X-Dovecot-Auth-Remote`` (``1.2.3.4:5678`` or ``[::1]:5678``) as a ``remote_key``."""
    ip, _, port = header.strip().rpartition(":")
    return remote_key(ip, port)


class TokenCheck:
    """The introspection endpoint's use case, and its short memory for the policy reports."""

    def __init__(self, settings: Settings, db: Database,
                 provider: Provider | None = None) -> None:
        self.db = db
        self.provider = provider or Provider(settings)
        self._recent: OrderedDict[str, tuple[float, TokenOutcome]] = OrderedDict()
        self._lock = threading.Lock()

    def introspect(self, token: str, remote: str) -> dict[str, object] | None:
        """The RFC 7662 answer for Dovecot, or None when the provider did not answer."""
        outcome = self.decide(token)
        if remote:
            self._remember(remote, outcome)
        if outcome.reason == "unavailable":
            return None
        if outcome.reason != "ok":
            return {"active": False}  # RFC 7662 §2.2: nothing more for a refused token
        return {"active": True, USERNAME_ATTRIBUTE: outcome.login,
                "client_id": outcome.client_id}

    def decide(self, token: str) -> TokenOutcome:
        try:
            info = self.provider.introspect(token)
        except TokenRefused as exc:
            return TokenOutcome(exc.reason)
        with self.db.transaction() as session:
            account = card_holder(session, info.national_id)
            if account is None:
                return TokenOutcome("no_account", "", info.national_id, info.client_id)
            decision = may_authorise(session, Identity.from_account(account))
            return TokenOutcome("ok" if decision else decision.code, account.login,
                                info.national_id, info.client_id)

    def outcome_for(self, remote: str) -> TokenOutcome | None:
        """The endpoint's answer for the attempt from that address and port (once)."""
        with self._lock:
            found = self._recent.pop(remote, None)
        if found is None or time.monotonic() - found[0] > REMEMBER_SECONDS:
            return None
        return found[1]

    def _remember(self, remote: str, outcome: TokenOutcome) -> None:
        with self._lock:
            self._recent.pop(remote, None)
            self._recent[remote] = (time.monotonic(), outcome)
            while len(self._recent) > REMEMBERED:
                self._recent.popitem(last=False)
