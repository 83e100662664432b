"""Read receipts the user chooses to send (RFC 8098 message disposition notifications).

The gateway already answers a request with a ``processed`` MDN when it delivers (that is
automatic). When the reader opens the message and agrees, the webmail sends the
``displayed`` one, ``manual-action/MDN-sent-manually`` (RFC 8098 §3.2.6), through the
gateway like any message; the message then carries the ``$MDNSent`` keyword (RFC 3503) so
that the question is not asked again — also when the reader declined.
"""

from __future__ import annotations

import email.policy
import email.utils
from datetime import UTC, datetime
from email.headerregistry import Address
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText

from webmail.mail.drafting import one_line

MDN_SENT = "$MDNSent"
DISPLAYED = "manual-action/MDN-sent-manually; displayed"


def build_mdn(*, mailbox: str, mailbox_name: str, to: str, original_id: str,
              original_subject: str, hostname: str, domain: str) -> bytes:
    """A ``displayed`` MDN from ``mailbox`` to ``to`` about the message ``original_id``."""
    report = MIMEMultipart("report", policy=email.policy.SMTP,
                           report_type="disposition-notification")
    local, _, host = mailbox.rpartition("@")
    # An Address, not a string: the SMTP policy keeps its display name as given. typeshed
    # types header values as str only, hence the ignore.
    report["From"] = Address(mailbox_name, local, host)  # type: ignore[assignment]
    report["To"] = one_line(to)
    report["Subject"] = one_line(f"Accusé de lecture : {original_subject}")[:300]
    report["Date"] = email.utils.format_datetime(datetime.now(UTC))
    report["Message-ID"] = email.utils.make_msgid("mss-mdn", domain=domain)
    original_id = one_line(original_id)  # a received Message-ID may decode to several lines
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5: no automatic answer to this
    text = (f"Le message que vous avez envoyé à {mailbox} a été affiché par son destinataire. "
            "Cela ne garantit pas qu’il a été lu ni compris.\r\n\r\nThe message you sent to "
            f"{mailbox} was displayed by the recipient.\r\n")
    report.attach(MIMEText(text, "plain", "utf-8", policy=email.policy.SMTP))
    fields = MIMENonMultipart("message", "disposition-notification", policy=email.policy.SMTP)
    lines = [f"Reporting-UA: {hostname}; mss webmail", f"Final-Recipient: rfc822;{mailbox}"]
    if original_id:
        lines.append(f"Original-Message-ID: {original_id}")
    lines.append(f"Disposition: {DISPLAYED}")
    fields.set_payload("\r\n".join(lines) + "\r\n")
    report.attach(fields)
    return report.as_bytes()
