"""Helpers of the mail views' tests (plain functions: import them freely)."""

from __future__ import annotations

import email.policy
import email.utils
import io
import re
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.mailstore_fixtures import PEOPLE
from tests.webmail_helpers import Web
from trust_space.models import Mailbox


def box_id(web: Web, address: str) -> int:
    with web.space.db.transaction() as session:
        return int(session.scalar(select(Mailbox.id).where(Mailbox.address == address)))


def address(who: str) -> str:
    return {"org": "pharma.ducentre.64000@mss.test"}.get(who) or f"{PEOPLE[who].local}@mss.test"


def wait_until(probe: Callable[[], object], timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("délai dépassé")


METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
  xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
 <rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Doc1" mimeType="application/pdf">
   <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.PDF</rim:Value></rim:ValueList></rim:Slot>
   <rim:Name><rim:LocalizedString value="Compte rendu de consultation"/></rim:Name>
  </rim:ExtrinsicObject>
 </rim:RegistryObjectList>
</SubmitObjectsRequest>
"""


def xdm_zip() -> bytes:
    """A small IHE XDM package: one PDF document and its metadata. The same bytes at every
    call (a fixed date on each entry: with the clock's, two calls across a 2-second boundary
    differ, and a test comparing them failed once in CI)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in (("IHE_XDM/SUBSET01/METADATA.XML", METADATA),
                           ("IHE_XDM/SUBSET01/DOC0001.PDF", b"%PDF-1.4 compte rendu"),
                           ("INDEX.HTM", b"<html>index</html>")):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 5, 9, 30, 0)), data)
    return buffer.getvalue()


def clinical_message(sender: str, to: list[str], subject: str, *, receipt: bool = True,
                     html: str | None = None, ins: str = "1840575123456") -> bytes:
    """A message with a text (and optional HTML) body, an IHE_XDM.zip, an INS field and a
    read-receipt request."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = email.utils.make_msgid("test", domain="mss.test")
    message["X-MSS-INS"] = ins
    if receipt:
        message["Disposition-Notification-To"] = sender
    message.set_content("Bonjour,\nvoici le compte rendu.\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    message.add_attachment(xdm_zip(), maintype="application", subtype="zip",
                           filename="IHE_XDM.zip")
    return message.as_bytes()


_TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')


def csrf(client: FlaskClient) -> str:
    """A CSRF token of the client's session (every logged-in page carries one)."""
    found = _TOKEN.search(client.get("/compte").get_data(as_text=True))
    assert found
    return found.group(1)


def post_form(client: FlaskClient, url: str, data: dict[str, Any], **kwargs: Any) -> Any:
    """POST ``data`` with the session's CSRF token."""
    return client.post(url, data={"csrf_token": csrf(client), **data}, **kwargs)


def compose(client: FlaskClient, box: int, files: list[tuple[bytes, str, str]] | None = None,
            **fields: Any) -> Any:
    """Submit the compose form of ``box`` (``action`` defaults to sending)."""
    data: dict[str, Any] = {"action": "envoyer", "to": "", "cc": "", "subject": "", "body": ""}
    data.update(fields)
    if files:
        data["attachments"] = [(io.BytesIO(content), name, ctype) for content, name, ctype in files]
    return post_form(client, f"/courrier/{box}/ecrire", data, content_type="multipart/form-data")


def text(answer: Any) -> str:
    return str(answer.get_data(as_text=True))
