"""The demo's and the tests' stand-in for Pro Santé Connect: panva's ``oidc-provider`` (npm,
OpenID Certified) run by Node on loopback, configured from the data directory (issue #16).

Pro Santé Connect itself is a national service that cannot exist here; the stand-in is a real
OpenID Connect provider with PSC's particulars (scope ``scope_all``, acr ``eidas1``, the national
id in ``SubjectNameID``), so that the webmail's login, the tokens on IMAP/SMTP and their checks
run against the real protocol. Its sign-in page takes a national id (8 + RPPS / 0 + ADELI) of
the directory and, as the e-CPS code, the demo password.

Layout of ``DATA_DIR/psc-standin`` (mode 0700)::

    config.json       what provider.mjs reads (rewritten at each start; mode 0600)
    signing-key.json  the provider's RS256 key (JWK, kept so tokens survive a restart)
    clients.json      client ids and secrets: the webmail's, a practice software's (LPS), and a
                      service whose tokens mss must refuse (another audience)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.errors import ConfigError
from core.settings import Settings
from mss.app import App

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "standins" / "psc"
WEBMAIL_CLIENT, LPS_CLIENT, OTHER_CLIENT = "mss-webmail", "lps-demo", "autre-service"
DEFAULT_PORT = 9443
START_TIMEOUT = 30.0  # seconds
# Someone PSC knows whom the directory does not: the stand-in's way to show registration.
NEWCOMER = {"national_id": "810000000099", "given_name": "Léa", "family_name": "Roux",
            "civility": "DR", "profession_code": "10", "role": "10", "organisation": ""}


def standin_dir(settings: Settings) -> Path:
    return settings.data_dir / "psc-standin"


def _private_json(path: Path, make: Any) -> Any:
    """The JSON in ``path``, created by ``make()`` (mode 0600) when absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(make(), fh)
    return json.loads(path.read_text())


def clients(settings: Settings) -> dict[str, str]:
    """Client id → secret of the stand-in's clients (created once)."""
    return dict(_private_json(standin_dir(settings) / "clients.json", lambda: {
        name: secrets.token_urlsafe(32) for name in (WEBMAIL_CLIENT, LPS_CLIENT, OTHER_CLIENT)}))


def issuer(settings: Settings, port: int) -> str:
    return f"https://{settings.hostname}:{port}"


def demo_settings(settings: Settings, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The settings that point mss at the stand-in on ``port`` (``mss demo`` writes them into
    mss.toml; tests pass them as overrides)."""
    return {"oidc_issuer": issuer(settings, port), "oidc_client_id": WEBMAIL_CLIENT,
            "oidc_client_secret": clients(settings)[WEBMAIL_CLIENT],
            "oidc_ca_file": str(settings.pki_dir / "ca.pem"),
            "oidc_accepted_clients": LPS_CLIENT, "oidc_standin_port": port}


def enable_in_toml(settings: Settings, port: int = DEFAULT_PORT) -> bool:
    """Point this data directory at the stand-in (``mss demo``): the ``oidc_*`` settings are
    appended to mss.toml (mode 0600: it then holds the client secret), unless an issuer is
    already configured there or in the environment. Returns True when written."""
    if settings.oidc_issuer:
        return False
    toml = settings.data_dir / "mss.toml"
    text = toml.read_text(encoding="utf-8") if toml.exists() else ""
    if "oidc_issuer" in text:
        return False
    lines = ["", "# Pro Santé Connect: the demo's local stand-in (mss/psc_standin.py)."]
    lines += [f"{key} = {json.dumps(value) if isinstance(value, str) else value}"
              for key, value in demo_settings(settings, port).items()]
    fd = os.open(toml, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return True


def _signing_key() -> dict[str, Any]:
    from joserfc.jwk import RSAKey

    jwk = dict(RSAKey.generate_key(2048, private=True).as_dict(private=True))
    jwk.update(use="sig", alg="RS256", kid=secrets.token_hex(8))
    return jwk


def _accounts(app: App) -> list[dict[str, str]]:
    from trust_space.models import Professional

    out = [NEWCOMER]
    with app.db.transaction() as session:
        for pro in session.scalars(select(Professional)):
            if not pro.national_id:
                continue
            out.append({"national_id": pro.national_id, "given_name": pro.first_name,
                        "family_name": pro.last_name, "civility": pro.civility.upper(),
                        "profession_code": "", "role": "", "organisation": ""})
    return out


def client_configs(settings: Settings) -> list[dict[str, Any]]:
    """The stand-in's registered clients (RFC 7591 metadata)."""
    secrets_of = clients(settings)
    web = f"https://{settings.hostname}:{settings.web_port}"
    base = {"grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic"}
    return [
        {**base, "client_id": WEBMAIL_CLIENT, "client_secret": secrets_of[WEBMAIL_CLIENT],
         "client_name": "Messagerie sécurisée de santé (webmail)",
         "redirect_uris": [f"{web}/connexion/psc/retour"],
         "post_logout_redirect_uris": [f"{web}/connexion"]},
        {**base, "client_id": LPS_CLIENT, "client_secret": secrets_of[LPS_CLIENT],
         "client_name": "Logiciel de cabinet (démonstration)",
         "redirect_uris": ["https://localhost/lps/retour"]},
        {**base, "client_id": OTHER_CLIENT, "client_secret": secrets_of[OTHER_CLIENT],
         "client_name": "Autre service", "redirect_uris": ["https://localhost/autre/retour"]},
    ]


def write_config(app: App, *, access_token_seconds: int = 600,
                 id_token_seconds: int = 600) -> Path:
    """Write ``config.json`` for provider.mjs from the settings and the directory
    (``access_token_seconds``: access tokens' lifetime; tests shorten it to see them expire;
    ``id_token_seconds``: ID tokens' lifetime, negative in tests for ID tokens already
    expired when issued)."""
    s = app.settings
    home = standin_dir(s)
    config = {
        "issuer": issuer(s, s.oidc_standin_port), "host": s.listen_address,
        "port": s.oidc_standin_port, "code": s.demo_password or _demo_password(s),
        # absolute: Node runs in PACKAGE_DIR, and MSS_DATA_DIR may be relative
        "tls": {"cert": str((s.pki_dir / "server.crt").resolve()),
                "key": str((s.pki_dir / "server.key").resolve())},
        "signing_key": _private_json(home / "signing-key.json", _signing_key),
        "cookie_keys": [secrets.token_urlsafe(32)],
        "access_token_seconds": access_token_seconds, "id_token_seconds": id_token_seconds,
        "introspectors": [WEBMAIL_CLIENT],
        "clients": client_configs(s),
        "accounts": _accounts(app),
    }
    path = home / "config.json"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, ensure_ascii=False)
    return path


def _demo_password(settings: Settings) -> str:
    path = settings.data_dir / "demo-password"
    return path.read_text().strip() if path.exists() else ""


class PscStandIn:
    """``mss run``'s service for the stand-in (when ``oidc_standin_port`` is set)."""

    name = "psc-standin"

    def __init__(self, app: App, *, access_token_seconds: int = 600,
                 id_token_seconds: int = 600) -> None:
        self.app = app
        self.access_token_seconds = access_token_seconds
        self.id_token_seconds = id_token_seconds
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None or not (PACKAGE_DIR / "node_modules" / "oidc-provider").exists():
            raise ConfigError("Le remplaçant de Pro Santé Connect demande Node.js et "
                              f"`npm ci` dans {PACKAGE_DIR} (bash setup.sh le fait).")
        config = write_config(self.app, access_token_seconds=self.access_token_seconds,
                              id_token_seconds=self.id_token_seconds)
        self.process = subprocess.Popen(
            [node, str(PACKAGE_DIR / "provider.mjs"), str(config.resolve())], cwd=PACKAGE_DIR,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ,
                                                                   "NODE_ENV": "production"})
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                if line.startswith("ready "):
                    ready.set()

        threading.Thread(target=read, name="psc-standin-log", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError("Le remplaçant de Pro Santé Connect n'a pas démarré : "
                                  + " | ".join(lines[-5:]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def endpoints(self) -> list[str]:
        s = self.app.settings
        return [f"Pro Santé Connect (remplaçant de démonstration) : "
                f"{issuer(s, s.oidc_standin_port)}"]


def sign_in(settings: Settings, national_id: str, code: str, *, client_id: str = LPS_CLIENT,
            scope: str = "openid scope_all offline_access") -> dict[str, Any]:
    """Tokens for ``national_id`` from the stand-in, the way practice software gets them: the
    authorization code flow with PKCE, the professional's sign-in and consent on the
    provider's own pages (posted here as a browser would), then the code exchanged with the
    client's secret. Returns the token response (access_token, refresh_token, id_token…).

    Raises:
        ConfigError: the stand-in refused (wrong id or code) or did not answer.
    """
    import hashlib
    import re
    from base64 import urlsafe_b64encode
    from urllib.parse import parse_qs, urljoin, urlsplit

    import requests

    secrets_of = clients(settings)
    base = issuer(settings, settings.oidc_standin_port)
    client = [c for c in client_configs(settings) if c["client_id"] == client_id][0]
    verifier = secrets.token_urlsafe(48)
    challenge = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    http = requests.Session()
    http.trust_env = False  # else REQUESTS_CA_BUNDLE would override ``verify`` (and proxies)
    http.verify = str(settings.pki_dir / "ca.pem")
    answer = http.get(f"{base}/auth", allow_redirects=False, timeout=10, params={
        "client_id": client_id, "response_type": "code", "scope": scope,
        "redirect_uri": client["redirect_uris"][0], "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16), "code_challenge": challenge.decode(),
        "code_challenge_method": "S256", "acr_values": "eidas1", "prompt": "consent"})
    for _ in range(10):
        where = urljoin(base, answer.headers.get("Location", ""))
        if where.startswith(client["redirect_uris"][0]):
            query = parse_qs(urlsplit(where).query)
            if "code" not in query:
                raise ConfigError(f"Pro Santé Connect (remplaçant) : {query.get('error')}")
            break
        if answer.status_code in (302, 303):
            answer = http.get(where, allow_redirects=False, timeout=10)
            continue
        step = re.search(r'action="(/interaction/[\w-]+/(?:login|confirm))"', answer.text)
        if step is None:
            raise ConfigError("Pro Santé Connect (remplaçant) : identifiant ou code refusé")
        data = {"national_id": national_id, "code": code} if step.group(1).endswith(
            "login") else {}
        answer = http.post(urljoin(base, step.group(1)), data=data, allow_redirects=False,
                           timeout=10)
        if answer.status_code == 400:
            raise ConfigError("Pro Santé Connect (remplaçant) : identifiant ou code refusé")
    else:
        raise ConfigError("Pro Santé Connect (remplaçant) : trop de redirections")
    tokens = http.post(f"{base}/token", timeout=10, auth=(client_id, secrets_of[client_id]),
                       data={"grant_type": "authorization_code", "code": query["code"][0],
                             "redirect_uri": client["redirect_uris"][0],
                             "code_verifier": verifier})
    if tokens.status_code != 200:
        raise ConfigError(f"Pro Santé Connect (remplaçant) : {tokens.text[:200]}")
    return dict(tokens.json())
