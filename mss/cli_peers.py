"""``mss peers`` (``mss peer``, its first name, kept working): the peer operators.
``trust FILE…`` trusts a peer's certification authority. Their health (issue #20): ``check``
probes every whitelisted peer's relay now (``gateway.probe.check``), ``status`` prints the
last recorded results without probing. Both print a French table (``--json``: the results as
JSON) and exit 1 when a peer fails, for a cron job."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from core import audit
from core.errors import MssError
from core.localtime import french_datetime
from gateway import probe
from gateway.probe import TIMEOUT
from mss.app import app_of
from peers import health
from peers.results import EXPIRY_WARNING_DAYS, FAILURE_FR, Failure, ProbeResult

EXIT_FAILED = 1
_CHAIN = {"valid": "valide", "invalid": "INVALIDE", "": "—"}
_REVOCATION = {"good": "non révoqué", "revoked": "RÉVOQUÉ", "unchecked": "non vérifiée",
               "": "—"}


def register(main: click.Group) -> None:
    main.add_command(peer)
    # `mss peer …`, the group's first name, still works (hidden from the help: one group).
    main.add_command(click.Group("peer", commands=peer.commands, hidden=True, help=peer.help))


@click.group("peers")
def peer() -> None:
    """Opérateurs pairs : santé de leurs relais (check, status), autorités de certification
    de confiance (trust). « mss peer » est le même groupe."""


@peer.command("trust")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Nom du fichier dans pki/peers/ (défaut : celui du fichier).")
@click.pass_context
def peer_trust(ctx: click.Context, files: tuple[Path, ...], name: str | None) -> None:
    """Fait confiance à l'autorité d'un pair : copie son ca.pem (et son crl.pem) dans
    DATA_DIR/pki/peers/ ; le relais la prend en compte sans redémarrage."""
    from certs.validation import TrustStore

    app = app_of(ctx)
    peers = app.settings.pki_dir / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        data = path.read_bytes()
        if b"BEGIN CERTIFICATE" in data:
            TrustStore.from_pem(data)  # a readable bundle with a root, or ConfigError
        elif b"BEGIN X509 CRL" not in data:
            raise MssError(f"{path} : ni certificat ni liste de révocation PEM")
        target = peers / (f"{name}-{index}.pem" if name else path.name)
        shutil.copyfile(path, target)
        click.echo(f"Copié : {target}")
    with app.db.transaction() as session:
        audit.record(session, actor="mss-cli", action="peer.trust", target=name or "",
                     outcome="ok", request={"files": [p.name for p in files]})


def _days(r: ProbeResult, now: datetime) -> float | None:
    return (r.not_after - now).total_seconds() / 86400 if r.not_after else None


def _expiry(days: float | None) -> str:
    if days is None:
        return "—"
    if days < 0:
        return f"EXPIRÉ ({-days:.0f} j)"
    return f"{days:.0f} j" + (" (ATTN)" if days < EXPIRY_WARNING_DAYS else "")


def _dn(r: ProbeResult) -> str:
    return {True: "conforme", False: "NON CONFORME", None: "—"}[r.dn_match]


def _row(r: ProbeResult, now: datetime, with_time: bool) -> list[str]:
    row = [r.domain, f"{r.host}:{r.port}", "OK" if r.ok else "ÉCHEC"]
    if with_time:
        row.append(french_datetime(r.at))
    return row + [f"{r.tls_version} {r.cipher}".strip() or "—", _dn(r), _CHAIN[r.chain],
                  _REVOCATION[r.revocation], _expiry(_days(r, now))]


def _print_table(results: Sequence[ProbeResult], never: Sequence[str], with_time: bool) -> None:
    now = datetime.now(UTC)
    head = ["Domaine", "Relais", "État"] + (["Vérifié le"] if with_time else []) + [
        "TLS", "DN", "Chaîne", "Révocation", "Expire dans"]
    rows = [_row(r, now, with_time) for r in results]
    rows += [[d, "—", "jamais vérifié"] + ["—"] * (len(head) - 3) for d in never]
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    click.echo("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    shown = {r.domain: r for r in results}
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        r = shown.get(row[0])
        if r is not None and not r.ok:
            label = FAILURE_FR.get(Failure(r.failure), r.failure) if r.failure else "échec"
            click.echo(f"    → {label} : {r.detail}")
        if r is not None and r.revocation == "unchecked":
            click.echo(f"    révocation non vérifiée : {r.revocation_detail}")


def _as_json(results: Sequence[ProbeResult], never: Sequence[str]) -> str:
    now = datetime.now(UTC)
    found = [{"domain": r.domain, "relay": f"{r.host}:{r.port}", "at": r.at.isoformat(),
              "ok": r.ok, "failure": r.failure, "detail": r.detail,
              "tls_version": r.tls_version, "cipher": r.cipher, "subject_dn": r.subject_dn,
              "expected_dn": r.expected_dn, "dn_match": r.dn_match, "chain": r.chain,
              "revocation": r.revocation, "revocation_detail": r.revocation_detail,
              "not_after": r.not_after.isoformat() if r.not_after else None,
              "days_left": round(d, 3) if (d := _days(r, now)) is not None else None}
             for r in results]
    found += [{"domain": d, "ok": None, "at": None} for d in never]
    return json.dumps(found, ensure_ascii=False, indent=2)


def _summary(results: Sequence[ProbeResult], never: Sequence[str]) -> str:
    failed = [r.domain for r in results if not r.ok]
    text = (f"{len(results)} pair(s) : {len(results) - len(failed)} en bon état, "
            f"{len(failed)} en échec")
    if never:
        text += f", {len(never)} jamais vérifié(s)"
    return text + (f" ({', '.join(failed)})." if failed else ".")


@peer.command("check")
@click.option("--domain", help="Un seul domaine de la liste blanche (défaut : tous les pairs).")
@click.option("--json", "as_json", is_flag=True, help="Résultats en JSON sur la sortie standard.")
@click.option("--timeout", default=TIMEOUT, show_default=True, type=click.FloatRange(1, 60),
              help="Délai accordé à chaque relais (secondes).")
@click.pass_context
def peers_check(ctx: click.Context, domain: str | None, as_json: bool, timeout: float) -> None:
    """Vérifie maintenant le relais de chaque pair de la liste blanche : connexion, STARTTLS
    avec notre certificat d'opérateur, certificat du pair (chaîne, révocation, DN de la liste
    blanche, expiration), puis QUIT — aucun message envoyé. Résultats enregistrés (page
    Pairs, métriques) ; code de sortie 1 si un pair est en échec."""
    app = app_of(ctx)
    if not as_json:
        click.echo("Vérification des relais des pairs …", err=True)
    results = probe.check(app.db, app.settings, domains=[domain] if domain else None,
                                requested_by="cli", actor="mss-cli", details={"via": "cli"},
                                timeout=timeout)
    if as_json:
        click.echo(_as_json(results, []))
    elif not results:
        click.echo("Aucun pair dans la liste blanche : rien à vérifier.")
    else:
        _print_table(results, [], with_time=False)
        click.echo(_summary(results, []))
    sys.exit(EXIT_FAILED if any(not r.ok for r in results) else 0)


@peer.command("status")
@click.option("--json", "as_json", is_flag=True, help="Résultats en JSON sur la sortie standard.")
@click.pass_context
def peers_status(ctx: click.Context, as_json: bool) -> None:
    """Derniers résultats enregistrés de chaque pair (heures de Paris), sans rien vérifier ;
    code de sortie 1 si le dernier résultat d'un pair est un échec."""
    app = app_of(ctx)
    with app.db.read() as session:
        peers = [d for t in health.targets(session, app.settings.domain)
                 for d, _ in t.domains]
        last = health.latest(session, peers)
    results = [last[d] for d in sorted(peers) if d in last]
    never = sorted(d for d in peers if d not in last)
    if as_json:
        click.echo(_as_json(results, never))
    elif not peers:
        click.echo("Aucun pair dans la liste blanche.")
    else:
        _print_table(results, never, with_time=True)
        click.echo(_summary(results, never))
    sys.exit(EXIT_FAILED if any(not r.ok for r in results) else 0)
