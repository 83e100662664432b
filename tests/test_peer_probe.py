"""The peers' health (issue #20): the probe against real relays on loopback — aiosmtpd with the
relay's own mutual-TLS context (``gateway.smtp.tls.relay_context``) and peer authorities built
with ``certs.pki`` (tests/peer_probe_support.py) — a healthy peer, one sharing its relay, a
certificate about to expire, an expired one, a revoked one (on the CRL we hold), one from an
authority we do not trust, a DN other than the whitelist's, an authority whose CRL we do not
hold, a peer that does not trust us (hanging up, or with a real TLS alert), a closed port and
a silent relay; then what is stored (both engines), the traffic counts, the metrics and their
exposition, ``mss peers check|status`` (output, exit codes), the schedule of ``mss run``, the
setting, and the operator page's forms (CSRF, audit) through Flask's client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from prometheus_client import generate_latest
from sqlalchemy import delete, select

from core.audit import AuditRecord
from core.db import Database, utcnow
from core.errors import ConfigError
from core.settings import Settings
from gateway import probe
from gateway.metrics import Metrics
from mss.peer_probe import PeerProber, checker
from peers import health, traffic
from peers.health import PeerProbe
from peers.results import ProbeResult
from tests.peer_probe_support import DOMAINS, Scene, scene_fixture, seed_traffic
from tests.test_cli import mss
from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD, token
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, OtpChannel
from webmail import create_app
from webmail.auth import otp

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    yield from scene_fixture(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def checked(scene: Scene) -> tuple[dict[str, ProbeResult], float]:
    """One run over every peer: the results by domain, and how long it took."""
    scene.forget_probes()
    started = time.monotonic()
    results = probe.check(scene.app.db, scene.settings, requested_by="test",
                                actor="test", timeout=TIMEOUT)
    return {r.domain: r for r in results}, time.monotonic() - started


def by(checked: tuple[dict[str, ProbeResult], float], scenario: str) -> ProbeResult:
    return checked[0][DOMAINS[scenario]]


# ---------------------------------------------------------------- the probe, scenario by scenario
def test_a_healthy_peer(scene: Scene, checked: Any) -> None:
    r = by(checked, "ok")
    assert r.ok and r.failure == "" and r.detail == ""
    assert (r.host, r.port) == ("127.0.0.1", scene.relays["ok"].port)
    assert r.tls_version in ("TLSv1.3", "TLSv1.2") and r.cipher
    assert r.subject_dn == scene.relays["ok"].dn == r.expected_dn and r.dn_match is True
    assert r.chain == "valid" and "AC racine Pair Santé" in r.chain_detail
    assert r.revocation == "good" and r.revocation_detail.startswith("CRL de « CN=AC Pair Santé")
    assert r.not_after == scene.relays["ok"].issued.certificate.not_valid_after_utc
    assert 1000 < (r.days_left() or 0) < 1100
    # The probe said QUIT and never MAIL FROM (no message sent), on every relay.
    handlers = [relay.handler for relay in scene.relays.values() if relay.handler is not None]
    assert all(h.mail == [] for h in handlers)
    assert scene.relays["ok"].handler is not None and scene.relays["ok"].handler.quits >= 1


def test_domains_sharing_a_relay_share_one_session(scene: Scene, checked: Any) -> None:
    ok, also = by(checked, "ok"), by(checked, "aussi")
    assert also.ok and (also.host, also.port) == (ok.host, ok.port) and also.at == ok.at
    assert scene.relays["ok"].handler is not None and scene.relays["ok"].handler.quits == 1


def test_our_own_domain_is_not_a_peer(scene: Scene, checked: Any) -> None:
    assert scene.settings.domain not in checked[0]
    assert set(checked[0]) == set(DOMAINS.values())


def test_a_certificate_about_to_expire_still_works(checked: Any) -> None:
    r = by(checked, "soon")
    assert r.ok and 9 < (r.days_left() or 0) < 10.1


def test_an_expired_certificate(checked: Any) -> None:
    r = by(checked, "expired")
    assert not r.ok and r.failure == "tls_verify"
    assert "certificate has expired (OpenSSL, code 10)" in r.detail
    assert "Certificat expiré le" in r.detail  # read by the second, unverified session
    assert r.chain == "invalid" and r.subject_dn == "CN=relais.expire.test,O=Pair Santé"
    assert -2.1 < (r.days_left() or 0) < -1.9 and r.tls_version


def test_a_revoked_certificate(scene: Scene, checked: Any) -> None:
    r = by(checked, "revoked")
    assert not r.ok and r.failure == "revoked" and r.chain == "valid"
    serial = format(scene.relays["revoked"].issued.certificate.serial_number, "x")
    assert r.revocation == "revoked" and r.revocation_detail == r.detail
    assert r.detail.startswith(f"numéro de série {serial} inscrit le ")
    assert r.detail.endswith("sur la CRL de « CN=AC Pair Santé,O=Pair Santé,C=FR »")


def test_an_authority_we_do_not_trust(checked: Any) -> None:
    r = by(checked, "stranger")
    assert not r.ok and r.failure == "tls_verify" and r.chain == "invalid"
    assert "(OpenSSL, code 19)" in r.detail and "Certificat non reconnu" in r.detail
    assert r.subject_dn == "CN=relais.inconnu.test,O=Pair Santé"


def test_a_dn_other_than_the_whitelists(checked: Any) -> None:
    r = by(checked, "dn")
    assert not r.ok and r.failure == "dn_mismatch" and r.dn_match is False
    assert r.chain == "valid" and r.revocation == "good"
    assert "« CN=relais.autre-dn.test,O=Pair Santé »" in r.detail
    assert "« CN=relais.ailleurs.test,O=Pair Santé »" in r.detail


def test_revocation_not_checked_without_the_crl_says_whose(checked: Any) -> None:
    r = by(checked, "nocrl")
    assert r.ok and r.revocation == "unchecked"
    assert r.revocation_detail.startswith("aucune CRL de « CN=AC Pair sans CRL")


def test_a_peer_that_does_not_trust_us(scene: Scene, checked: Any) -> None:
    hung_up, alerted = by(checked, "distrust"), by(checked, "alert")
    assert not hung_up.ok and hung_up.failure == "tls_closed"
    assert "notre certificat d'opérateur" in hung_up.detail
    assert not alerted.ok and alerted.failure == "tls_alert"
    relay = f"127.0.0.1:{scene.relays['alert'].port}"
    assert alerted.detail == f"« tlsv1 alert unknown ca » reçue de {relay}"
    # Its own certificate was fine: the fault is on the other side.
    assert alerted.chain == "valid" and alerted.dn_match is True


def test_a_closed_port_and_a_silent_relay_within_the_bound(checked: Any) -> None:
    closed, silent = by(checked, "closed"), by(checked, "silent")
    assert closed.failure == "refused" and closed.detail.startswith("127.0.0.1:")
    assert "refuse la connexion" in closed.detail
    assert closed.tls_version == "" and closed.dn_match is None and closed.not_after is None
    assert silent.failure == "timeout" and silent.detail.endswith(f"en {TIMEOUT:g} s")
    assert silent.duration_ms <= TIMEOUT * 1000 + 300
    assert checked[1] < 2 * TIMEOUT + 3  # concurrently: the slow one does not add up


def test_the_run_is_stored_and_audited(scene: Scene, checked: Any) -> None:
    with scene.app.db.transaction() as session:
        last = health.latest(session)
        record = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "peers.check").order_by(AuditRecord.id.desc())).first()
    assert last == checked[0]
    assert record is not None and record.actor == "test" and record.outcome == "failed"
    request = json.loads(record.request)
    assert request["peers"] == len(DOMAINS) and request["by"] == "test"
    assert set(request["failed"]) == {DOMAINS[k] for k in (
        "expired", "revoked", "stranger", "dn", "distrust", "alert", "closed", "silent")}


# ---------------------------------------------------------------- storage (both engines)
def _result(domain: str, ok: bool, at: datetime, days: float = 100) -> ProbeResult:
    return ProbeResult(domain, "relais", 25, at, ok, "" if ok else "refused",
                       "" if ok else "connexion refusée", not_after=at + timedelta(days=days),
                       dn_match=True if ok else None)


def test_results_failures_in_a_row_pruning_and_due(db: Database,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from trust_space.models import Operator, TrustedDomain

    now = utcnow()
    with db.transaction() as session:
        op = Operator(name="Pair", certificate_dn="CN=relais,O=Pair")
        session.add_all([TrustedDomain(domain=d, operator=op, certificate_dn="CN=relais,O=Pair")
                         for d in ("a.test", "b.test", "c.test", "nous.test")])
    monkeypatch.setattr(health, "KEEP", 3)
    for n, (a_ok, b_ok) in enumerate([(False, True), (True, False), (False, False),
                                      (False, False)]):
        with db.transaction() as session:
            health.save(session, [_result("a.test", a_ok, now - timedelta(hours=4 - n)),
                                       _result("b.test", b_ok, now - timedelta(hours=4 - n))],
                             "test")
    with db.read() as session:
        assert health.failures_in_a_row(session) == {"a.test": 2, "b.test": 3}
        kept = session.scalars(select(PeerProbe.domain)).all()
        assert sorted(kept) == ["a.test"] * 3 + ["b.test"] * 3  # the newest 3 of each
        last = health.latest(session)
        assert set(last) == {"a.test", "b.test"} and not last["a.test"].ok
        assert last["a.test"].at == now - timedelta(hours=1)
        assert health.due(session, "nous.test", timedelta(hours=2), now) == ["c.test"]
        assert health.due(session, "nous.test", timedelta(minutes=30), now) == [
            "a.test", "b.test", "c.test"]
        states = {s.domain: s for s in health.states(session, "nous.test", now)}
    assert set(states) == {"a.test", "b.test"} and states["b.test"].failures_in_a_row == 3
    assert states["a.test"].days_left == pytest.approx(100 - 1 / 24, abs=0.01)
    assert states["a.test"].dn_match is None  # no certificate seen


def test_traffic_of_the_last_day(db: Database) -> None:
    now = utcnow()
    dn = "CN=relais.sain.test, o=Pair Santé"  # as a whitelist may write it
    seed_traffic(db, "sain.test", dn, now)
    with db.read() as session:
        found = traffic.traffic(session, {"sain.test": dn, "calme.test": "CN=x,O=Y"},
                                     now - timedelta(days=1))
    t = found["sain.test"]
    assert (t.sent, t.deferred, t.bounced, t.received, t.refused) == (1, 1, 1, 2, 2)
    assert t.oldest_queued is not None
    assert (now - t.oldest_queued).total_seconds() == pytest.approx(3 * 3600, abs=120)
    quiet = found["calme.test"]
    assert (quiet.sent, quiet.received, quiet.refused, quiet.oldest_queued) == (0, 0, 0, None)


# ---------------------------------------------------------------- metrics
def test_metrics_from_the_last_results(scene: Scene, checked: Any) -> None:
    metrics = Metrics()

    def states() -> list[health.PeerState]:
        with scene.app.db.read() as session:
            return health.states(session, scene.settings.domain)

    metrics.watch_peers(states)
    value = metrics.registry.get_sample_value

    def sample(name: str, scenario: str) -> float | None:
        return value(name, {"peer": DOMAINS[scenario]})

    assert sample("mss_peer_probe_success", "ok") == 1
    assert sample("mss_peer_probe_success", "closed") == 0
    assert sample("mss_peer_probe_timestamp_seconds", "ok") == pytest.approx(time.time(),
                                                                               abs=600)
    assert sample("mss_peer_probe_failures_in_a_row", "closed") == 1
    assert sample("mss_peer_probe_failures_in_a_row", "ok") == 0
    assert sample("mss_peer_certificate_expiry_days", "soon") == pytest.approx(10, abs=0.1)
    assert sample("mss_peer_certificate_expiry_days", "expired") == pytest.approx(-2, abs=0.1)
    assert sample("mss_peer_certificate_expiry_days", "closed") is None  # nothing presented
    assert sample("mss_peer_dn_match", "ok") == 1 and sample("mss_peer_dn_match", "dn") == 0
    assert sample("mss_peer_dn_match", "silent") is None
    assert value("mss_peer_probe_success", {"peer": scene.settings.domain}) is None
    text = generate_latest(metrics.registry).decode()
    assert 'mss_peer_dn_match{peer="autre-dn.test"} 0.0' in text
    assert "# TYPE mss_peer_probe_success gauge" in text
    assert 'mss_peer_probe_success{peer="sain.test"} 1.0' in text


def test_no_sample_before_any_probe() -> None:
    metrics = Metrics()
    assert metrics.registry.get_sample_value("mss_peer_probe_success", {"peer": "x"}) is None
    metrics.watch_peers(list)
    assert "mss_peer_probe_success{" not in generate_latest(metrics.registry).decode()


# ---------------------------------------------------------------- the commands
def test_mss_peers_check_prints_a_french_table_and_fails_for_cron(scene: Scene) -> None:
    result = mss(scene.settings.data_dir, "peers", "check", "--timeout", str(TIMEOUT))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Domaine", "Relais", "État", "TLS", "DN", "Chaîne",
                                "Révocation", "Expire", "dans"]
    row = next(line for line in lines if line.startswith("sain.test "))
    assert " OK " in row and "conforme" in row and "non révoqué" in row
    assert "TLSv1.3" in row or "TLSv1.2" in row
    assert "10 j (ATTN)" in next(line for line in lines if line.startswith("bientot.test "))
    assert "EXPIRÉ (2 j)" in next(line for line in lines if line.startswith("expire.test "))
    dn_row = lines.index(next(line for line in lines if line.startswith("autre-dn.test ")))
    assert "NON CONFORME" in lines[dn_row]
    assert lines[dn_row + 1] == ("    → DN différent de la liste blanche : présenté « CN=relais"
                                 ".autre-dn.test,O=Pair Santé », liste blanche « CN=relais"
                                 ".ailleurs.test,O=Pair Santé »")
    assert "→ connexion refusée : 127.0.0.1:" in result.stdout
    assert "RÉVOQUÉ" in result.stdout
    assert lines[-1].startswith(f"{len(DOMAINS)} pair(s) : 4 en bon état, 8 en échec (")


def test_mss_peers_check_one_domain_json_and_refusals(scene: Scene) -> None:
    one = mss(scene.settings.data_dir, "peers", "check", "--domain", "sain.test")
    assert one.returncode == 0, one.stdout + one.stderr
    assert one.stdout.splitlines()[-1] == "1 pair(s) : 1 en bon état, 0 en échec."
    as_json = mss(scene.settings.data_dir, "peer", "check", "--domain", "revoque.test",
                  "--json")  # the group's first name still works
    assert as_json.returncode == 1
    [found] = json.loads(as_json.stdout)
    assert found["domain"] == "revoque.test" and found["ok"] is False
    assert found["failure"] == "revoked" and found["revocation"] == "revoked"
    assert found["days_left"] > 1000 and found["relay"].startswith("127.0.0.1:")
    for bad in ("nulle.part", scene.settings.domain):
        refused = mss(scene.settings.data_dir, "peers", "check", "--domain", bad)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"Erreur : domaine {bad} absent de la liste blanche" in refused.stderr
    assert mss(scene.settings.data_dir, "peers", "check", "--timeout", "0").returncode == 2


def test_mss_peers_status_prints_the_last_results_without_probing(scene: Scene) -> None:
    with scene.app.db.transaction() as session:
        session.execute(delete(PeerProbe).where(PeerProbe.domain == "muet.test"))
        count = len(session.scalars(select(PeerProbe.id)).all())
    result = mss(scene.settings.data_dir, "peers", "status")
    assert result.returncode == 1  # a last result is a failure
    with scene.app.db.read() as session:
        assert len(session.scalars(select(PeerProbe.id)).all()) == count  # nothing probed
    assert "Vérifié le" in result.stdout.splitlines()[0]
    row = next(line for line in result.stdout.splitlines() if line.startswith("sain.test "))
    assert " à " in row and "/20" in row  # 05/12/2026 à 09:06, Paris time
    silent = next(line for line in result.stdout.splitlines() if line.startswith("muet.test "))
    assert "jamais vérifié" in silent
    assert "1 jamais vérifié(s)" in result.stdout.splitlines()[-1]
    as_json = json.loads(mss(scene.settings.data_dir, "peers", "status", "--json").stdout)
    assert {"domain": "muet.test", "ok": None, "at": None} in as_json


def test_peers_check_on_an_empty_whitelist(tmp_path: Path) -> None:
    assert mss(tmp_path, "init").returncode == 0
    empty = mss(tmp_path, "peers", "check")
    assert empty.returncode == 0 and "Aucun pair dans la liste blanche" in empty.stdout
    assert mss(tmp_path, "peers", "status").returncode == 0


# ---------------------------------------------------------------- mss run's schedule, setting
def test_the_schedule_probes_what_is_due(scene: Scene) -> None:
    off = PeerProber(scene.settings.replace(peer_probe_seconds=0), scene.app.db)
    off.start()
    assert off._thread is None and "MSS_PEER_PROBE_SECONDS = 0" in off.endpoints()[0]
    scene.forget_probes()
    prober = PeerProber(scene.settings.replace(peer_probe_seconds=3600), scene.app.db,
                        poll=0.05)
    assert "toutes les 1 h" in prober.endpoints()[0]
    prober.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with scene.app.db.read() as session:
                if len(health.latest(session)) == len(DOMAINS):
                    break
            time.sleep(0.1)
        time.sleep(0.3)  # several polls more: nothing is due again for an hour
    finally:
        prober.stop()
    with scene.app.db.transaction() as session:
        rows = session.scalars(select(PeerProbe)).all()
        records = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "peers.check", AuditRecord.actor == "gateway")).all()
    assert len(rows) == len(DOMAINS) and {r.requested_by for r in rows} == {"planifié"}
    assert len(records) == 1
    assert prober.run_once() is None  # not due
    with scene.app.db.transaction() as session:  # an hour later for one peer
        row = session.scalars(select(PeerProbe).where(PeerProbe.domain == "ferme.test")).one()
        row.at = row.at - timedelta(hours=2)
    assert prober.run_once() == ["ferme.test"]


def test_the_setting(settings: Settings) -> None:
    assert settings.peer_probe_seconds == 3600
    assert settings.replace(peer_probe_seconds=0).peer_probe_seconds == 0
    with pytest.raises(ConfigError, match="MSS_PEER_PROBE_SECONDS doit valoir 0"):
        settings.replace(peer_probe_seconds=30).validate()
    loaded = Settings.load(data_dir=settings.data_dir,
                           environ={"MSS_PEER_PROBE_SECONDS": "0"})
    assert loaded.peer_probe_seconds == 0
    with pytest.raises(ConfigError, match="MSS_PEER_PROBE_SECONDS : valeur invalide"):
        Settings.load(data_dir=settings.data_dir, environ={"MSS_PEER_PROBE_SECONDS": "1h"})


def test_mss_run_starts_the_probe_with_the_gateway() -> None:
    from mss.run import _peers, services_for

    assert _peers in services_for("gateway") and _peers in services_for("all")
    assert _peers not in services_for("webmail")


# ---------------------------------------------------------------- the page's forms
@pytest.fixture(scope="module")
def operator_client(scene: Scene) -> Any:
    with scene.app.db.transaction() as session:
        session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                            password_hash=hash_password(PASSWORD), failed_attempts=0,
                            otp_channel=OtpChannel.TOTP,
                            totp_secret=otp.seal_seed(OPERATOR_SEED, scene.settings.secret())))
    seed_traffic(scene.app.db, "sain.test", scene.relays["ok"].dn, utcnow())

    def client(peer_check: Any) -> Any:
        from webmail.models import TotpUse

        app = create_app(scene.settings, scene.app.db,
                         {"TESTING": True, "RATE_LOGIN": "1000 per minute",
                          "RATE_CODE": "1000 per minute"}, peer_check=peer_check)
        c = app.test_client()
        c.environ_base.update({"wsgi.url_scheme": "https", "REMOTE_ADDR": "127.0.0.9"})
        with scene.app.db.transaction() as session:
            session.execute(delete(TotpUse))
        assert c.post("/connexion", data={"csrf_token": token(c, "/connexion"),
                                          "identifier": OPERATOR,
                                          "password": PASSWORD}).status_code == 302
        assert c.post("/connexion/code", data={
            "csrf_token": token(c, "/connexion/code"),
            "code": pyotp.TOTP(OPERATOR_SEED).now()}).status_code == 302
        return c

    return client


def _checks(scene: Scene) -> list[AuditRecord]:
    with scene.app.db.transaction() as session:
        return list(session.scalars(select(AuditRecord).where(
            AuditRecord.action == "peers.check").order_by(AuditRecord.id)))


def test_the_page_shows_each_peers_health(scene: Scene, operator_client: Any) -> None:
    probe.check(scene.app.db, scene.settings, requested_by="test", actor="test",
                      timeout=TIMEOUT)
    page = operator_client(checker(scene.settings, scene.app.db)).get("/operateur/pairs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "4 en bon état" in html and "8 en échec" in html
    assert "NON CONFORME" in html and "CN=relais.ailleurs.test,O=Pair Santé" in html
    assert "certificate has expired (OpenSSL, code 10)" in html
    assert 'badge badge-red">expiré depuis 2 jours' in html
    assert 'badge badge-amber">9 jours restants' in html or \
        'badge badge-amber">10 jours restants' in html
    assert "1 envoyé(s)" in html and "2 reçu(s)" in html and "1 différé(s)" in html
    assert "1 refusé(s) par le pair" in html and "2 refusé(s) par nous" in html
    assert "message en attente depuis 3 h" in html
    assert "Nos certificats" in html and '<code class="cmd">mss cert renew operator</code>' in html
    assert '<code class="cmd">mss cert renew server</code>' in html
    assert '<code class="cmd">mss cert renew crl</code>' in html
    assert html.index("expire.test") < html.index("id=\"pair-sain.test\"")  # failures first


def test_verifier_maintenant_needs_csrf_and_is_audited(scene: Scene,
                                                      operator_client: Any) -> None:
    client = operator_client(checker(scene.settings, scene.app.db))
    before = len(_checks(scene))
    assert client.post("/operateur/pairs/verifier", data={"domaine": "sain.test"}
                       ).status_code == 400  # no CSRF token: nothing probed
    assert len(_checks(scene)) == before
    answer = client.post("/operateur/pairs/verifier", data={
        "csrf_token": token(client, "/operateur/pairs"), "domaine": "sain.test"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("#pair-sain.test")
    record = _checks(scene)[-1]
    assert (record.actor, record.target, record.outcome) == (OPERATOR, "sain.test", "ok")
    assert json.loads(record.request)["via"] == "operateur"
    assert json.loads(record.request)["ip"] == "127.0.0.9"
    html = client.get("/operateur/pairs").get_data(as_text=True)
    assert "Vérification faite : 1 pair(s), 1 en bon état, 0 en échec." in html
    client.post("/operateur/pairs/verifier", data={
        "csrf_token": token(client, "/operateur/pairs"), "domaine": "ailleurs.test"})
    assert _checks(scene)[-1].outcome == "not_found"
    assert "Vérification impossible : domaine ailleurs.test absent" in client.get(
        "/operateur/pairs").get_data(as_text=True)
    anonymous = client.application.test_client()
    anonymous.environ_base["wsgi.url_scheme"] = "https"
    assert anonymous.post("/operateur/pairs/verifier").status_code in (302, 400, 401, 403)
    assert len(_checks(scene)) == before + 2


def test_without_the_checking_function_the_button_says_so(scene: Scene,
                                                          operator_client: Any) -> None:
    client = operator_client(None)
    html = client.get("/operateur/pairs").get_data(as_text=True)
    assert "Vérification indisponible dans ce processus" in html
    client.post("/operateur/pairs/verifier", data={
        "csrf_token": token(client, "/operateur/pairs")})
    assert _checks(scene)[-1].outcome == "unavailable"


def test_expected_dates_are_in_paris_time(scene: Scene, operator_client: Any) -> None:
    from core.localtime import french_datetime

    with scene.app.db.read() as session:
        at = health.latest(session, ["sain.test"])["sain.test"].at
    html = operator_client(None).get("/operateur/pairs").get_data(as_text=True)
    assert french_datetime(at) in html and at.astimezone(UTC).tzinfo is UTC


def test_probe_cli_run_is_a_subprocess_with_no_traceback(scene: Scene) -> None:
    """The command's stderr carries only its progress line (no log noise, no traceback)."""
    result = mss(scene.settings.data_dir, "peers", "check", "--domain", "ferme.test")
    assert result.returncode == 1
    assert result.stderr.strip() == "Vérification des relais des pairs …"


def test_the_alert_rules_and_their_unit_tests_cover_the_peers() -> None:
    """The four rules exist, read only the peer gauges, and each has a promtool unit test
    where it fires (tests/test_monitoring.py runs promtool on both files)."""
    import yaml

    root = Path(__file__).parent.parent / "deploy" / "prometheus"
    rules = {r["alert"]: r for g in yaml.safe_load((root / "alerts.yml").read_text("utf-8"))
             ["groups"] for r in g["rules"]}
    tests = yaml.safe_load((root / "alerts_test.yml").read_text("utf-8"))["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    for name, metric in (("MssPairEnEchec", "mss_peer_probe_failures_in_a_row"),
                         ("MssCertificatPairExpireBientot", "mss_peer_certificate_expiry_days"),
                         ("MssPairDnNonConforme", "mss_peer_dn_match"),
                         ("MssPairNonVerifie", "mss_peer_probe_timestamp_seconds")):
        assert metric in rules[name]["expr"] and name in fired
        assert "{{ $labels.peer }}" in rules[name]["annotations"]["summary"]
