"""Composing: the form, the recipients check, and the MIME message built from it.

The message is plain text (UTF-8, quoted-printable), or with « Mise en forme » the cleaned
HTML and its plain-text derivation as multipart/alternative (``richtext``), with its
attachments. The protection the
user chose travels in the ``MSS-Security`` field the gateway reads (``gateway.accept.protection``);
the
domain policy is the minimum, so a box the policy imposes is ticked and cannot be unticked.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import BooleanField, HiddenField, MultipleFileField, StringField, TextAreaField
from wtforms.validators import Length

from trust_space.policy import may_receive

_SPLIT = re.compile(r"[,;\n]+")
_ADDRESS = re.compile(r"^[^@\s<>()\[\]\\,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
# "pièce jointe", "pièces jointes", "ci-joint(e)(s)", "en PJ", "PJ :" — outside quoted lines.
_MENTIONS = re.compile(r"pi[eè]ces?[\s-]+jointes?|ci[\s-]joint|\ben\s+pj\b|\bpj\s*:",
                       re.IGNORECASE)
# RFC 5322 §2.2: a header field is one line; CR and LF appear only as the CRLF of a fold.
# What is typed or posted may also hold what Python's email package, Dovecot and mail readers
# take for a line break (str.splitlines: VT, FF, FS–RS, NEL U+0085, U+2028, U+2029) and other
# controls (NUL…): like Roundcube, every run of them becomes one space.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class ComposeForm(FlaskForm):
    """The compose form (Flask-WTF: CSRF token included)."""

    to = StringField("À", validators=[Length(max=4000)])
    cc = StringField("Cc", validators=[Length(max=4000)])
    subject = StringField("Objet", validators=[Length(max=400)])
    body = TextAreaField("Message", validators=[Length(max=400_000)])
    attachments = MultipleFileField("Ajouter des pièces jointes")
    sign = BooleanField("Signer")
    encrypt = BooleanField("Chiffrer")
    receipt = BooleanField("Demander un accusé de lecture")
    confirm_no_attachment = BooleanField("Envoyer sans pièce jointe")
    source_folder = HiddenField()
    source_uid = HiddenField()
    draft_uid = HiddenField()
    in_reply_to = HiddenField()
    references = HiddenField()
    reply_uid = HiddenField()
    reply_folder = HiddenField()
    # Issue #17: the mailbox sending (« De », a mailbox id checked against what the user may
    # send as), the compose page's own id (one held message, one autosaved draft per page),
    # and the editor's HTML, used only when a script set ``format`` to "html".
    from_box = StringField("De", validators=[Length(max=12)])
    compose_id = HiddenField(validators=[Length(max=40)])
    format = HiddenField(default="text")
    body_html = TextAreaField(validators=[Length(max=800_000)])


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Outgoing:
    """A message ready to build (see ``build``)."""

    sender: str
    sender_name: str
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    sign: bool
    encrypt: bool
    receipt: bool = False
    in_reply_to: str = ""
    references: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    html: str = ""  # cleaned HTML (``richtext.composed``); ``body`` is then its text

    @property
    def recipients(self) -> list[str]:
        return list(dict.fromkeys(self.to + self.cc))


def split_addresses(text: str) -> tuple[list[str], list[str]]:
    """(addresses, unreadable tokens) of a recipients field (comma, semicolon or line
    separated; ``Name <address>`` accepted)."""
    good: list[str] = []
    bad: list[str] = []
    for token in _SPLIT.split(text or ""):
        token = token.strip()
        if not token:
            continue
        address = email.utils.parseaddr(token)[1].strip().lower()
        (good if _ADDRESS.match(address) and address.isascii() else bad).append(
            address if _ADDRESS.match(address) else token)
    return list(dict.fromkeys(good)), bad


def refused_recipients(session: Session, addresses: Iterable[str],
                       local_domains: set[str]) -> dict[str, str]:
    """Recipients outside the trust space → why, in French (``trust_space.policy``)."""
    refused = {}
    for address in addresses:
        decision = may_receive(session, address, local_domains)
        if not decision:
            refused[address] = decision.reason.split(" / ")[0]
        # A peer domain is in the trust space; its operator decides on the mailbox itself.
    return refused


def mentions_attachment(body: str) -> bool:
    """True when the text written (not the quoted lines) speaks of an attachment."""
    own = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith(">"))
    return bool(_MENTIONS.search(own))


def policy_minimum(policy: str) -> tuple[bool, bool]:
    """(sign, encrypt) that the domain policy imposes (``Settings.security_policy``)."""
    return "sign" in policy, "encrypt" in policy


def security_field(sign: bool, encrypt: bool) -> str:
    """The ``MSS-Security`` value (``gateway.accept.protection``)."""
    return ", ".join(w for w, on in (("sign", sign), ("encrypt", encrypt)) if on) or "none"


def one_line(value: str) -> str:
    """``value`` as a header field value: line breaks and controls → one space (see
    ``_NOT_ONE_LINE``). Every header the webmail writes from what a user typed, a form posted
    or a received message said goes through here (``build``, ``receipts.build_mdn``)."""
    return _NOT_ONE_LINE.sub(" ", value).strip()


COMPOSE_HEADER = "X-Compose-Session"  # a draft's compose page (one draft per page)


def build(out: Outgoing, *, domain: str, draft: bool = False,
          compose_id: str = "") -> tuple[bytes, str]:
    """The RFC 5322 message and its new Message-ID (a draft names its compose page)."""
    message = EmailMessage(policy=email.policy.SMTP)
    local, _, host = out.sender.rpartition("@")
    name = "" if out.sender_name.lower() == out.sender else one_line(out.sender_name)
    message["From"] = Address(name, local, host)
    if out.to:
        message["To"] = one_line(", ".join(out.to))
    if out.cc:
        message["Cc"] = one_line(", ".join(out.cc))
    message["Subject"] = one_line(out.subject)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message_id = email.utils.make_msgid("mss", domain=domain)
    message["Message-ID"] = message_id
    if one_line(out.in_reply_to):
        message["In-Reply-To"] = one_line(out.in_reply_to)
    if one_line(out.references):
        message["References"] = one_line(out.references)
    if out.receipt:
        message["Disposition-Notification-To"] = out.sender  # RFC 8098 §2.1
    message["MSS-Security"] = security_field(out.sign, out.encrypt)
    message["User-Agent"] = "mss webmail" + (" (brouillon)" if draft else "")
    if draft and compose_id:
        message[COMPOSE_HEADER] = one_line(compose_id)
    message.set_content(out.body, charset="utf-8", cte="quoted-printable")
    if out.html:  # RFC 2046 §5.1.4: the plain text first, the richer form last
        message.add_alternative(out.html, subtype="html", charset="utf-8",
                                cte="quoted-printable")
    for item in out.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if maintype == "multipart" or not subtype:
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(item.data, maintype=maintype, subtype=subtype,
                               filename=item.filename)
    return message.as_bytes(), message_id


def prefixed(subject: str, prefix: str) -> str:
    """``RE : sujet`` / ``TR : sujet``, without stacking prefixes."""
    bare = subject.strip()
    if re.match(rf"^{prefix}\s?:", bare, re.IGNORECASE):
        return bare
    return f"{prefix} : {bare}"
