"""`mss dns`: the DNS records an operator publishes for its mail domain (MX, RFC 6186 / RFC 8314
SRV records, the names clients ask for their autoconfiguration, CAA), in zone-file syntax with
French comments; ``--check`` resolves each one and says présent / absent / différent.

The records come from the settings only (``expected_records``) and the comparison is a pure
function over a ``Lookup`` (``check``): the command is the adapter that prints them and asks
dnspython, against the system's resolver or ``--server IP[:PORT]``.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import click
import dns.exception
import dns.name
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.CAA import CAA

from core.errors import MssError
from core.settings import Settings
from mss.app import app_of

TTL = 3600
CA_PLACEHOLDER = "a-renseigner.invalid"  # RFC 2606: .invalid never resolves
_ADDRESS = re.compile(r"[^@\s\"]+@[A-Za-z0-9.-]+")


class Status(StrEnum):
    PRESENT = "présent"
    ABSENT = "absent"
    DIFFERENT = "différent"
    ERROR = "erreur"


@dataclass(frozen=True)
class Record:
    """One record to publish. ``kind``: ``exact`` (this value among those found), ``alias`` (a
    CNAME to ``value``, or A/AAAA records equal to its own) or ``issuer`` (a CAA ``issue``
    whose value the operator chooses: any that allows issuance)."""

    name: str  # absolute, with its final dot
    rtype: str
    value: str
    comment: tuple[str, ...] = ()  # French lines printed above it
    kind: str = "exact"

    def line(self) -> str:
        return f"{self.name:<34} {TTL} IN {self.rtype:<5} {self.value}"


@dataclass(frozen=True)
class Verdict:
    record: Record
    status: Status
    found: tuple[str, ...] = ()
    detail: str = ""


class ResolutionError(Exception):
    """A question the DNS did not answer (time-out, SERVFAIL, refusal): not an absence."""


# (absolute name, type) → the values found in presentation form, () when there are none.
Lookup = Callable[[str, str], tuple[str, ...]]


def _srv(settings: Settings, service: str, port: int, priority: int, *comment: str) -> Record:
    name = f"{service}._tcp.{settings.domain}."
    if port <= 0:  # not listening: say so (RFC 2782, target ".")
        return Record(name, "SRV", "0 0 0 .", comment)
    return Record(name, "SRV", f"{priority} 1 {port} {settings.hostname}.", comment)


def _not_public(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
        return True
    except ValueError:
        return "." not in hostname.strip(".") or hostname.endswith(".localhost")


def expected_records(settings: Settings) -> list[Record]:
    """What ``settings.domain`` needs in the DNS for peers and mail clients to find this
    operator, in the order they are printed."""
    d, h = settings.domain, settings.hostname
    relay = ("" if settings.relay_port == 25 else
             f" ; il doit mener au relais mss (MSS_RELAY_PORT = {settings.relay_port})")
    records = [
        Record(f"{d}.", "MX", f"10 {h}.", (
            "Courrier des autres opérateurs de l'espace de confiance (RFC 5321 §5.1). La cible",
            "a des enregistrements A/AAAA, pas un CNAME (RFC 2181 §10.3). Les pairs se",
            f"connectent au port 25{relay}.")),
        _srv(settings, "_submissions", settings.submissions_port, 0,
             "Soumission et consultation pour les logiciels de messagerie (RFC 6186) : le TLS",
             "implicite (_submissions, RFC 8314 ; _imaps) est préféré à STARTTLS, d'où son",
             "numéro de priorité plus petit."),
        _srv(settings, "_submission", settings.submission_port, 10),
        _srv(settings, "_imaps", settings.imaps_port, 0),
        _srv(settings, "_imap", settings.imap_port, 10),
        _srv(settings, "_sieve", settings.managesieve_port, 0,
             "ManageSieve (RFC 5804 §1.8) : filtres et réponse automatique depuis un client",
             "de messagerie (STARTTLS obligatoire avant toute authentification)."),
        Record(f"_pop3._tcp.{d}.", "SRV", "0 0 0 .", (
            "POP3 n'est pas proposé : la cible « . » dit que le service n'existe pas",
            "(RFC 2782), les clients n'ont pas à l'essayer (RFC 6186).")),
        Record(f"_pop3s._tcp.{d}.", "SRV", "0 0 0 ."),
        Record(f"autoconfig.{d}.", "CNAME", f"{h}.", (
            f"Autoconfiguration : Thunderbird lit https://autoconfig.{d}/mail/config-v1.1.xml,",
            f"Outlook https://autodiscover.{d}/autodiscover/autodiscover.xml ; le webmail les",
            "sert, sur le port 443 (les clients n'en essaient pas d'autre) : son certificat",
            "HTTPS doit couvrir ces deux noms. Un CNAME, ou des A/AAAA identiques à ceux du",
            "serveur."), kind="alias"),
        Record(f"autodiscover.{d}.", "CNAME", f"{h}.", kind="alias"),
        _srv(settings, "_autodiscover", settings.web_port, 0,
             "Autodiscover par SRV (port du webmail, MSS_WEB_PORT) ; Thunderbird n'en garde que",
             "le nom et interroge le port 443."),
        Record(f"{d}.", "CAA", f'0 issue "{CA_PLACEHOLDER}"', (
            "CAA (RFC 8659) : les AC publiques autorisées pour ce domaine. Seuls les",
            "certificats d'une AC publique en dépendent (serveur : webmail, autoconfiguration,",
            "soumission, IMAP) ; ceux de l'IGC Santé (relais) n'y sont pas soumis.",
            f"Remplacez {CA_PLACEHOLDER} par le domaine de votre AC (ex. letsencrypt.org).",
            "Ne publiez pas « 0 issue \";\" » : il interdirait aussi le certificat du webmail."),
            kind="issuer"),
    ]
    contact = settings.effective_operator_contact.strip()
    if _ADDRESS.fullmatch(contact):
        records.append(Record(f"{d}.", "CAA", f'0 iodef "mailto:{contact}"'))
    return records


def zone(settings: Settings) -> str:
    """The records with their comments, ready to paste into the zone of ``settings.domain``."""
    lines = [f"; Zone DNS du domaine de messagerie {settings.domain} (générée par « mss dns » ;",
             "; vérification : « mss dns --check »). Serveur : "
             f"{settings.hostname} (MSS_HOSTNAME), avec ses A/AAAA."]
    if _not_public(settings.hostname):
        lines += [f"; ATTENTION : MSS_HOSTNAME vaut « {settings.hostname} », qui n'est pas un nom "
                  "public :", "; indiquez le nom DNS du serveur avant de publier ces "
                  "enregistrements."]
    for record in expected_records(settings):
        if record.comment:
            lines += ["", *(f"; {text}" for text in record.comment)]
        lines.append(record.line())
    return "\n".join(lines) + "\n"


def _rdata(rtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text("IN", rtype, text)


def _matches(record: Record, found: tuple[str, ...]) -> bool:
    values = [_rdata(record.rtype, text) for text in found]
    if record.kind == "issuer":  # any CAA "issue" that lets some CA issue
        return any(isinstance(v, CAA) and v.tag == b"issue" and v.value.strip() not in (b"", b";")
                   for v in values)
    return _rdata(record.rtype, record.value) in values


def _by_address(record: Record, lookup: Lookup) -> Verdict:
    """An alias published as A/AAAA records: the same addresses as its target's."""
    def addresses(name: str) -> set[str]:
        return set(lookup(name, "A")) | set(lookup(name, "AAAA"))

    own = addresses(record.name)
    if not own:
        return Verdict(record, Status.ABSENT)
    if own == addresses(record.value):
        return Verdict(record, Status.PRESENT, tuple(sorted(own)),
                       f"A/AAAA identiques à ceux de {record.value}")
    return Verdict(record, Status.DIFFERENT, tuple(sorted(own)),
                   f"attendu : un CNAME vers {record.value}, ou ses A/AAAA")


def verdict(record: Record, lookup: Lookup) -> Verdict:
    """How ``record`` stands in the DNS that ``lookup`` asks."""
    try:
        found = lookup(record.name, record.rtype)
        if not found and record.kind == "alias":
            return _by_address(record, lookup)
    except ResolutionError as exc:
        return Verdict(record, Status.ERROR, detail=str(exc))
    if not found:
        return Verdict(record, Status.ABSENT)
    status = Status.PRESENT if _matches(record, found) else Status.DIFFERENT
    return Verdict(record, status, found)


def check(records: Iterable[Record], lookup: Lookup) -> list[Verdict]:
    """Each record's verdict; each (name, type) is asked once."""
    answers: dict[tuple[str, str], tuple[str, ...] | ResolutionError] = {}

    def cached(name: str, rtype: str) -> tuple[str, ...]:
        key = (name.lower(), rtype)
        if key not in answers:
            try:
                answers[key] = lookup(name, rtype)
            except ResolutionError as exc:
                answers[key] = exc
        answer = answers[key]
        if isinstance(answer, ResolutionError):
            raise answer
        return answer

    return [verdict(record, cached) for record in records]


def dns_lookup(server: tuple[str, int] | None, timeout: float) -> Lookup:
    """A ``Lookup`` through dnspython: ``server`` (address, port), else the system's resolver.

    Raises:
        MssError: no ``server`` and no usable system configuration (/etc/resolv.conf).
    """
    try:
        resolver = dns.resolver.Resolver(configure=server is None)
    except dns.exception.DNSException as exc:
        raise MssError(f"résolveur DNS du système inutilisable ({exc}) : indiquez --server IP"
                       ) from None
    if server is not None:
        resolver.nameservers, resolver.port = [server[0]], server[1]
    resolver.timeout = resolver.lifetime = timeout
    where = f"{server[0]}:{server[1]}" if server else "le résolveur du système"

    def lookup(name: str, rtype: str) -> tuple[str, ...]:
        try:
            answer = resolver.resolve(dns.name.from_text(name), rtype, search=False,
                                      raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return ()
        except dns.exception.Timeout:
            raise ResolutionError(f"pas de réponse de {where} en {timeout:g} s") from None
        except dns.resolver.NoNameservers:
            raise ResolutionError(f"{where} refuse de répondre (SERVFAIL ou REFUSED)") from None
        except dns.exception.DNSException as exc:
            raise ResolutionError(f"{where} : {exc}") from None
        return tuple(rdata.to_text() for rdata in answer.rrset or ())

    return lookup


def parse_server(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` → (address, port); ValueError otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    address = ipaddress.ip_address(host)
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(text)
    return str(address), int(port)


def _server_option(_ctx: click.Context, _param: click.Parameter,
                   value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_server(value)
    except ValueError:
        raise click.BadParameter("attendu : IP, IP:PORT ou [IPv6]:PORT") from None


def _print(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        r = v.record
        click.echo(f"{v.status.value:<10} {r.name} {r.rtype} {r.value}")
        if v.status is Status.DIFFERENT:
            click.echo(f"{'':<10} trouvé : {' | '.join(v.found)}")
        if v.detail:
            click.echo(f"{'':<10} {v.detail}")
    counts = {s: sum(v.status is s for v in verdicts) for s in Status}
    click.echo(f"Bilan : {counts[Status.PRESENT]} présent(s), {counts[Status.ABSENT]} "
               f"absent(s), {counts[Status.DIFFERENT]} différent(s), {counts[Status.ERROR]} "
               "erreur(s) de résolution.")


@click.command("dns")
@click.option("--check", "verify", is_flag=True,
              help="Interroge le DNS et dit, pour chaque enregistrement, s'il est publié.")
@click.option("--server", metavar="IP[:PORT]", callback=_server_option,
              help="Serveur DNS à interroger avec --check (défaut : le résolveur du système).")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True,
              help="Délai d'attente d'une réponse, en secondes.")
@click.pass_context
def dns_cmd(ctx: click.Context, verify: bool, server: tuple[str, int] | None,
            timeout: float) -> None:
    """Enregistrements DNS à publier pour le domaine (MX, SRV, autoconfiguration, CAA)."""
    settings = app_of(ctx).settings
    if not verify:
        if server is not None:
            raise click.UsageError("--server ne sert qu'avec --check")
        click.echo(zone(settings), nl=False)
        return
    where = f"{server[0]}:{server[1]}" if server else "le résolveur du système"
    click.echo(f"Vérification des enregistrements de {settings.domain} auprès de {where} :")
    verdicts = check(expected_records(settings), dns_lookup(server, timeout))
    _print(verdicts)
    sys.exit(0 if all(v.status is Status.PRESENT for v in verdicts) else 1)


def register(main: click.Group) -> None:
    main.add_command(dns_cmd)
