"""Monitoring (issue #20): our certificates' and CRL's days left as metrics read at each scrape,
the queue's oldest message, ``mss cert status``, and the shipped Prometheus rules and Grafana
dashboard — checked by the real ``promtool`` (Debian package ``prometheus``), their unit tests
fired on synthetic series, and every expression naming only metrics mss or node_exporter
export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.db import Database
from gateway.metrics import Metrics
from spool import queue as q
from spool.models import Origin, RecipientKind, RecipientState
from tests.test_cli import mss

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mss.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (paquet prometheus)")
NODE_EXPORTER = {"node_filesystem_avail_bytes", "node_filesystem_size_bytes", "up"}
NOW = datetime.now(UTC)


# ------------------------------------------------------------------ a PKI directory
def _cert(subject: str, key: ec.EllipticCurvePrivateKey, days: float,
          issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=days))
            .sign(issuer_key, hashes.SHA256()))


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_pki(pki: Path, *, operator_days: float, crl_days: float) -> None:
    """``mss init``'s file layout with chosen end dates (EC keys: fast)."""
    pki.mkdir(parents=True, exist_ok=True)
    root_key, issuing_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in "abc")
    root = _cert("AC racine", root_key, 7300)
    issuing = _cert("AC", issuing_key, 3650, (root.subject, root_key))
    (pki / "ca.pem").write_bytes(_pem(issuing, root))
    (pki / "server.crt").write_bytes(_pem(_cert("mss.test", leaf_key, 400,
                                                (issuing.subject, issuing_key)), issuing))
    (pki / "operator.crt").write_bytes(_pem(_cert("relais", leaf_key, operator_days,
                                                  (issuing.subject, issuing_key))))
    crls = []
    for ca, key, days in ((issuing, issuing_key, crl_days), (root, root_key, 30)):
        crls.append(x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
                    .last_update(NOW - timedelta(hours=1))
                    .next_update(NOW + timedelta(days=days)).sign(key, hashes.SHA256()))
    (pki / "crl.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                           for c in crls))


def test_certificate_days_are_read_at_each_scrape(tmp_path: Path) -> None:
    write_pki(tmp_path, operator_days=20, crl_days=0.5)
    metrics = Metrics()
    metrics.watch_certificates(tmp_path)
    metrics.watch_certificates(tmp_path)  # once only: a second registration would raise
    value = metrics.registry.get_sample_value

    def days(name: str) -> float | None:
        return value("mss_certificate_expiry_days", {"certificate": name})

    assert days("operator") == pytest.approx(20, abs=0.01)
    assert days("server") == pytest.approx(400, abs=0.01)
    assert days("issuing_ca") == pytest.approx(3650, abs=0.01)
    assert days("root_ca") == pytest.approx(7300, abs=0.01)
    assert value("mss_crl_next_update_days") == pytest.approx(0.5, abs=0.01)  # the earliest
    (tmp_path / "operator.crt").unlink()
    (tmp_path / "crl.pem").write_text("pas une CRL")
    assert days("operator") is None and value("mss_crl_next_update_days") is None
    assert days("server") == pytest.approx(400, abs=0.01)  # the scrape still answers
    write_pki(tmp_path, operator_days=365, crl_days=7)  # renewed on disk: no restart
    assert days("operator") == pytest.approx(365, abs=0.01)


def test_queue_oldest_pending(db: Database) -> None:
    with db.read() as session:
        assert q.oldest_pending(session) is None
    with q.appending(db) as conn:
        q.enqueue(conn, queue_id="Q1", origin=Origin.SUBMISSION, envelope_from="a@mss.test",
                  message_key="<1@mss.test>", submitter="a", size=1, local=b"x",
                  recipients=[("b@mss.test", RecipientKind.LOCAL)])
    with db.read() as session:
        oldest = q.oldest_pending(session)
    assert oldest is not None and abs((datetime.now(UTC) - oldest).total_seconds()) < 60
    claimed = q.claim(db, "test", limit=10, lease_seconds=60)
    with q.writing(db) as session:
        q.record(session, [q.Done(c, r, RecipientState.DELIVERED, "250")
                           for c in claimed for r in c.rows])
    with db.read() as session:
        assert q.oldest_pending(session) is None


def test_cert_status_command(tmp_path: Path) -> None:
    write_pki(tmp_path / "pki", operator_days=20, crl_days=3)
    warned = mss(tmp_path, "cert", "status")
    assert warned.returncode == 1, warned.stderr
    assert re.search(r"\[ATTN\] certificat opérateur +20\.0 j", warned.stdout)
    assert re.search(r"\[OK  \] liste de révocation +3\.0 j", warned.stdout)
    assert mss(tmp_path, "cert", "status", "--warn-days", "10").returncode == 0
    (tmp_path / "pki" / "server.crt").unlink()
    missing = mss(tmp_path, "cert", "status", "--warn-days", "10")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "[ÉCHEC] certificat serveur" in missing.stdout and "fichier absent" in missing.stdout


# ------------------------------------------------------------------ rules and dashboard
def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the gateway's registry can produce."""
    metrics = Metrics()
    metrics.watch_certificates(tmp_path)
    names = set()
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    for family in metrics.registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, matchers, groupings, ranges and
    function names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if not rest.startswith("(") and match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_targets() -> list[dict[str, object]]:
    panels = json.loads(DASHBOARD.read_text("utf-8"))["panels"]
    flat = panels + [p for row in panels for p in row.get("panels", [])]
    return [t for p in flat for t in p.get("targets", [])]


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (kind) (rate(mss_deferred_total{kind=~"peer|clear"}[15m])) '
                        '/ on (x) group_left (y) up') == {"mss_deferred_total", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) > 4 * 3600"
                        ) == {"a_bucket"}


def test_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    allowed = exported_names(tmp_path) | NODE_EXPORTER
    assert {"mss_queue_oldest_age_seconds", "mss_certificate_expiry_days",
            "mss_crl_next_update_days", "mss_delivered_total"} <= allowed
    used = set().union(*(metric_names(e) for e in rule_exprs()))
    assert used and used <= allowed, used - allowed
    rules = [r for g in yaml.safe_load(RULES.read_text("utf-8"))["groups"] for r in g["rules"]]
    for rule in rules:  # French annotations on every rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["labels"]["severity"] in ("warning", "critical")
    assert {"MssCertificatExpireBientot", "MssFileAttenteAncienne", "MssRemisesPairsDifferees",
            "MssTauxDeRefusEleve", "MssDisqueDonneesPresquePlein", "MssListeBlancheAExaminer",
            "MssListeBlancheNonRecuperee", "MssBoitesPresquePleines"} <= {r["alert"] for r in rules}


def test_dashboard_names_only_exported_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    for panel in panels + [p for row in panels for p in row.get("panels", [])]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
    targets = dashboard_targets()
    assert len(targets) >= 10
    allowed = exported_names(tmp_path) | NODE_EXPORTER
    for target in targets:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        names = metric_names(str(target["expr"]))
        assert names and names <= allowed, (target["expr"], names - allowed)


def _promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@needs_promtool
def test_promtool_checks_and_tests_the_rules() -> None:
    checked = _promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text("utf-8"))["groups"])
    assert rules >= 22 and f"SUCCESS: {rules} rules found" in checked.stdout
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """Grafana's ``$__rate_interval`` is a duration at query time; every expression, with it
    replaced, is given to promtool as a recording rule: a typo would not parse."""
    exprs = [str(t["expr"]).replace("$__rate_interval", "5m") for t in dashboard_targets()]
    rules = {"groups": [{"name": "tableau", "rules": [
        {"record": f"mss_tableau:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), "utf-8")
    checked = _promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_sees_a_broken_rule(tmp_path: Path) -> None:
    """The check is real: an unparsable expression fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text("utf-8").replace(
        "mss_certificate_expiry_days < 30", "mss_certificate_expiry_days < < 30"), "utf-8")
    assert _promtool("check", "rules", broken).returncode != 0
