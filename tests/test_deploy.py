"""The container deployment files: ``docker compose config`` when the Docker client has the
compose plugin, else (no Docker engine here) a schema check of ``docker-compose.yml`` with
PyYAML, plus ``Dockerfile``, ``.env.example`` and ``.dockerignore``."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from mss.run import ROLES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "init", "dovecot", "gateway", "webmail"}
SETTINGS = {f"MSS_{f.name.upper()}" for f in dataclasses.fields(Settings)} - {"MSS_EXTRA"}
_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"],
                                        capture_output=True).returncode != 0:
        pytest.skip("pas de client docker avec le greffon compose : vérification par schéma")
    env = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env)
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file", str(env),
                           "config", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_services_roles_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert {"pg-data", "mss-data"} <= set(compose["volumes"])
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, (name, dep)
            assert cond["condition"] in ("service_healthy", "service_completed_successfully",
                                         "service_started")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], dep
        if name not in ("postgres", "init"):
            command = svc["command"]
            assert command[:2] == ["run", "--role"] and command[2] in ROLES, name
            assert "healthcheck" in svc, name
            assert "mss-data:/var/lib/mss" in svc["volumes"], name
            assert svc["environment"]["MSS_DATABASE_URL"].startswith("postgresql"), name
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "mss init" in services["init"]["command"][0]


def test_postgres_is_the_official_image_with_a_volume(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert any(v.startswith("pg-data:") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_gateway_scales_without_host_port_conflicts(compose: dict[str, Any]) -> None:
    """``--scale gateway=N``: only container ports, so Docker picks distinct host ports."""
    gateway = compose["services"]["gateway"]
    assert "container_name" not in gateway
    assert all(":" not in str(port) for port in gateway["ports"])


def test_every_role_on_its_own_address_and_two_gateways(compose: dict[str, Any]) -> None:
    """No shared network namespace: the roles reach each other by service name, over TLS
    (LMTP to the store, IMAP and submission from the webmail), and the relay runs twice."""
    services = compose["services"]
    assert not [name for name, svc in services.items() if "network_mode" in svc]
    assert services["gateway"]["deploy"]["replicas"] == 2
    env = services["webmail"]["environment"]
    assert env["MSS_LMTP_URL"] == "lmtps://dovecot:2424"
    assert (env["MSS_IMAP_HOST"], env["MSS_SUBMISSION_HOST"]) == ("dovecot", "gateway")
    assert "2424" in [str(p) for p in services["dovecot"]["expose"]]
    settings = Settings.load(data_dir="/var/lib/mss", environ={
        "MSS_LMTP_URL": env["MSS_LMTP_URL"], "MSS_IMAP_HOST": env["MSS_IMAP_HOST"],
        "MSS_SUBMISSION_HOST": env["MSS_SUBMISSION_HOST"]})
    endpoint = settings.lmtp_endpoint
    assert endpoint is not None and endpoint.tls and (endpoint.host, endpoint.port) == (
        "dovecot", 2424)


def test_no_secret_inline_and_every_variable_defined(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    example = _env_example()
    for name in set(_VAR.findall(text)):
        assert name in example or f"${{{name}:-" in text, f"{name} absent de .env.example"
    for svc in compose["services"].values():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if _SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"secret en clair : {key}"
        url = env.get("MSS_DATABASE_URL", "")
        assert not url or "${POSTGRES_PASSWORD" in url
    for key, value in example.items():
        if _SECRET_NAME.search(key) and value:
            assert value == "change-me", f".env.example : {key} doit rester un exemple"


def test_mss_variables_are_settings(compose: dict[str, Any]) -> None:
    names = set(_env_example())
    for svc in compose["services"].values():
        names |= set(svc.get("environment") or {})
    names |= set(re.findall(r"\b(MSS_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    unknown = {n for n in names if n.startswith("MSS_")} - SETTINGS
    assert not unknown, f"variables inconnues de core/settings.py : {sorted(unknown)}"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM (python:3\.11-slim-bookworm|debian:bookworm)", text, re.M)
    for package in ("dovecot-imapd", "dovecot-lmtpd", "dovecot-pgsql", "softhsm2", "openssl"):
        assert package in text, package
    assert "requirements.lock" in text and (ROOT / "requirements.lock").exists()
    assert re.search(r"^USER (?!root)\S+", text, re.M), "l'image doit tourner sans root"
    assert 'ENTRYPOINT ["mss"]' in text
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py")
                      if p.parent.name not in ("tests", "bench"))
    assert {"core", "mailformat", "spool", "peers", "gateway", "webmail", "mss"} <= set(packages)
    for package in packages:  # every package the code imports is in the image
        assert f"COPY {package} ./{package}" in text, package
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored
