"""The overrides of aiosmtpd's private parts (``gateway.smtp.aiosmtpd_private``) follow a
known aiosmtpd: this fails when the installed aiosmtpd's overridden methods changed, or a
private name the overrides use is gone, so that an upgrade is read before it ships."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

from aiosmtpd.smtp import SMTP

from gateway.smtp import aiosmtpd_private
from gateway.smtp.protocol import GatewaySmtp


def _digest(name: str) -> str:
    return hashlib.sha256(inspect.getsource(getattr(SMTP, name)).encode()).hexdigest()[:16]


def test_the_overridden_methods_are_the_ones_followed() -> None:
    changed = {name for name, digest in aiosmtpd_private.FOLLOWED.items()
               if _digest(name) != digest}
    assert changed == set(), (
        f"aiosmtpd {version('aiosmtpd')} changed {sorted(changed)}, followed from "
        f"{aiosmtpd_private.FOLLOWS}: port the change to gateway/smtp/aiosmtpd_private.py")


def test_the_private_names_used_still_exist() -> None:
    source = inspect.getsource(SMTP)
    missing = [name for name in aiosmtpd_private.PRIVATE_NAMES
               if not hasattr(SMTP, name) and f"self.{name}" not in source]
    assert missing == []


def test_nothing_else_overrides_a_private_method() -> None:
    """Only the module named for it overrides aiosmtpd's private methods."""
    for cls in GatewaySmtp.__mro__:
        if cls in (aiosmtpd_private.PrivateOverrides, SMTP) or not issubclass(cls, SMTP):
            continue
        private = {name for name in vars(cls)
                   if name.startswith("_") and not name.startswith("__") and hasattr(SMTP, name)}
        assert private == set(), f"{cls.__name__} overrides {private}"
