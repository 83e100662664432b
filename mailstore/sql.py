"""Dovecot's SQL passdb/userdb over mss's own tables: the trust-space database stays the only
source of truth for who may log in (SQLite or PostgreSQL, whichever mss uses).

Why SQL and not a checkpassword helper: Dovecot verifies mss's argon2id PHC strings itself
(``{ARGON2ID}`` through libsodium; ``trust_space.accounts`` hashes with ``p=1`` for that), in C,
in its auth worker, with no process spawned per login; the refusal rules are a ``WHERE`` clause
that reads the same columns as ``trust_space.accounts``. A checkpassword helper would start a
Python interpreter (SQLAlchemy, argon2) for every IMAP login.

Rules encoded here (keep them in step with ``trust_space.app_passwords.authenticate_protocol``,
the gateway's SMTP AUTH):

- password (PLAIN/LOGIN): the login (mailbox address) or the CPS national id ("8"+RPPS,
  "0"+ADELI) of an active professional or applicative account, not locked
  (``locked_until`` in the future), whose own mailbox is local and published, with an
  **application password** (``trust_space.app_passwords``; issue #14: a personal mailbox's web
  password is not an IMAP/SMTP password). The account's own password is accepted too for an
  applicative account (practice software has no web log-in: that password is its protocol
  credential) and, only when ``imap_smtp_web_password`` is on, for a person — never for an
  operator (``is_operator``), whose password is only half of a TOTP log-in;
- certificate (EXTERNAL): Dovecot gives the ``serialNumber`` of a client certificate that chains
  to mss's CA and is not on its CRL; a national id maps to that professional's account, anything
  else to the applicative account of that login. A CN is never trusted. Locks do not apply (they
  answer password guessing, which a certificate is not);
- userdb: every local mailbox not closed, with its quota (``Mailbox.quota_mb`` or the default).

Both passdbs also require a TLS session (``%{secured}``), see ``_TLS_ONLY``. ``%u`` is
lower-cased by ``auth_username_format`` and SQL-escaped by Dovecot.

Several mail stores (``MSS_MAIL_STORES``, issue #19): every store runs this same passdb, which
also returns Dovecot's proxy fields (``Proxying``) when the mailbox lives on another store
(``mailbox.mail_store``). The store a client reaches checks the credentials itself, whatever
they are (password, application password, certificate), then logs in to the mailbox's store
as the master user ``mss-proxy`` over TLS checked against the trust space's CA; a webmail
session (master user ``webmail``) is handed over as such (Dovecot forwards the master login
itself when the passdb names no ``master``), so the remote store sees the webmail as locally.
The userdb answers only for the mailboxes of this store: a delivery or ``doveadm`` aimed at
the wrong store finds no user instead of writing a second copy of the mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url

from core.errors import ConfigError
from core.settings import MailStore
from trust_space.app_passwords import PREFIX_LENGTH

# A local mailbox that may be opened: published, on this operator.
_OWN_MAILBOX = (
    "EXISTS (SELECT 1 FROM mailbox m WHERE m.operator_id IS NULL AND m.state = 'published' "
    "AND (m.id = a.mailbox_id OR m.address = a.login))"
)
_NATIONAL_ID = "('8' || p.rpps = '%u' OR '0' || p.adeli = '%u')"
# Dovecot counts a connection from the host's own address as "secured" even without TLS (and
# then allows LOGIN in clear over it); %{secured} is "TLS" only for TLS sessions: mss wants TLS.
_TLS_ONLY = "'%{secured}' = 'TLS'"
_NOT_LOCKED = {
    # UTCDateTime is stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) on SQLite: julianday() reads it.
    "sqlite": "(a.locked_until IS NULL OR julianday(a.locked_until) <= julianday('now'))",
    "pgsql": "(a.locked_until IS NULL OR a.locked_until <= now())",
}


@dataclass(frozen=True)
class SqlSource:
    """The Dovecot SQL driver name and its ``connect`` string for mss's database."""

    driver: str  # "sqlite" or "pgsql"
    connect: str


def sql_source(database_url: str) -> SqlSource:
    """Translate an SQLAlchemy URL into Dovecot's driver and connect string.

    Raises:
        ConfigError: a database Dovecot has no driver for, or an SQLite URL without a file.
    """
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError("Dovecot a besoin d'un fichier SQLite (pas d'une base en mémoire)")
        return SqlSource("sqlite", url.database)
    if backend == "postgresql":
        return SqlSource("pgsql", _libpq_conninfo(url))
    raise ConfigError(f"base de données non prise en charge par Dovecot : {backend}")


def _libpq_conninfo(url: URL) -> str:
    """A libpq ``key=value`` string (values quoted as libpq wants) from a PostgreSQL URL."""
    query = {k: v if isinstance(v, str) else v[0] for k, v in url.query.items()}
    pairs = {"host": url.host or query.get("host"), "port": url.port, "dbname": url.database,
             "user": url.username, "password": url.password}
    pairs.update({k: query[k] for k in ("sslmode", "sslrootcert", "sslcert", "sslkey")
                  if k in query})
    return " ".join(f"{k}={_quote(str(v))}" for k, v in pairs.items() if v)


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:@" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


PROXY_MASTER = "mss-proxy"  # the master user one store logs in to another with


@dataclass(frozen=True)
class Proxying:
    """What the passdb needs to proxy a login to the mailbox's store: the stores, the one
    this Dovecot runs, the ports every store listens on and ``mss-proxy``'s secret."""

    stores: tuple[MailStore, ...]
    own: str
    imaps_port: int
    sieve_port: int
    secret: str

    def store_of(self, column: str) -> str:
        """The SQL expression of a mailbox's store name (NULL is the default, first one)."""
        return f"COALESCE({column}, '{self.stores[0].name}')"

    def columns(self, column: str) -> str:
        """The passdb's proxy fields, NULL (so absent) for a mailbox of this store. ``host``
        only ever comes with ``proxy``: alone, Dovecot would send a login referral."""
        store = self.store_of(column)
        remote = f"{store} <> '{self.own}'"
        sieve = "'%{service}' = 'sieve'"
        hosts = " ".join(f"WHEN '{s.name}' THEN '{s.address}'" for s in self.stores)
        # no `master`/`pass` for a master-user login (the webmail): Dovecot then forwards the
        # master user and the secret it was given (auth-request-handler.c, "the master
        # username needs to be forwarded").
        first = f"{remote} AND '%{{master_user}}' = ''"
        return (f", CASE WHEN {remote} THEN 'Y' END AS proxy"
                f", CASE WHEN {remote} THEN CASE {store} {hosts} END END AS host"
                f", CASE WHEN {remote} THEN CASE WHEN {sieve} THEN '{self.sieve_port}' "
                f"ELSE '{self.imaps_port}' END END AS port"
                f", CASE WHEN {remote} AND NOT {sieve} THEN 'Y' END AS ssl"
                f", CASE WHEN {remote} AND {sieve} THEN 'Y' END AS starttls"
                f", CASE WHEN {first} THEN '{PROXY_MASTER}' END AS master"
                f", CASE WHEN {first} THEN '{self.secret}' END AS pass")

    def here(self, column: str) -> str:
        """The SQL condition: a mailbox of this store."""
        return f"{self.store_of(column)} = '{self.own}'"


# The store of an account's own mailbox (its login is the mailbox's address).
_ACCOUNT_STORE = ("(SELECT mb.mail_store FROM mailbox mb WHERE mb.address = a.login "
                  "AND mb.operator_id IS NULL)")


# An application password is "<prefix>-<secret>": its first 8 characters pick at most one row
# (unique column) in the same single look-up, and Dovecot compares SHA-256 of the whole
# password in C. ``%w`` is the plaintext password, SQL-escaped by Dovecot like every variable.
_APP_PASSWORD = (
    "LEFT JOIN app_password ap ON ap.account_id = a.id AND ap.revoked_at IS NULL "
    f"AND ap.prefix = substr('%w', 1, {PREFIX_LENGTH}) "
    f"AND substr('%w', {PREFIX_LENGTH + 1}, 1) = '-'"
)


def password_query(driver: str, *, web_password: bool = False,
                   proxying: Proxying | None = None) -> str:
    """The passdb query for PLAIN/LOGIN, also the target check of master-user logins.

    One row per account: the application password's hash when ``%w`` starts with one of the
    account's active prefixes, else the account password's hash where it is allowed (see the
    module's docstring), else NULL — a NULL password refuses a PLAIN/LOGIN ("no password
    returned") but still lets a master-user login (the webmail) open the mailbox, for which
    Dovecot skips the password check and only needs the row; an organisational mailbox
    has such a row too, so the master user can open it (never a password login).
    """
    # MSS_IMAP_SMTP_WEB_PASSWORD on: every account's own password but an operator's.
    own = "NOT a.is_operator" + ("" if web_password else " AND a.kind = 'applicative'")
    proxy = proxying.columns(_ACCOUNT_STORE) if proxying else ""
    org_proxy = proxying.columns("m.mail_store") if proxying else ""
    return (
        "SELECT a.login AS \"user\", CASE "
        "WHEN ap.id IS NOT NULL AND NOT a.is_operator THEN '{SHA256.HEX}' || ap.secret_hash "
        f"WHEN {own} AND a.password_hash IS NOT NULL THEN '{{ARGON2ID}}' || a.password_hash "
        f"ELSE NULL END AS password{proxy} "
        "FROM account a LEFT JOIN professional p ON p.id = a.professional_id "
        f"{_APP_PASSWORD} "
        f"WHERE (a.login = '%u' OR {_NATIONAL_ID}) "
        "AND a.kind IN ('professional', 'applicative') AND a.state = 'active' "
        f"AND {_NOT_LOCKED[driver]} AND {_OWN_MAILBOX} AND {_TLS_ONLY} "
        # An organisational mailbox has no account and no password: this row only lets the
        # webmail's master user open it (its Sieve script, mailstore.managesieve).
        f"UNION ALL SELECT m.address AS \"user\", NULL AS password{org_proxy} FROM mailbox m "
        "WHERE m.address = '%u' AND m.kind = 'organisational' AND m.operator_id IS NULL "
        f"AND m.state = 'published' AND {_TLS_ONLY}"
    )


def external_query(proxying: Proxying | None = None) -> str:
    """The passdb query for SASL EXTERNAL: ``%u`` is the certificate's serialNumber."""
    proxy = proxying.columns(_ACCOUNT_STORE) if proxying else ""
    return (
        f"SELECT a.login AS \"user\", NULL AS password, 'Y' AS nopassword{proxy} "
        "FROM account a LEFT JOIN professional p ON p.id = a.professional_id "
        "WHERE a.state = 'active' AND ("
        f"(a.kind = 'professional' AND {_NATIONAL_ID}) "
        "OR (a.kind = 'applicative' AND a.login = '%u')) "
        f"AND {_OWN_MAILBOX} AND {_TLS_ONLY}"
    )


def token_proxy_query(proxying: Proxying) -> str:
    """The passdb after ``passdb oauth2`` (``mailstore.oauth``) with several stores: Dovecot
    runs it only once the token was accepted (``skip = unauthenticated``, the token's passdb
    ending in ``continue-ok``) and takes from it the proxy fields of an account whose mailbox
    lives on another store; no row (a mailbox of this store) leaves the token's success as
    it was."""
    return (
        f"SELECT a.login AS \"user\", NULL AS password, 'Y' AS nopassword"
        f"{proxying.columns(_ACCOUNT_STORE)} FROM account a WHERE a.login = '%u' "
        f"AND {proxying.store_of(_ACCOUNT_STORE)} <> '{proxying.own}'"
    )


def user_query(default_quota_mb: int, *, master_plugins: str = "",
               master_user: str = "", proxying: Proxying | None = None) -> str:
    """The userdb query: a local mailbox that is not closed, with its storage quota.

    ``master_plugins``: the ``mail_plugins`` of an IMAP session opened by ``master_user`` (the
    webmail, ``mailstore.credentials``): only its sessions search through the full-text index
    (``mailstore.fts``). For any other lookup (a client's own login, the webmail's ManageSieve,
    LMTP, the indexer, doveadm) the column is NULL, which Dovecot skips, so the
    configuration's plugins apply."""
    plugins = ""
    if master_plugins:
        plugins = (f", CASE WHEN '%{{master_user}}' = '{master_user}' "
                   f"AND '%{{service}}' = 'imap' THEN '{master_plugins}' END AS mail_plugins")
    here = f" AND {proxying.here('m.mail_store')}" if proxying else ""
    return (
        "SELECT m.address AS \"user\", "
        f"'*:storage=' || COALESCE(m.quota_mb, {int(default_quota_mb)}) || 'M' AS quota_rule"
        f"{plugins} "
        "FROM mailbox m WHERE m.address = '%u' AND m.operator_id IS NULL "
        f"AND m.state <> 'closed'{here}"
    )


def iterate_query(proxying: Proxying | None = None) -> str:
    """Every local mailbox (``doveadm … -A``), of this store with several."""
    here = f" AND {proxying.here('mail_store')}" if proxying else ""
    return ("SELECT address AS \"user\" FROM mailbox WHERE operator_id IS NULL "
            f"AND state <> 'closed'{here}")


def passdb_file(source: SqlSource, query: str) -> str:
    """The text of a Dovecot ``dovecot-sql.conf.ext`` file for one passdb."""
    return (f"driver = {source.driver}\nconnect = {source.connect}\n"
            f"password_query = {query}\n")


def userdb_file(source: SqlSource, default_quota_mb: int, *, master_plugins: str = "",
                master_user: str = "", proxying: Proxying | None = None) -> str:
    """The text of the userdb's ``dovecot-sql.conf.ext`` file."""
    query = user_query(default_quota_mb, master_plugins=master_plugins, master_user=master_user,
                       proxying=proxying)
    return (f"driver = {source.driver}\nconnect = {source.connect}\n"
            f"user_query = {query}\n"
            f"iterate_query = {iterate_query(proxying)}\n")
