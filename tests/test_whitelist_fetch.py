"""Following the MSSanté whitelist from its URL (issue #20) against a real HTTPS server on
loopback whose certificate comes from a test CA: a good fetch applies the diff and keeps the
history (who, when, source, DNs before and after); a peer's DN changed and a domain removed
raise warnings (audit, metrics, the operator's page) until acknowledged; a file that does not
parse, a server certificate outside the configured chain, an unreachable or silent server, an
error status, a redirection and an oversized body all keep the previous list and are recorded;
a 304 answers a conditional GET. Then `mss whitelist fetch/history/import` (output, exit
codes), the service of `mss run`, the settings, the demo turning it off, and the page with
its forms (CSRF, operators with TOTP only) — in Chromium at 1366×850 and 390×844 too
(screenshots in tests/artifacts/whitelist/)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from core.audit import AuditRecord
from core.db import Database
from core.download import getter
from core.errors import ConfigError
from core.localtime import french_datetime
from core.settings import WHITELIST_URL, Settings
from tests.whitelist_server import (
    ListServer,
    SilentServer,
    TestCa,
    closed_port,
    entry,
    listing,
)
from trust_space import whitelist_history as history
from trust_space.models import TrustedDomain
from trust_space.whitelist_history import FetchOutcome, WhitelistChange, WhitelistFetch

pytest_plugins = ["tests.webmail_fixtures"]
LOCAL = {"mss.test"}
A, B, C, D = (entry(f"{x}.pair.test", f"relais.{x}.pair.test", f"Pair {x.upper()}")
              for x in "abcd")
B2 = entry("b.pair.test", "relais2.b.pair.test", "Pair B")  # B's new relay certificate
OURS = entry("mss.test", "mss.test", "Nous")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("whitelist-pki")
    good, other = TestCa(where / "bonne", "AC de test liste blanche"), TestCa(
        where / "autre", "AC inconnue")
    return {"ca": good.pem, "good": good.server("liste"), "stranger": other.server("liste"),
            "wrong_name": good.server("ailleurs", ("ailleurs.example",)),
            "other_ca": other.pem}


@pytest.fixture
def server(pki: dict[str, Any]) -> Iterator[ListServer]:
    found = ListServer(pki["good"], listing(A, B2, D, OURS))
    yield found
    found.close()


def _seed(db: Database) -> None:
    """A, B and C known (B with a relay route set by hand), as a manual import leaves them."""
    with db.transaction() as s:
        history.apply_whitelist(s, listing(A, B, C), actor="cli", source="depart.xml",
                                local_domains=LOCAL)
        s.scalars(select(TrustedDomain).where(TrustedDomain.domain == B.domain)).one() \
            .relay_host = "relais.b.pair.test"


def _follow(db: Database, server: ListServer, ca: Path, **kw: Any) -> history.FetchReport:
    return history.follow(db, server.url, getter(server.url, ca_file=str(ca), **kw),
                          requested_by="planifié", local_domains=LOCAL)


def _domains(db: Database) -> dict[str, str]:
    with db.read() as s:
        return dict(s.execute(select(TrustedDomain.domain, TrustedDomain.certificate_dn))
                    .all())


def _audit(db: Database, action: str) -> list[tuple[str, str, str]]:
    with db.read() as s:
        return [(r.actor, r.target, r.outcome) for r in s.scalars(
            select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id))]


# ---------------------------------------------------------------- fetch and apply
def test_good_fetch_applies_the_diff_and_keeps_history(sqlite_db: Database, server: ListServer,
                                                        pki: dict[str, Any]) -> None:
    _seed(sqlite_db)
    report = _follow(sqlite_db, server, pki["ca"])
    assert report.outcome is FetchOutcome.APPLIED, report.detail
    assert report.detail.startswith("1 ajout(s), 1 retrait(s), 1 modification(s)")
    assert _domains(sqlite_db) == {A.domain: A.certificate_dn, B.domain: B2.certificate_dn,
                                   D.domain: D.certificate_dn}  # ours ignored, C gone
    with sqlite_db.read() as s:
        route = s.scalars(select(TrustedDomain.relay_host)
                          .where(TrustedDomain.domain == B.domain)).one()
        assert route == "relais.b.pair.test"  # routing is ours, not the file's
        first, latest = s.scalars(select(WhitelistChange).order_by(WhitelistChange.id)).all()
        assert (first.actor, first.source, first.added) == ("cli", "depart.xml", 3)
        assert (latest.actor, latest.source) == (f"fetch {server.url}", server.url)
        assert (latest.added, latest.removed, latest.changed) == (1, 1, 1)
        lines = {(c.domain, c.kind): c for c in history.lines_of(latest)}
        assert lines[D.domain, "added"].dn_after == D.certificate_dn
        assert lines[C.domain, "removed"].dn_before == C.certificate_dn
        changed = lines[B.domain, "changed"]
        assert changed.dn_changed and changed.fields == ("DNCertificatOperateur",)
        assert (changed.dn_before, changed.dn_after) == (B.certificate_dn, B2.certificate_dn)
        warnings = {(w.kind, w.domain, w.dn_before, w.dn_after)
                    for w in history.open_warnings(s)}
        assert warnings == {("dn_changed", B.domain, B.certificate_dn, B2.certificate_dn),
                            ("domain_removed", C.domain, C.certificate_dn, "")}
        fetch = s.scalars(select(WhitelistFetch)).one()
        assert (fetch.outcome, fetch.entries, fetch.change_id) == ("applied", 4, latest.id)
        assert fetch.etag.startswith('"') and fetch.last_modified
    alerts = _audit(sqlite_db, "whitelist.alert")
    assert sorted(alerts) == [(f"fetch {server.url}", B.domain, "dn_changed"),
                              (f"fetch {server.url}", C.domain, "domain_removed")]
    assert _audit(sqlite_db, "whitelist.fetch") == [(f"fetch {server.url}", server.url, "ok")]


def test_conditional_get_and_unchanged_list(sqlite_db: Database, server: ListServer,
                                            pki: dict[str, Any]) -> None:
    assert _follow(sqlite_db, server, pki["ca"]).outcome is FetchOutcome.APPLIED
    again = _follow(sqlite_db, server, pki["ca"])
    assert again.outcome is FetchOutcome.NOT_MODIFIED
    assert server.seen[0].if_none_match == "" and server.seen[1].if_none_match.startswith('"')
    assert server.seen[1].if_modified_since == "Thu, 13 Mar 2025 14:54:10 GMT"
    # A manual import in between: the next fetch takes the file in full and puts it back.
    with sqlite_db.transaction() as s:
        history.apply_whitelist(s, listing(A), actor="operateur@mss.test", source="a-seul.xml",
                                local_domains=LOCAL)
    back = _follow(sqlite_db, server, pki["ca"])
    assert server.seen[2].if_none_match == "" and back.outcome is FetchOutcome.APPLIED
    assert set(_domains(sqlite_db)) == {A.domain, B.domain, D.domain}
    server.body += b"\n"  # same list, another file: fetched, compared, nothing to change
    same = _follow(sqlite_db, server, pki["ca"])
    assert same.outcome is FetchOutcome.UNCHANGED and same.detail.startswith("liste identique")
    with sqlite_db.read() as s:
        assert len(history.changes(s)) == 3  # import, manual import, fetch back: no more
        assert [f.outcome for f in history.fetches(s)] == [
            "unchanged", "applied", "not_modified", "applied"]


@pytest.mark.parametrize("body, words", [
    (b"<ListeBlanche xmlns='https://listeblanche.mssante.fr/schema'><Domaine>", "XML mal formé"),
    (listing(A, A), "domaine en double"),
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "DOCTYPE"),
    (b"", "XML mal formé"),
])
def test_a_file_that_does_not_parse_keeps_the_previous_list(
        sqlite_db: Database, server: ListServer, pki: dict[str, Any], body: bytes,
        words: str) -> None:
    _seed(sqlite_db)
    before = _domains(sqlite_db)
    server.body = body
    report = _follow(sqlite_db, server, pki["ca"])
    assert report.outcome is FetchOutcome.REFUSED and words in report.detail
    assert "liste précédente gardée" in report.detail
    assert _domains(sqlite_db) == before
    with sqlite_db.read() as s:
        assert len(history.changes(s)) == 1 and not history.open_warnings(s)
        state = history.status(s)
        assert state.failures_in_a_row == 1 and state.last_good_at is None
        assert state.last is not None and state.last.etag == ""  # never a validator from it
    assert _audit(sqlite_db, "whitelist.fetch")[-1][2] == "refused"


@pytest.mark.parametrize("which, ca, words", [
    ("stranger", "ca", "certificat du serveur refusé"),  # another CA than the configured one
    ("good", "other_ca", "certificat du serveur refusé"),  # configured chain is another's
    ("good", "", "certificat du serveur refusé"),  # the system store knows no test CA
    ("wrong_name", "ca", "certificat du serveur refusé"),  # right CA, another host's name
])
def test_a_server_certificate_outside_the_chain_is_refused(
        sqlite_db: Database, pki: dict[str, Any], which: str, ca: str, words: str) -> None:
    _seed(sqlite_db)
    before = _domains(sqlite_db)
    found = ListServer(pki[which], listing(A, D))
    try:
        report = history.follow(sqlite_db, found.url, getter(
            found.url, ca_file=str(pki[ca]) if ca else ""), requested_by="planifié")
    finally:
        found.close()
    assert report.outcome is FetchOutcome.FAILED and words in report.detail
    assert _domains(sqlite_db) == before and found.seen == []  # no request was sent
    assert _audit(sqlite_db, "whitelist.fetch")[-1][2] == "failed"


def test_environment_ca_bundle_is_not_used(sqlite_db: Database, server: ListServer,
                                           pki: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE naming the test CA must not make an unconfigured fetch trust it."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki["ca"]))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki["ca"]))
    report = history.follow(sqlite_db, server.url, getter(server.url), requested_by="planifié")
    assert report.outcome is FetchOutcome.FAILED and "certificat" in report.detail


def test_unreachable_silent_error_redirect_and_oversized(sqlite_db: Database,
                                                         server: ListServer,
                                                         pki: dict[str, Any]) -> None:
    _seed(sqlite_db)
    before = _domains(sqlite_db)
    url = f"https://localhost:{closed_port()}/liste.xml"
    refused = history.follow(sqlite_db, url, getter(url, ca_file=str(pki["ca"])),
                             requested_by="planifié")
    assert refused.outcome is FetchOutcome.FAILED and "connexion impossible" in refused.detail
    silent = SilentServer()
    try:
        url = f"https://localhost:{silent.port}/liste.xml"
        started = time.monotonic()
        quiet = history.follow(sqlite_db, url, getter(url, ca_file=str(pki["ca"]), timeout=1),
                               requested_by="planifié")
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert quiet.outcome is FetchOutcome.FAILED and "délai dépassé" in quiet.detail
    server.status = 503
    assert "réponse HTTP 503" in _follow(sqlite_db, server, pki["ca"]).detail
    server.status = 302
    moved = _follow(sqlite_db, server, pki["ca"]).detail
    assert "redirection vers https://ailleurs.example/liste.xml" in moved
    server.status = 200
    big = _follow(sqlite_db, server, pki["ca"], max_bytes=200)
    assert big.outcome is FetchOutcome.FAILED and "trop gros" in big.detail
    assert _domains(sqlite_db) == before
    with sqlite_db.read() as s:
        assert history.status(s).failures_in_a_row == 5
    assert _follow(sqlite_db, server, pki["ca"]).outcome is FetchOutcome.APPLIED
    with sqlite_db.read() as s:
        state = history.status(s)
        assert state.failures_in_a_row == 0 and state.last_good_at is not None


def test_a_compressed_bomb_stops_at_the_bound(sqlite_db: Database, server: ListServer,
                                             pki: dict[str, Any]) -> None:
    """A 64 KiB gzip body that inflates to 64 MiB: the bound counts inflated bytes."""
    import gzip

    _seed(sqlite_db)
    before = _domains(sqlite_db)
    server.body, server.encoding = gzip.compress(b" " * (64 << 20), compresslevel=9), "gzip"
    assert len(server.body) < 128 << 10
    report = _follow(sqlite_db, server, pki["ca"], max_bytes=1 << 20)
    assert report.outcome is FetchOutcome.FAILED and "trop gros" in report.detail
    assert _domains(sqlite_db) == before
    server.body, server.encoding = gzip.compress(listing(A, B, C, D)), "gzip"
    assert _follow(sqlite_db, server, pki["ca"]).outcome is FetchOutcome.APPLIED  # honest gzip


def test_dry_run_records_nothing(sqlite_db: Database, server: ListServer,
                                 pki: dict[str, Any]) -> None:
    _seed(sqlite_db)
    report = history.follow(sqlite_db, server.url, getter(server.url, ca_file=str(pki["ca"])),
                            requested_by="cli", actor="cli", local_domains=LOCAL, dry_run=True)
    assert report.outcome is FetchOutcome.APPLIED and report.applied is not None
    assert {c.kind for c in report.applied.changes} == {"added", "removed", "changed"}
    assert set(_domains(sqlite_db)) == {A.domain, B.domain, C.domain}
    with sqlite_db.read() as s:
        assert len(history.changes(s)) == 1 and not history.fetches(s)
        assert not history.open_warnings(s)


def test_metrics_show_warnings_and_failures(sqlite_db: Database, server: ListServer,
                                            pki: dict[str, Any]) -> None:
    from gateway.metrics import Metrics

    metrics = Metrics()
    value = metrics.registry.get_sample_value
    assert value("mss_whitelist_fetch_failures") is None  # nothing read yet: no sample

    def read() -> history.Status:
        with sqlite_db.read() as s:
            return history.status(s)

    metrics.watch_whitelist(read)
    assert value("mss_whitelist_warnings", {"kind": "dn_changed"}) == 0
    assert value("mss_whitelist_last_success_timestamp_seconds") is None
    _seed(sqlite_db)
    _follow(sqlite_db, server, pki["ca"])
    assert value("mss_whitelist_warnings", {"kind": "dn_changed"}) == 1
    assert value("mss_whitelist_warnings", {"kind": "domain_removed"}) == 1
    assert value("mss_whitelist_last_success_timestamp_seconds") == pytest.approx(
        time.time(), abs=60)
    server.status = 500
    _follow(sqlite_db, server, pki["ca"])
    _follow(sqlite_db, server, pki["ca"])
    assert value("mss_whitelist_fetch_failures") == 2
    with sqlite_db.transaction() as s:
        for warning in history.open_warnings(s):
            history.acknowledge(s, warning.id, "operateur@mss.test")
    assert value("mss_whitelist_warnings", {"kind": "dn_changed"}) == 0


# ---------------------------------------------------------------- the service, settings, demo
def test_the_service_fetches_when_due(settings: Settings, sqlite_db: Database,
                                      server: ListServer, pki: dict[str, Any]) -> None:
    from mss.whitelist_fetch import WhitelistFollower

    off = WhitelistFollower(settings.replace(whitelist_url=""), sqlite_db)
    off.start()
    assert off._thread is None and "non suivie" in off.endpoints()[0]
    s = settings.replace(whitelist_url=server.url, whitelist_ca=str(pki["ca"]),
                         whitelist_fetch_seconds=3600)
    follower = WhitelistFollower(s, sqlite_db, poll=0.05)
    assert "toutes les 1 h" in follower.endpoints()[0] and str(pki["ca"]) in \
        follower.endpoints()[0]
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while not server.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # several polls: still one fetch (not due again for an hour)
    finally:
        follower.stop()
    assert len(server.seen) == 1 and set(_domains(sqlite_db)) == {A.domain, B2.domain,
                                                                  D.domain}
    with sqlite_db.read() as s:
        assert history.fetches(s)[0].requested_by == "planifié"
    server.status = 500
    with sqlite_db.transaction() as s:  # an hour later
        for row in s.scalars(select(WhitelistFetch)):
            row.at = row.at.replace(year=row.at.year - 1)
    assert follower.run_once().outcome is FetchOutcome.FAILED  # type: ignore[union-attr]
    assert follower.run_once() is None  # a failure is retried after 15 min, not at once


def test_settings_default_and_refusals(settings: Settings) -> None:
    assert settings.whitelist_url == WHITELIST_URL
    assert WHITELIST_URL == "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"
    assert settings.whitelist_ca == "" and settings.whitelist_fetch_seconds == 6 * 3600
    for values, words in (({"whitelist_url": "http://liste.example/l.xml"}, "https://"),
                          ({"whitelist_url": "ftp://liste.example/l.xml"}, "https://"),
                          ({"whitelist_fetch_seconds": 10}, "au moins 60")):
        with pytest.raises(ConfigError, match=words):
            settings.replace(**values).validate()
    loaded = Settings.load(data_dir=settings.data_dir, environ={"MSS_WHITELIST_URL": ""})
    assert loaded.whitelist_url == ""


def test_the_demo_does_not_follow_the_national_list(settings: Settings) -> None:
    from mss.whitelist_fetch import disable_in_toml

    assert disable_in_toml(settings) is True
    assert disable_in_toml(settings) is False  # once
    assert Settings.load(data_dir=settings.data_dir, environ={}).whitelist_url == ""
    chosen = settings.data_dir.parent / "choisi"
    chosen.mkdir()
    (chosen / "mss.toml").write_text('whitelist_url = "https://liste.example/l.xml"\n')
    kept = Settings.load(data_dir=chosen, environ={})
    assert disable_in_toml(kept) is False
    assert Settings.load(data_dir=chosen, environ={}).whitelist_url == \
        "https://liste.example/l.xml"


# ---------------------------------------------------------------- the command line
def _mss(data: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    return subprocess.run([sys.executable, "-m", "mss.cli", "--data-dir", str(data), *args],
                          env={**base, **(env or {})}, text=True, capture_output=True,
                          timeout=120, cwd=Path(__file__).parent.parent)


def test_cli_fetch_history_and_exit_codes(tmp_path: Path, server: ListServer,
                                          pki: dict[str, Any]) -> None:
    data = tmp_path / "data"
    assert _mss(data, "init", "--domain", "mss.test").returncode == 0
    start = tmp_path / "depart.xml"
    start.write_bytes(listing(A, B, C))
    imported = _mss(data, "whitelist", "import", str(start))
    assert imported.returncode == 0 and "+ a.pair.test  CN=relais.a.pair.test" in imported.stdout
    env = {"MSS_WHITELIST_URL": server.url, "MSS_WHITELIST_CA": str(pki["ca"])}
    dry = _mss(data, "whitelist", "fetch", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "La liste blanche changerait : 1 ajout(s), 1 retrait(s), 1 modification(s)." \
        in dry.stdout
    assert "  mss.test (notre propre domaine, ignoré)" in dry.stdout
    assert "c.pair.test" in _mss(data, "whitelist", "list").stdout  # nothing applied
    done = _mss(data, "whitelist", "fetch", env=env)
    assert done.returncode == 0, done.stderr
    assert "~ b.pair.test (DNCertificatOperateur)" in done.stdout
    assert "    DN avant : CN=relais.b.pair.test,O=Pair B,C=FR" in done.stdout
    assert "    DN après : CN=relais2.b.pair.test,O=Pair B,C=FR" in done.stdout
    assert "- c.pair.test  (était CN=relais.c.pair.test,O=Pair C,C=FR)" in done.stdout
    assert "ATTENTION : le DN du certificat de l'opérateur de b.pair.test a changé" in done.stdout
    assert "ATTENTION : c.pair.test a quitté la liste blanche" in done.stdout
    assert "c.pair.test" not in _mss(data, "whitelist", "list").stdout
    again = _mss(data, "whitelist", "fetch", env=env)
    assert again.returncode == 0 and "304 Not Modified" in again.stdout
    shown = _mss(data, "whitelist", "history", env=env)
    assert shown.returncode == 0, shown.stderr
    db = Database(f"sqlite:///{data / 'mss.db'}")
    try:
        with db.read() as s:
            (fetched, t1), (manual, t2) = ((c.id, french_datetime(c.at))
                                           for c in history.changes(s))
            paris = history.changes(s)[0].at.astimezone(ZoneInfo("Europe/Paris"))
    finally:
        db.dispose()
    assert t1 == f"{paris:%d/%m/%Y à %H:%M}"  # Paris time, French format
    assert f"n° {fetched} — {t1} — cli — source : {server.url}" in shown.stdout
    assert f"n° {manual} — {t2} — cli — source : depart.xml" in shown.stdout
    assert shown.stdout.index(f"n° {fetched} ") < shown.stdout.index(f"n° {manual} ")
    assert "ATTENTION n° " in shown.stdout and "DN changé : CN=relais.b.pair.test" in \
        shown.stdout
    assert "Dernière récupération : " in shown.stdout and "non modifiée (304)" in shown.stdout

    server.body = b"<pas du xml"
    broken = _mss(data, "whitelist", "fetch", env=env)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "Erreur : récupération en échec ; la liste actuelle est gardée : fichier refusé" \
        in broken.stderr
    down = _mss(data, "whitelist", "fetch", env={
        **env, "MSS_WHITELIST_URL": f"https://localhost:{closed_port()}/l.xml"})
    assert down.returncode == 1 and "connexion impossible" in down.stderr
    stranger = _mss(data, "whitelist", "fetch", env={**env, "MSS_WHITELIST_CA": str(
        pki["other_ca"])})
    assert stranger.returncode == 1 and "certificat du serveur refusé" in stranger.stderr
    off = _mss(data, "whitelist", "fetch", env={"MSS_WHITELIST_URL": ""})
    assert off.returncode == 1 and "MSS_WHITELIST_URL est vide" in off.stderr
    assert "b.pair.test" in _mss(data, "whitelist", "list").stdout  # all kept


# ---------------------------------------------------------------- the operator's page


def _ops(web_space: Any, tmp_path: Path, **overrides: Any) -> Any:
    """The webmail (Flask test client) of the webmail tests' trust space with ``overrides``;
    whitelist tables emptied first (the space is shared by this module)."""
    from sqlalchemy import delete

    from tests.webmail_helpers import RecordingMailer, Web
    from webmail import create_app
    from webmail.auth.sms import FileSmsProvider

    with web_space.db.transaction() as s:
        for model in (history.WhitelistWarning, WhitelistFetch, WhitelistChange, TrustedDomain):
            s.execute(delete(model))
    mailer = RecordingMailer()
    app = create_app(web_space.settings.replace(**overrides), web_space.db,
                     {"TESTING": True, "RATE_LOGIN": "1000 per minute",
                      "RATE_CODE": "1000 per minute"},
                     mailer=mailer, sms=FileSmsProvider(tmp_path / "sms"))
    return Web(web_space, app, mailer, tmp_path / "sms")


@pytest.fixture
def ops(web_space: Any, server: ListServer, pki: dict[str, Any], tmp_path: Path) -> Any:
    """The webmail following ``server``."""
    return _ops(web_space, tmp_path, whitelist_url=server.url, whitelist_ca=str(pki["ca"]))


PAGE = "/operateur/liste-blanche"


def test_the_page_fetches_warns_and_acknowledges(ops: Any, server: ListServer) -> None:
    from tests.webmail_helpers import login_operator, post

    _seed(ops.space.db)
    op = ops.client()
    login_operator(ops, op)
    first = op.get(PAGE).get_data(as_text=True)
    assert "Liste blanche" in first and server.url in first and "jamais" in first
    assert "À examiner" not in first and "Récupérer maintenant" in first
    assert "depart.xml" in first  # the seed import is in the history
    done = post(op, PAGE, {}, action=f"{PAGE}/recuperer")
    assert done.status_code == 302
    page = op.get(PAGE).get_data(as_text=True).replace("&#39;", "'")
    assert "Récupération : appliquée — 1 ajout(s), 1 retrait(s), 1 modification(s)" in page
    assert "2 avertissement(s) à examiner" in page
    assert "À examiner (2)" in page
    assert "Le DN du certificat de l’opérateur de <span class=\"wl-domain\">b.pair.test</span>" \
        in page
    assert "CN=relais.b.pair.test,O=Pair B,C=FR" in page and "CN=relais2.b.pair.test" in page
    assert "a quitté la liste blanche" in page
    with ops.space.db.read() as s:
        change = history.changes(s, 1)[0]
        assert change.actor == "operateur@mss.test" and change.source == server.url
        assert f"{french_datetime(change.at)}</strong> — operateur@mss.test" in page
        dn_warning_id = next(w.id for w in history.open_warnings(s) if w.kind == "dn_changed")
    assert [a[2] for a in _audit(ops.space.db, "whitelist.fetch_now")][-1] == "applied"

    seen = post(op, PAGE, {}, action=f"{PAGE}/avertissements/{dn_warning_id}/vu")
    assert seen.status_code == 302
    after = op.get(PAGE).get_data(as_text=True)
    assert "À examiner (1)" in after and "pris en compte" in after
    again = post(op, PAGE, {}, action=f"{PAGE}/avertissements/{dn_warning_id}/vu")
    assert again.status_code == 302
    assert "déjà été pris en compte par operateur@mss.test" in op.get(PAGE).get_data(
        as_text=True).replace("&#39;", "'")
    post(op, PAGE, {}, action=f"{PAGE}/avertissements/999999/vu")  # a forged id
    assert [a[1:] for a in _audit(ops.space.db, "whitelist.acknowledge")][-3:] == [
        ("b.pair.test", "ok"), ("avertissement " + str(dn_warning_id), "already_acknowledged"),
        ("avertissement 999999", "not_found")]
    with ops.space.db.read() as s:
        acked = s.get(history.WhitelistWarning, dn_warning_id)
        assert acked is not None and acked.acknowledged_by == "operateur@mss.test"

    server.body = b"<pas du xml"
    post(op, PAGE, {}, action=f"{PAGE}/recuperer")
    broken = op.get(PAGE).get_data(as_text=True)
    assert "Récupération : fichier refusé, liste gardée" in broken
    assert "XML mal formé" in broken
    assert len(_domains(ops.space.db)) == 3  # the list stays


def test_the_page_is_for_operators_with_totp_and_forms_need_csrf(ops: Any) -> None:
    from tests.webmail_helpers import login, login_operator, token

    _seed(ops.space.db)
    assert ops.client().get(PAGE).status_code == 302  # to the log-in page
    marie = ops.client()
    login(ops, marie, "marie")
    assert marie.get(PAGE).status_code == 403
    csrf = token(marie, "/compte/preferences")
    assert marie.post(f"{PAGE}/recuperer", data={"csrf_token": csrf}).status_code == 403
    op = ops.client()
    login_operator(ops, op)
    assert op.post(f"{PAGE}/recuperer").status_code == 400  # no CSRF token
    assert op.get(f"{PAGE}/recuperer").status_code == 405  # never a GET
    with ops.space.db.read() as s:
        assert not history.fetches(s)  # none of those fetched


def test_a_hostile_dn_is_shown_as_text(ops: Any, server: ListServer) -> None:
    """DNs are free text in the file: one made of markup is escaped on the page."""
    from tests.webmail_helpers import login_operator, post

    _seed(ops.space.db)
    hostile = entry("b.pair.test", "<script>alert(1)</script>", "<img src=x onerror=alert(2)>")
    server.body = listing(A, hostile, C)
    op = ops.client()
    login_operator(ops, op)
    assert post(op, PAGE, {}, action=f"{PAGE}/recuperer").status_code == 302
    page = op.get(PAGE).get_data(as_text=True)
    assert "À examiner (1)" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page


def test_the_page_without_url(web_space: Any, tmp_path: Path) -> None:
    from tests.webmail_helpers import login_operator, post

    web = _ops(web_space, tmp_path, whitelist_url="")
    op = web.client()
    login_operator(web, op)
    page = op.get(PAGE).get_data(as_text=True)
    assert "n’est pas suivie" in page and "Récupérer maintenant" not in page
    assert post(op, PAGE, {}, action=f"{PAGE}/recuperer").status_code == 302
    assert "MSS_WHITELIST_URL est vide" in op.get(PAGE).get_data(as_text=True)
    assert _audit(web.space.db, "whitelist.fetch_now")[-1][2] == "disabled"


# ---------------------------------------------------------------- the page in Chromium
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts" / "whitelist"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP, PHONE = {"width": 1366, "height": 850}, {"width": 390, "height": 844}
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium absent")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Any]) -> Iterator[Any]:
    """`mss run --role webmail` on a demo data directory following a list server."""
    import shutil
    import threading

    from sqlalchemy import delete

    from mss.app import App
    from mss.demo import setup_demo
    from mss.run import run
    from tests.webmail_browser_support import free_port
    from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD
    from trust_space.accounts import hash_password
    from trust_space.models import Account, AccountKind, OtpChannel
    from webmail.auth import otp

    served = ListServer(pki["good"], listing(A, B2, D, OURS))
    data = tmp_path_factory.mktemp("whitelist-browser") / "data"
    settings = Settings.load(data_dir=data, environ={}, demo_password=PASSWORD,
                             web_port=free_port(), listen_address="127.0.0.1",
                             hostname="localhost", whitelist_url=served.url,
                             whitelist_ca=str(pki["ca"]))
    app = App(settings)
    setup_demo(app)
    _seed(app.db)
    with app.db.transaction() as s:
        s.execute(delete(Account).where(Account.login == OPERATOR))
        s.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                      password_hash=hash_password(PASSWORD), failed_attempts=0,
                      otp_channel=OtpChannel.TOTP,
                      totp_secret=otp.seal_seed(OPERATOR_SEED, settings.secret())))
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run, args=(app, "webmail"),
                              kwargs={"ready": lambda _s: ready.set(), "stop_event": stop})
    thread.start()
    assert ready.wait(30), "webmail did not start"
    yield {"url": f"https://localhost:{settings.web_port}", "app": app, "served": served}
    stop.set()
    thread.join(20)
    served.close()
    app.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


def _logged_in(chromium: Any, site: Any, viewport: dict[str, int]) -> Any:
    import pyotp
    from sqlalchemy import delete

    from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD
    from webmail.models import TotpUse

    context = chromium.new_context(ignore_https_errors=True, locale="fr-FR", viewport=viewport,
                                   is_mobile=viewport is PHONE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    with site["app"].db.transaction() as s:
        s.execute(delete(TotpUse))  # the replay guard: this module logs in twice
    page.goto(site["url"] + "/connexion")
    page.fill("#identifier", OPERATOR)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Continuer')")
    page.wait_for_url("**/connexion/code")
    page.fill("#code", pyotp.TOTP(OPERATOR_SEED).now())
    page.click("button:has-text('Valider')")
    page.wait_for_url("**/operateur/**")
    return page


def _shot(page: Any, name: str) -> None:
    """A screenshot (full page) after axe-core and a check that nothing is wider than the
    screen."""
    from tests.webmail_browser_support import check_a11y

    check_a11y(page, f"whitelist-{name}")
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, name
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@needs_chromium
def test_the_page_in_chromium_desktop(chromium: Any, site: Any) -> None:
    page = _logged_in(chromium, site, DESKTOP)
    page.click("nav.ops-tabs >> text=Liste blanche")
    page.wait_for_url("**/operateur/liste-blanche")
    assert page.get_attribute("nav.ops-tabs a:has-text('Liste blanche')", "aria-current") == \
        "page"
    assert site["served"].url in page.inner_text("main")
    _shot(page, "1-avant-desktop")
    page.click("button:has-text('Récupérer maintenant')")
    page.wait_for_selector(".flash")
    assert "2 avertissement(s) à examiner" in page.inner_text(".flash")
    warnings = page.inner_text(".wl-warnings")
    assert "b.pair.test" in warnings and "CN=relais2.b.pair.test" in warnings
    assert "c.pair.test a quitté la liste blanche" in warnings
    history_text = page.inner_text("#history-title + ol li:first-child")
    assert "operateur@mss.test" in history_text and "1 ajout(s)" in history_text
    assert page.is_visible("#history-title + ol li:first-child .wl-diff")  # opened
    _shot(page, "2-avertissements-desktop")
    page.click("button[aria-label='Marquer comme vu l’avertissement sur b.pair.test']")
    page.wait_for_selector(".flash-success")
    assert "À examiner (1)" in page.inner_text(".wl-warnings")
    _shot(page, "3-vu-desktop")
    page.context.close()


@needs_chromium
def test_the_page_on_a_phone(chromium: Any, site: Any) -> None:
    page = _logged_in(chromium, site, PHONE)
    page.goto(site["url"] + PAGE)
    assert "Liste blanche" in page.inner_text("h1")
    _shot(page, "4-telephone")
    button = page.locator("button:has-text('Récupérer maintenant')").bounding_box()
    assert button is not None and button["height"] >= 40 and button["width"] <= 390
    page.context.close()
