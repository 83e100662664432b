"""Where the webmail's and the commands' e-mails to usual addresses go: the smarthost through
the gateway's ``SmtpNotifier`` when ``MSS_SMARTHOST`` is set, else files under
DATA_DIR/spool/mail (demo, development). Wiring only: webmail does not import gateway."""

from __future__ import annotations

from core.settings import Settings
from core.spool import mail_spool
from webmail.mailer import FileMailer, Mailer


def outbound_mailer(settings: Settings) -> Mailer:
    """The ``Mailer`` for this installation (see the module docstring)."""
    if settings.smarthost:
        from gateway.notify import SmtpNotifier

        return SmtpNotifier(settings.smarthost, local_hostname=settings.hostname)
    return FileMailer(mail_spool(settings.data_dir))
