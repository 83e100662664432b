"""Several mail-store hosts (issue #19): which store holds a mailbox, and the gateways' LMTP
delivery to each recipient's store.

A store is a host running ``mss run --role mailstore`` (its Dovecot, its mail, its LMTP over
TLS front, ``mailstore.lmtps``), named in ``MSS_MAIL_STORES`` (``Settings.stores``); a
mailbox's store is ``mailbox.mail_store``, NULL meaning the first (default) store, so an
installation with one store never writes the column. IMAP and ManageSieve logins may reach any
store: its Dovecot proxies the ones whose mailbox lives elsewhere (``mailstore.sql.Proxying``).

**Why the gateway picks the store for LMTP, and not Dovecot's ``lmtp_proxy``.** The gateway
already reaches a store over LMTP with TLS and a client certificate that the store checks
(``mailstore.lmtps``, the only LMTP a store accepts from the network). Dovecot's LMTP proxy
would instead open Dovecot-to-Dovecot LMTP connections, which needs each store's Dovecot to
listen for LMTP on the network, and Dovecot 2.3.19 lets a client without a certificate deliver
there (``mailstore.lmtps`` explains the measurement): LMTP writes into any mailbox. Grouping
the recipients per store in the gateway costs one indexed ``SELECT`` per delivery batch, keeps
one authenticated path, and a store that is down delays only its own recipients (each group is
its own LMTP transaction, and each recipient keeps its own ``Result``).

A message aimed at the wrong store (a mailbox placed elsewhere in between) finds no user there
(the userdb answers only for its own mailboxes): ``550 5.1.1``. Moving a mailbox is an
operator's procedure (README, Scaling), done with its deliveries stopped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select

from core.db import Database
from core.errors import ConfigError, NotFound
from core.settings import MailStore, Settings
from mailstore.errors import TemporaryFailure
from mailstore.lmtp import LmtpClient, Result, client_context

DEFAULT_LMTPS_PORT = 2424  # with MSS_LMTP_URL on the default store's unix socket


class Delivers(Protocol):
    """What the gateway's queue workers deliver local mail with."""

    def deliver(self, raw: bytes, sender: str, recipients: Sequence[str],
                folder: str = "INBOX") -> dict[str, Result]: ...


def lmtp_for(settings: Settings, db: Database) -> Delivers:
    """The gateway's LMTP: ``MSS_LMTP_URL`` with one store, else routed per recipient."""
    if not settings.stores:
        return LmtpClient.for_settings(settings)
    return StoreLmtp(settings, db)


def lmtps_port(settings: Settings) -> int:
    """The port every store's LMTP over TLS front listens on: ``MSS_LMTP_URL``'s when it is
    ``lmtps://``, else 2424."""
    endpoint = settings.lmtp_endpoint
    return endpoint.port if endpoint and endpoint.tls else DEFAULT_LMTPS_PORT


class StoreLmtp:
    """LMTP to each recipient's store: the default store through ``MSS_LMTP_URL``, another
    store through LMTP over TLS at its address (see the module docstring)."""

    def __init__(self, settings: Settings, db: Database,
                 clients: dict[str, LmtpClient] | None = None) -> None:
        self.settings, self.db = settings, db
        self.stores = {s.name: s for s in settings.stores}
        self.default = settings.stores[0].name
        self._clients = clients if clients is not None else self._make_clients()

    def _make_clients(self) -> dict[str, LmtpClient]:
        clients = {self.default: LmtpClient.for_settings(self.settings)}
        port = lmtps_port(self.settings)
        context = None
        for store in self.settings.stores[1:]:
            context = context or client_context(self.settings)
            clients[store.name] = LmtpClient(store.address, port=port, tls=context)
        return clients

    def store_of(self, addresses: Sequence[str]) -> dict[str, str]:
        """Each address's store name (detail ``+Folder`` ignored); an address unknown here is
        given the default store, which refuses it as LMTP always did."""
        from trust_space.models import Mailbox

        bare = {a: _without_detail(a) for a in addresses}
        with self.db.read() as session:
            rows: dict[str, str | None] = {
                address: store for address, store in session.execute(
                    select(Mailbox.address, Mailbox.mail_store).where(
                        Mailbox.address.in_(set(bare.values())),
                        Mailbox.operator_id.is_(None)))}
        return {a: rows.get(b) or self.default for a, b in bare.items()}

    def deliver(self, raw: bytes, sender: str, recipients: Sequence[str],
                folder: str = "INBOX") -> dict[str, Result]:
        """``LmtpClient.deliver`` over the recipients' stores, one transaction per store."""
        if not recipients:
            raise ValueError("aucun destinataire")
        groups: dict[str, list[str]] = defaultdict(list)
        for rcpt, store in self.store_of(recipients).items():
            groups[store].append(rcpt)
        results: dict[str, Result] = {}
        for store, rcpts in groups.items():
            client = self._clients.get(store)
            if client is None:  # a name no longer in MSS_MAIL_STORES: wait for the operator
                failure = TemporaryFailure(f"magasin de courrier inconnu : « {store} »",
                                           reply="4.3.0 unknown mail store")
                results.update({r: Result(r, failure.smtp_code, failure.reply, failure)
                                for r in rcpts})
                continue
            results.update(client.deliver(raw, sender, rcpts, folder))
        return {rcpt: results[rcpt] for rcpt in recipients}


def _without_detail(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}".lower()


def check_store(settings: Settings, name: str) -> MailStore:
    """The store named ``name`` in ``MSS_MAIL_STORES``.

    Raises:
        ConfigError: no stores configured, or an unknown name.
    """
    stores = settings.stores
    if not stores:
        raise ConfigError("un seul magasin de courrier (MSS_MAIL_STORES est vide) : toutes "
                          "les boîtes y sont, il n'y a pas de magasin à choisir")
    for store in stores:
        if store.name == name:
            return store
    raise ConfigError(f"magasin de courrier inconnu : « {name} » (MSS_MAIL_STORES : "
                      f"{', '.join(s.name for s in stores)})")


def place(session: object, settings: Settings, address: str, name: str) -> str | None:
    """Record that ``address``'s mailbox lives on the store ``name``; returns the store it was
    on (None: the default). The default store's name is stored as NULL.

    Raises:
        ConfigError: an unknown store.
        NotFound: no local mailbox ``address``.
    """
    from sqlalchemy.orm import Session

    from trust_space.models import Mailbox

    assert isinstance(session, Session)
    store = check_store(settings, name)
    box = session.scalars(select(Mailbox).where(Mailbox.address == address.lower(),
                                                Mailbox.operator_id.is_(None))).first()
    if box is None:
        raise NotFound(f"boîte aux lettres inconnue : « {address} »")
    before = box.mail_store
    box.mail_store = None if store.name == settings.stores[0].name else store.name
    return before
