"""The `mss` command as an operator runs it: a real subprocess on a real data directory."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

MSS = [sys.executable, "-m", "mss.cli"]
PASSWORD = "Demo-Passw0rd"


def mss(data_dir: Path, *args: str, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    full_env.update({"MSS_DEMO_PASSWORD": PASSWORD, **(env or {})})
    return subprocess.run([*MSS, "--data-dir", str(data_dir), *args], input=input,
                          capture_output=True, text=True, env=full_env, timeout=120,
                          cwd=Path(__file__).parent.parent)


def assert_clean_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Erreur : ") or "\nErreur : " in result.stderr
    assert text in result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    result = mss(data, "demo")
    assert result.returncode == 0, result.stderr
    assert "marie.martin@mss.test" in result.stdout and PASSWORD not in result.stdout
    assert str(data / "demo-password") in result.stdout  # where to read it (issue #14)
    return data


def test_demo_creates_the_trust_space(demo: Path) -> None:
    for name in ("marie.martin", "paul.durand", "julie.bernard"):
        cert = x509.load_pem_x509_certificate((demo / "demo" / f"{name}@mss.test.crt").read_bytes())
        assert cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
        assert (demo / "demo" / f"{name}@mss.test.key").stat().st_mode & 0o777 == 0o600
    assert (demo / "demo" / "lps.cabinetmartin@mss.test.crt").exists()
    cards = mss(demo, "card", "list").stdout.split()
    assert cards == ["CPS-0640000003", "CPS-810000000001", "CPS-810000000002"]
    found = mss(demo, "directory", "search", "--name", "bernard").stdout
    assert "julie.bernard@mss.test" in found
    ca = (demo / "pki" / "ca.pem").read_text()
    assert ca.count("BEGIN CERTIFICATE") == 2
    # Outside the test suite (which hashes cheaply, tests/conftest.py) the real parameters.
    with contextlib.closing(sqlite3.connect(demo / "mss.db")) as conn:
        hashes = {h for (h,) in conn.execute(
            "SELECT password_hash FROM account WHERE password_hash IS NOT NULL")}
    assert hashes and all(h.startswith("$argon2id$v=19$m=65536,t=3,p=1$") for h in hashes)


def test_demo_is_idempotent(demo: Path) -> None:
    before = mss(demo, "cert", "list").stdout
    again = mss(demo, "demo")
    assert again.returncode == 0, again.stderr
    assert mss(demo, "cert", "list").stdout == before
    assert mss(demo, "card", "list").stdout.split() == [
        "CPS-0640000003", "CPS-810000000001", "CPS-810000000002"]


def test_card_read_and_wrong_pin(demo: Path) -> None:
    ok = mss(demo, "card", "read", "CPS-810000000002", "--pin", "1234")
    assert ok.returncode == 0 and "Paul Durand" in ok.stdout and "810000000002" in ok.stdout
    assert_clean_error(mss(demo, "card", "read", "CPS-810000000002", "--pin", "0000"),
                       "Code PIN incorrect")
    assert_clean_error(mss(demo, "card", "read", "CPS-nope", "--pin", "1234"), "introuvable")


def test_cert_issue_revoke_crl(demo: Path, tmp_path: Path) -> None:
    issued = mss(demo, "cert", "issue", "mailbox", "secretariat@mss.test", "--out", str(tmp_path))
    assert issued.returncode == 0, issued.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "secretariat@mss.test.crt").read_bytes())
    serial = format(cert.serial_number, "x")
    revoked = mss(demo, "cert", "revoke", serial, "--reason", "keyCompromise")
    assert revoked.returncode == 0, revoked.stderr
    text = subprocess.run(["openssl", "crl", "-in", str(demo / "pki" / "crl.pem"), "-noout",
                           "-text"], capture_output=True, text=True, check=True).stdout
    assert serial.upper().lstrip("0") in text.replace(":", "").upper()
    assert_clean_error(mss(demo, "cert", "revoke", "abcdef12"), "inconnu")
    assert_clean_error(mss(demo, "cert", "issue", "mailbox", "pas-une-adresse"), "adresse")


def test_card_provision_for_a_new_professional(demo: Path, tmp_path: Path) -> None:
    csv = tmp_path / "pros.csv"
    csv.write_text("rpps;prenom;nom;profession;code_postal;ville\n"
                   "10000000042;Éloïse;Lefèvre;Sage-femme;64100;Bayonne\n", encoding="utf-8")
    assert mss(demo, "directory", "import", "--professionals", str(csv)).returncode == 0
    made = mss(demo, "card", "provision", "10000000042", "--pin", "4321")
    assert made.returncode == 0, made.stderr
    assert "CPS-810000000042" in made.stdout
    read = mss(demo, "card", "read", "CPS-810000000042", "--pin", "4321")
    assert "Éloïse Lefèvre" in read.stdout
    assert_clean_error(mss(demo, "card", "provision", "10000000042", "--pin", "12"), "PIN")
    assert_clean_error(mss(demo, "card", "provision", "19999999999", "--pin", "1234"), "")


def test_directory_import_errors_are_listed_and_nothing_written(demo: Path,
                                                               tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("rpps,prenom,nom,profession\n"
                   "10000000077,Ana,Costa,Médecin\n"
                   "123,Bob,Nul,Médecin\n", encoding="utf-8")
    result = mss(demo, "directory", "import", "--professionals", str(csv))
    assert_clean_error(result, "rien n'a été écrit")
    assert "ligne 3" in result.stderr and "rpps" in result.stderr
    assert "costa" not in mss(demo, "directory", "search", "--name", "costa").stdout.lower()
    usage = mss(demo, "directory", "import", str(csv))
    assert usage.returncode == 2 and "--professionals" in usage.stderr


def test_whitelist_import_export_and_errors(demo: Path, tmp_path: Path) -> None:
    peer = tmp_path / "peer"
    assert mss(peer, "init", "--domain", "autre.test").returncode == 0
    exported = mss(peer, "whitelist", "export", "-o", str(tmp_path / "wl.xml"))
    assert exported.returncode == 0, exported.stderr
    dry = mss(demo, "whitelist", "import", str(tmp_path / "wl.xml"), "--dry-run")
    assert dry.returncode == 0 and "+ autre.test" in dry.stdout and "changerait" in dry.stdout
    assert "autre.test" not in mss(demo, "whitelist", "list").stdout
    done = mss(demo, "whitelist", "import", str(tmp_path / "wl.xml"), "--merge")
    assert done.returncode == 0 and "+ autre.test" in done.stdout
    assert "CN=autre.test" in mss(demo, "whitelist", "list").stdout
    broken = tmp_path / "broken.xml"
    broken.write_text("<ListeBlanche xmlns='https://listeblanche.mssante.fr/schema'><Domaine>")
    assert_clean_error(mss(demo, "whitelist", "import", str(broken)), "rien n'a changé")
    assert "autre.test" in mss(demo, "whitelist", "list").stdout


def test_audit_verify_detects_tampering(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert mss(data, "init").returncode == 0
    assert mss(data, "cert", "issue", "server", "mx.mss.test", "--out", str(tmp_path)
               ).returncode == 0
    ok = mss(data, "audit", "verify")
    assert ok.returncode == 0 and "intègre" in ok.stdout
    with sqlite3.connect(data / "mss.db") as conn:
        conn.execute("UPDATE audit_record SET outcome = 'refused' WHERE id = 1")
    assert_clean_error(mss(data, "audit", "verify"), "altéré")


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    assert_clean_error(mss(tmp_path / "x", "init", env={"MSS_IMAP_PORT": "abc"}),
                       "MSS_IMAP_PORT")
    assert_clean_error(mss(tmp_path / "y", "init", "--domain", "pas un domaine"), "MSS_DOMAIN")
    dead = mss(tmp_path / "z", "init",
               env={"MSS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert_clean_error(dead, "base de données inaccessible")
