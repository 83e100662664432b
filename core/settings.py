"""One typed settings object, built once and injected (CONVENTIONS.md, 7).

Precedence, highest first: explicit overrides (tests, CLI flags) > ``MSS_*`` environment
variables > ``mss.toml`` in the data directory > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError

ENV_PREFIX = "MSS_"
WHITELIST_URL = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"
SECURITY_POLICIES = ("none", "sign", "encrypt", "sign+encrypt")
UNDO_SEND_CHOICES = (0, 5, 10, 20, 30)  # seconds a sent message waits for "Annuler" (#17)


@dataclass(frozen=True)
class Settings:
    """Every setting of mss. Each field is documented in the README (section "Settings")."""

    data_dir: Path = Path("./mss-data")
    database_url: str = ""  # empty: sqlite file DATA_DIR/mss.db
    domain: str = "mss.test"
    operator_name: str = "Opérateur MSS de démonstration"
    # How professionals reach the operator (refusal e-mails); empty: support@DOMAIN
    operator_contact: str = ""
    demo_password: str = ""
    secret_key: str = ""  # empty: generated once into DATA_DIR/secret.key
    listen_address: str = "127.0.0.1"
    hostname: str = "localhost"
    submission_port: int = 5870
    submissions_port: int = 4650
    relay_port: int = 2525
    imap_port: int = 1143
    imaps_port: int = 9930
    managesieve_port: int = 4190  # ManageSieve (RFC 5804), STARTTLS; 0: not offered
    web_port: int = 8443
    metrics_port: int = 9100
    smarthost: str = ""  # host:port of the outbound relay for notifications
    security_policy: str = "sign"  # minimum per message: none / sign / encrypt / sign+encrypt
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 50
    mailbox_quota_mb: int = 1024
    session_timeout_minutes: int = 120
    log_level: str = "INFO"
    softhsm2_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    # gateway (issue 4)
    rate_limit_per_minute: int = 120  # messages per authenticated identity per minute; 0 = off
    policy_cache_seconds: int = 5  # MAIL FROM rights / RCPT routes kept in memory; 0 = off
    delivery_expiry_hours: int = 24  # then a DSN (RFC 3464) tells the sender
    retry_base_seconds: int = 60  # first retry delay; doubles each attempt, capped at 1 h
    queue_workers: int = 8  # delivery threads per gateway process (README, Scaling)
    # issue #19: gateway processes sharing the SMTP ports (SO_REUSEPORT), each with its
    # listeners and its queue_workers; 0: one per core (os.sched_getaffinity) on PostgreSQL,
    # 1 on SQLite (its one writer at a time bounds the rate: README, Scaling)
    gateway_processes: int = 0
    queue_lease_seconds: int = 120  # a claim not finished by then is taken again
    max_received: int = 30  # loop detection: more Received: fields than this → 554 5.4.6
    webmail_url: str = ""  # link in notifications; empty: https://HOSTNAME:WEB_PORT/
    allow_tls_only_peers: bool = True  # peer recipient without certificate: TLS hop only
    bad_signature: str = "refuse"  # inbound signature failure: refuse / quarantine
    # webmail (issue 5)
    login_max_failures: int = 5  # wrong passwords or codes in a row before a temporary lock
    login_lock_minutes: int = 15  # how long that lock lasts
    sms_provider: str = "file"  # one-time codes by SMS: file (spool, tests/demo) / webhook
    sms_webhook_url: str = ""  # webhook provider: JSON {"to", "text"} POSTed here
    sms_spool_dir: str = ""  # file provider; empty: DATA_DIR/spool/sms
    # issue #17: seconds a message sent from the webmail is held before it leaves (its
    # "Annuler" window), for people who did not choose in Mon compte; one of UNDO_SEND_CHOICES
    undo_send_seconds: int = 10
    # issue #14: IMAP/SMTP take application passwords; the web password only when this is on
    # (never for operator accounts)
    imap_smtp_web_password: bool = False
    # issue #16: Pro Santé Connect (OpenID Connect). Empty issuer: no PSC login, no tokens on
    # IMAP/SMTP. Defaults are PSC's particulars (référentiel #2 Clients, ECO.1.2).
    oidc_issuer: str = ""  # e.g. https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet
    oidc_client_id: str = ""
    oidc_client_secret: str = ""  # client authentication by secret (client_secret_basic) …
    oidc_client_cert: str = ""  # … or by mutual TLS: PEM certificate and key paths
    oidc_client_key: str = ""
    oidc_ca_file: str = ""  # CA bundle checking the provider's TLS; empty: the system's
    oidc_scope: str = "openid scope_all"
    oidc_acr: str = "eidas1"  # the least acr accepted (and asked with acr_values)
    oidc_id_claim: str = "SubjectNameID"  # userinfo/introspection claim with the national id
    # client ids (besides ours) whose access tokens IMAP/SMTP accept: the practice software
    # registered with the provider; tokens of any other client are refused (audience)
    oidc_accepted_clients: str = ""
    oidc_standin_port: int = 0  # the demo's local PSC stand-in (standins/psc); 0: none
    # issue #20: the national directory feed (Annuaire Santé, ANS guide "API MSS"): each mailbox
    # life-cycle event as a FHIR Patch. Empty URL: feed off (events wait, sent once it is set).
    annuaire_url: str = ""  # [base] of the PATCH endpoint (https://; http:// on loopback only)
    annuaire_token: str = ""  # sent as "Authorization: Bearer …" …
    annuaire_client_cert: str = ""  # … and/or mutual TLS: PEM certificate and key paths
    annuaire_client_key: str = ""
    annuaire_ca_file: str = ""  # CA bundle checking the endpoint's TLS; empty: the system's
    annuaire_retry_base_seconds: int = 60  # first retry delay; doubles, at most 1 h; 12 tries
    # issue #20: follow the MSSanté whitelist (liste blanche of the trust space's domains and
    # their operators' certificate DNs) from the ANS's published file; empty URL: off (the
    # demo writes it empty into mss.toml). The address is the one public clients of the list
    # fetch (the ANS's "espace de confiance" site; its copy in the ANS's GitHub repository
    # ansforge/MSS-liste-blanche has the same name). Those clients check the server against
    # the IGC Santé chain (Chaine_de_certification-IGC-Sante.p7b): put that chain, as PEM, in
    # whitelist_ca if the system store does not know it (not checked from here: no network).
    whitelist_url: str = WHITELIST_URL
    whitelist_ca: str = ""  # PEM chain the server certificate must chain to; empty: system's
    whitelist_fetch_seconds: int = 6 * 3600  # between scheduled fetches (mss run, gateway)
    # issue #20: probe each peer operator's relay (EHLO, STARTTLS, certificate; no mail) this
    # often from mss run (gateway role); 0: off (``mss peers check`` by hand or from cron)
    peer_probe_seconds: int = 3600
    # issue #17: new mail without reloading. Each open event stream (webmail.mail.live) holds
    # one of the web server's worker threads, which is given this many on top of its 16 for
    # ordinary requests; past it, pages poll every 30 s. 0: pages always poll.
    web_event_streams: int = 50
    # issue #19, several hosts. Where the gateways deliver: empty, Dovecot's LMTP unix socket
    # in DATA_DIR/run/dovecot/lmtp; "unix:/path" another socket path; "lmtps://host:port"
    # LMTP over TLS to the mail store's host (its Dovecot then listens on port, on
    # MSS_LISTEN_ADDRESS, and requires a client certificate of the trust space's CA).
    lmtp_url: str = ""
    # the gateway's LMTP client certificate and key (PEM); empty: DATA_DIR/pki/lmtp-client.crt
    # and .key, written by ``mss init`` when MSS_LMTP_URL is lmtps://
    lmtp_client_cert: str = ""
    lmtp_client_key: str = ""
    # where the webmail reaches IMAPS (and ManageSieve) and the gateway's submission port;
    # empty: 127.0.0.1 when mss listens on the loopback or everywhere, else MSS_HOSTNAME. A
    # host name or an address the server certificate names (``mss init`` adds them to it).
    imap_host: str = ""
    submission_host: str = ""
    # issue #19, several mail-store hosts: "name=address,name=address" (IP addresses), the
    # first being the default store (mailboxes with no store of their own). Empty: one store,
    # no proxying. Each store's Dovecot proxies IMAP/ManageSieve logins of mailboxes living on
    # another store; the gateways deliver to each recipient's store (mailstore.stores).
    mail_stores: str = ""
    mail_store: str = ""  # the store this host runs (mailstore role); empty: the first
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        data_dir: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, ``DATA_DIR/mss.toml``, ``MSS_*`` variables and overrides.

        Raises:
            ConfigError: an unknown key, a value of the wrong type, or an unreadable TOML file.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)} - {"extra"}
        raw_dir = data_dir or overrides.get("data_dir") or env.get(ENV_PREFIX + "DATA_DIR")
        base_dir = Path(raw_dir) if raw_dir else cls.data_dir
        toml_path = base_dir / "mss.toml"
        if toml_path.exists():
            try:
                toml_values = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(
                    f"{toml_path}: fichier de configuration illisible ({exc})"
                ) from exc
            for key, value in toml_values.items():
                if key not in names:
                    raise ConfigError(f"{toml_path}: paramètre inconnu « {key} »")
                values[key] = value
        for name in names:
            env_value = env.get(ENV_PREFIX + name.upper())
            if env_value is not None:
                values[name] = env_value
        for key, value in overrides.items():
            if key not in names:
                raise ConfigError(f"paramètre inconnu « {key} »")
            if value is not None:
                values[key] = value
        values["data_dir"] = base_dir
        settings = cls(**{k: _coerce(k, v) for k, v in values.items()})
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (the object itself is immutable)."""
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    def validate(self) -> None:
        """Raises ConfigError on a value no component could use."""
        if self.security_policy not in SECURITY_POLICIES:
            raise ConfigError(
                f"MSS_SECURITY_POLICY doit valoir l'une de {', '.join(SECURITY_POLICIES)}"
            )
        for name in ("submission_port", "submissions_port", "relay_port", "imap_port",
                     "imaps_port", "managesieve_port", "web_port", "metrics_port",
                     "oidc_standin_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"MSS_{name.upper()} : port invalide ({port})")
        if self.bad_signature not in ("refuse", "quarantine"):
            raise ConfigError("MSS_BAD_SIGNATURE doit valoir refuse ou quarantine")
        if self.undo_send_seconds not in UNDO_SEND_CHOICES:
            raise ConfigError("MSS_UNDO_SEND_SECONDS doit valoir l'une de "
                              + ", ".join(map(str, UNDO_SEND_CHOICES)))
        if self.smarthost and ":" not in self.smarthost:
            raise ConfigError("MSS_SMARTHOST doit être de la forme hôte:port")
        if not self.domain or "@" in self.domain or "." not in self.domain:
            raise ConfigError(f"MSS_DOMAIN invalide : « {self.domain} »")
        if not 0 <= self.queue_workers <= 64:
            raise ConfigError("MSS_QUEUE_WORKERS doit valoir entre 0 (passerelle qui accepte "
                              "sans remettre) et 64 (fils de remise par processus)")
        if not 0 <= self.gateway_processes <= 64:
            raise ConfigError("MSS_GATEWAY_PROCESSES doit valoir entre 0 (un par cœur) et 64")
        if not 0 <= self.web_event_streams <= 2000:
            raise ConfigError("MSS_WEB_EVENT_STREAMS doit valoir entre 0 (pas de flux : les "
                              "pages interrogent toutes les 30 s) et 2000")
        parse_lmtp_url(self.lmtp_url)
        for name in ("imap_host", "submission_host"):
            if not _HOST.match(getattr(self, name)):
                raise ConfigError(f"MSS_{name.upper()} : nom d'hôte ou adresse invalide "
                                  f"« {getattr(self, name)} »")
        if bool(self.lmtp_client_cert) != bool(self.lmtp_client_key):
            raise ConfigError("MSS_LMTP_CLIENT_CERT et MSS_LMTP_CLIENT_KEY vont ensemble")
        stores = parse_mail_stores(self.mail_stores)
        if self.mail_store and self.mail_store not in {s.name for s in stores}:
            raise ConfigError(f"MSS_MAIL_STORE « {self.mail_store} » n'est pas dans "
                              "MSS_MAIL_STORES")
        self._validate_oidc()
        self._validate_annuaire()
        self._validate_whitelist()

    def _validate_oidc(self) -> None:
        if not self.oidc_issuer:
            return
        if not self.oidc_issuer.startswith("https://"):
            raise ConfigError("MSS_OIDC_ISSUER doit être une URL https://")
        if not self.oidc_client_id:
            raise ConfigError("MSS_OIDC_CLIENT_ID est nécessaire avec MSS_OIDC_ISSUER")
        if not self.oidc_client_secret and not (self.oidc_client_cert and self.oidc_client_key):
            raise ConfigError("Pro Santé Connect : indiquez MSS_OIDC_CLIENT_SECRET, ou "
                              "MSS_OIDC_CLIENT_CERT et MSS_OIDC_CLIENT_KEY (TLS mutuel)")
        if "openid" not in self.oidc_scope.split():
            raise ConfigError("MSS_OIDC_SCOPE doit contenir « openid »")

    def _validate_annuaire(self) -> None:
        if not self.annuaire_url:
            return
        from urllib.parse import urlsplit

        url = urlsplit(self.annuaire_url)
        loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
        if not (url.scheme == "https" or (url.scheme == "http" and loopback)) or not url.hostname \
                or url.query or url.fragment:
            raise ConfigError("MSS_ANNUAIRE_URL doit être une URL https:// sans paramètres "
                              "(http:// seulement sur la boucle locale)")
        if bool(self.annuaire_client_cert) != bool(self.annuaire_client_key):
            raise ConfigError("Annuaire national : MSS_ANNUAIRE_CLIENT_CERT et "
                              "MSS_ANNUAIRE_CLIENT_KEY vont ensemble (TLS mutuel)")
        if not self.annuaire_token and not self.annuaire_client_cert:
            raise ConfigError("Annuaire national : indiquez MSS_ANNUAIRE_TOKEN, ou "
                              "MSS_ANNUAIRE_CLIENT_CERT et MSS_ANNUAIRE_CLIENT_KEY (TLS mutuel)")
        if self.annuaire_retry_base_seconds < 1:
            raise ConfigError("MSS_ANNUAIRE_RETRY_BASE_SECONDS doit valoir au moins 1")

    def _validate_whitelist(self) -> None:
        from urllib.parse import urlsplit

        url = urlsplit(self.whitelist_url)
        if self.whitelist_url and (url.scheme != "https" or not url.hostname or url.fragment
                                   or len(self.whitelist_url) > 500):
            raise ConfigError("MSS_WHITELIST_URL doit être une URL https:// (vide : liste "
                              "blanche non suivie)")
        if self.whitelist_fetch_seconds < 60:
            raise ConfigError("MSS_WHITELIST_FETCH_SECONDS doit valoir au moins 60")
        if self.peer_probe_seconds != 0 and self.peer_probe_seconds < 60:
            raise ConfigError("MSS_PEER_PROBE_SECONDS doit valoir 0 (vérification périodique "
                              "arrêtée) ou au moins 60")

    # ------------------------------------------------------------------ derived paths
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mss.db').resolve()}"

    @property
    def lmtp_endpoint(self) -> LmtpEndpoint | None:
        """MSS_LMTP_URL parsed; None: Dovecot's own unix socket in the data directory."""
        return parse_lmtp_url(self.lmtp_url)

    @property
    def effective_imap_host(self) -> str:
        """Where the webmail reaches IMAPS and ManageSieve (``MSS_IMAP_HOST``)."""
        return self.imap_host or self._same_host()

    @property
    def effective_submission_host(self) -> str:
        """Where the webmail and Dovecot's vacation replies reach the gateway's submission
        port (``MSS_SUBMISSION_HOST``)."""
        return self.submission_host or self._same_host()

    def _same_host(self) -> str:
        """Loopback when mss listens there or everywhere (the server certificate names
        127.0.0.1), else MSS_HOSTNAME, the name the server certificate is issued for."""
        if self.listen_address in ("", "*", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
            return "127.0.0.1"
        return self.hostname

    @property
    def stores(self) -> tuple[MailStore, ...]:
        """``MSS_MAIL_STORES`` parsed; empty: one mail store, no proxying."""
        return parse_mail_stores(self.mail_stores)

    @property
    def own_store(self) -> str:
        """The name of the store this host runs (``MSS_MAIL_STORE``, else the first), or ""
        with one store."""
        stores = self.stores
        return (self.mail_store or stores[0].name) if stores else ""

    @property
    def lmtp_client_pair(self) -> tuple[Path, Path]:
        """The gateway's LMTP client certificate and key (``MSS_LMTP_CLIENT_CERT``/``_KEY``)."""
        if self.lmtp_client_cert:
            return Path(self.lmtp_client_cert), Path(self.lmtp_client_key)
        return self.pki_dir / "lmtp-client.crt", self.pki_dir / "lmtp-client.key"

    @property
    def effective_gateway_processes(self) -> int:
        """``gateway_processes``, 0 resolved: one per core this process may run on, on
        PostgreSQL. On SQLite one: several processes share its queue safely (``BEGIN
        IMMEDIATE`` and a busy timeout, ``core.db``) but each message's durable commit holds
        its single writer's lock, and bench/relay.py measured 2 processes at 1.04× one."""
        if self.gateway_processes:
            return self.gateway_processes
        if not self.effective_database_url.startswith("postgresql"):
            return 1
        return max(len(os.sched_getaffinity(0)), 1)

    @property
    def effective_operator_contact(self) -> str:
        """The operator's contact given to professionals (``MSS_OPERATOR_CONTACT``)."""
        return self.operator_contact.strip() or f"support@{self.domain}"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    @property
    def cards_dir(self) -> Path:
        return self.data_dir / "cards"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    def secret(self) -> bytes:
        """The key that protects private keys at rest: MSS_SECRET_KEY, else DATA_DIR/secret.key
        (created with mode 0600 on first use)."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
        return path.read_text().strip().encode()


# a DNS name or an IPv4/IPv6 address, nothing else (no port, no scheme, no space); empty allowed
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45})?$")


@dataclass(frozen=True)
class LmtpEndpoint:
    """Where the gateways deliver (MSS_LMTP_URL): a unix socket ``path``, or ``host``:``port``
    over TLS (``lmtps``: implicit TLS, client certificate required by the mail store)."""

    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def tls(self) -> bool:
        return not self.path


def parse_lmtp_url(url: str) -> LmtpEndpoint | None:
    """``unix:/absolute/path`` or ``lmtps://host:port``; None for an empty value.

    Raises:
        ConfigError: any other form (plain ``lmtp://`` included: no LMTP without TLS between
            hosts).
    """
    if not url:
        return None
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if not path.startswith("/") or "\0" in path or len(path) > 100:
            raise ConfigError(f"MSS_LMTP_URL : chemin de socket invalide « {url} » (attendu "
                              "unix:/chemin/absolu, 100 caractères au plus)")
        return LmtpEndpoint(path=path)
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme != "lmtps" or not parts.hostname or port is None \
            or not 0 < port < 65536 or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password \
            or not _HOST.match(parts.hostname):
        raise ConfigError(f"MSS_LMTP_URL invalide « {url} » : attendu unix:/chemin ou "
                          "lmtps://hôte:port (LMTP sur TLS, jamais en clair entre hôtes)")
    return LmtpEndpoint(host=parts.hostname, port=port)


STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class MailStore:
    """One mail-store host of ``MSS_MAIL_STORES``: its name (what ``mailbox.mail_store``
    holds) and the IP address the other stores and the gateways reach it at."""

    name: str
    address: str


def parse_mail_stores(value: str) -> tuple[MailStore, ...]:
    """``name=address[,name=address…]``; () for an empty value.

    Raises:
        ConfigError: a malformed entry, a name used twice, an address that is not an IP
            address (Dovecot's allow_real_nets and login_trusted_networks take addresses).
    """
    import ipaddress

    stores: list[MailStore] = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        name, sep, address = (p.strip() for p in entry.partition("="))
        try:
            ipaddress.ip_address(address)
        except ValueError:
            address = ""
        if not sep or not STORE_NAME.match(name) or not address:
            raise ConfigError(f"MSS_MAIL_STORES : entrée invalide « {entry} » (attendu "
                              "nom=adresse IP, par exemple store1=198.18.0.2 ; nom en "
                              "minuscules, chiffres et tirets, 32 caractères au plus)")
        if name in {s.name for s in stores}:
            raise ConfigError(f"MSS_MAIL_STORES : le nom « {name} » apparaît deux fois")
        stores.append(MailStore(name, address))
    return tuple(stores)


_HINTS = typing.get_type_hints(Settings)


def _coerce(name: str, value: Any) -> Any:
    """Turn an environment/TOML string into the field's type, with a clear error."""
    hint = _HINTS.get(name)
    try:
        if hint is Path:
            return Path(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is bool:
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "oui", "on")
        if hint is str:
            return str(value)
        if isinstance(hint, types.GenericAlias) or hint is None:
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"MSS_{name.upper()} : valeur invalide « {value} »") from exc
    return value
