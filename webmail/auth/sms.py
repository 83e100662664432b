"""SMS for one-time codes: the ``SmsProvider`` contract and two implementations.

No real SMS gateway is reachable from here: ``WebhookSmsProvider`` POSTs JSON to an HTTP(S)
endpoint of the operator's SMS service (``MSS_SMS_WEBHOOK_URL``); ``FileSmsProvider`` writes each
message to a spool directory (tests, demo). The text holds the code: never log it.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from core.errors import ConfigError
from core.settings import Settings
from webmail.errors import DeliveryFailed

TIMEOUT = 10.0


class SmsProvider(Protocol):
    """Sends a short text message to a mobile number."""

    def send(self, to: str, text: str) -> None:
        """Send ``text`` to ``to`` (E.164 or French national form).

        Raises:
            DeliveryFailed: the provider did not accept the message.
        """
        ...


class FileSmsProvider:
    """Writes ``{"to": …, "text": …, "at": …}`` to ``spool/<time>-<random>.json`` (0600)."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def send(self, to: str, text: str) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        name = f"{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}.json"
        payload = json.dumps({"to": to, "text": text, "at": now.isoformat()}, ensure_ascii=False)
        fd = os.open(self.spool / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)


class WebhookSmsProvider:
    """POSTs ``{"to": …, "text": …}`` as JSON to ``url``; any 2xx answer is success."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError("MSS_SMS_WEBHOOK_URL doit être une adresse http(s)://")
        self.url = url
        self.timeout = timeout

    def send(self, to: str, text: str) -> None:
        body = json.dumps({"to": to, "text": text}, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:  # noqa: S310
                status = answer.status
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryFailed("Le service d'envoi de SMS est injoignable ; réessayez plus "
                                 "tard ou choisissez un autre moyen de recevoir le code.") from exc
        if not 200 <= status < 300:
            raise DeliveryFailed(f"Le service d'envoi de SMS a refusé le message ({status}).")


def provider_for(settings: Settings) -> SmsProvider:
    """The provider chosen by ``MSS_SMS_PROVIDER`` (``file`` or ``webhook``).

    Raises:
        ConfigError: an unknown provider, or a webhook without URL.
    """
    if settings.sms_provider == "file":
        spool = settings.sms_spool_dir or settings.data_dir / "spool" / "sms"
        return FileSmsProvider(Path(spool))
    if settings.sms_provider == "webhook":
        if not settings.sms_webhook_url:
            raise ConfigError("MSS_SMS_PROVIDER=webhook demande MSS_SMS_WEBHOOK_URL")
        return WebhookSmsProvider(settings.sms_webhook_url)
    raise ConfigError("MSS_SMS_PROVIDER doit valoir file ou webhook")
