"""Support of the browser tests: the SMTP sink, the running site, waiting, a stranger's card,
the accessibility check (axe-core)."""

from __future__ import annotations

import email
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.settings import Settings
from mss.app import App
from tests.ports import free_port  # noqa: F401 — re-exported for the browser modules

# axe-core, installed by `bash setup.sh test` (npm ci in tests/js, from its package-lock.json).
AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
AXE_REPORTS = Path(__file__).parent / "artifacts" / "axe"
BLOCKING = ("serious", "critical")


class Sink:
    """aiosmtpd handler keeping every message (the smarthost)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, email.message.Message]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, email.message_from_bytes(envelope.content)))
        return "250 OK"


@dataclass
class Site:
    url: str
    settings: Settings
    app: App
    sink: Sink
    shots: list[str] = field(default_factory=list)

    def mails_to(self, to: str) -> list[email.message.Message]:
        return [m for rcpt, m in self.sink.messages if rcpt == to]

    def wait_code(self, to: str, before: int) -> str:
        """The code of the first e-mail to ``to`` after the ``before`` first ones."""
        text = wait(lambda: len(self.mails_to(to)) > before and self.mails_to(to)[before])
        body = text.get_payload(decode=True).decode()
        return re.search(r"\b(\d{6})\b", body).group(1)  # type: ignore[union-attr]

    def sms_code(self, to: str) -> str:
        spool = self.settings.data_dir / "spool" / "sms"
        def newest() -> str | None:
            for path in sorted(spool.glob("*.json"), reverse=True):
                data = json.loads(path.read_text())
                if data["to"] == to:
                    return str(data["text"])
            return None

        return re.search(r"\b(\d{6})\b", wait(newest)).group(1)  # type: ignore[union-attr]


def wait(probe: Callable[[], object], timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")




def stranger_card(tmp: Path) -> Path:
    """A card-like certificate from an authority outside the trust space."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Inconnu Hors"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, "819999999999")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(key, hashes.SHA256()))
    (tmp / "stranger.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "stranger.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp / "stranger.crt"


def check_a11y(page: Any, name: str,
               known: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now and fail on any serious or critical violation
    (WCAG 2.2 A/AA and axe's best practices). The whole result, minor ones included, is kept in
    tests/artifacts/axe/<name>.json; the violations are returned for further checks.
    ``known``: rule id -> why it is tolerated on this page for now (a defect in a template
    another change owns, reported); it is still written to the report.

    axe's source is evaluated through the DevTools protocol, which CSP does not govern:
    ``add_script_tag`` would insert an inline script that the webmail's CSP (script-src
    'self', no inline) refuses. The page's own policy is untouched.
    """
    assert AXE.exists(), f"{AXE} absent: run `npm ci` in tests/js (bash setup.sh test does)"
    page.wait_for_load_state("load")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;true")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 200),
                                      summary: n.failureSummary}))}));
    }""")
    AXE_REPORTS.mkdir(parents=True, exist_ok=True)
    (AXE_REPORTS / f"{name}.json").write_text(
        json.dumps({"url": page.url, "violations": result, "tolerated": dict(known or {})},
                   ensure_ascii=False, indent=1))
    blocking = [v for v in result if v["impact"] in BLOCKING and v["id"] not in (known or {})]
    assert not blocking, f"axe, {name} ({page.url}):\n" + "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']} — "
        + "; ".join(f"{n['target']} {n['summary']}" for n in v["nodes"][:4]) for v in blocking)
    return list(result)
