"""Two operators, ``mss.test`` and ``autre.test``, each in the other's trust space: set up,
linked and run by ``mss/pair.py``, the code of ``mss demo --pair`` (the demo's people at both,
their own CA, Dovecot, gateway…), on a temporary directory and free loopback ports, with none of
this process's ``MSS_*`` variables.

Registered in tests/conftest.py (so every module has the ``pair`` fixture)::

    def test_something(pair):            # gateway tests: (Operator, Operator, tmp directory)
        a, b, tmp = pair                 # a: mss.test, b: autre.test (tests.gateway_fixtures)

or, for other services or settings, a module fixture of its own::

    @pytest.fixture(scope="module")
    def operators():
        yield from running_pair("mes-tests-", roles=("mailstore", "gateway", "webmail"))

``running_pair`` yields ``(a, b, root)`` as ``mss.pair.Running`` (``.app``, ``.settings``,
``.service("gateway")``…); ``root`` holds ``data`` and ``data-autre.test``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from mss.app import App
from mss.pair import PORT_SETTINGS, ROLES, Running, demo_sides, prepare, start_both, stop
from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD, TrustSpace, free_port, open_tempdir

# Gateway tests log in with the demo password over SMTP/IMAP (as tests.mailstore_fixtures'
# trust space does) and retry quickly.
GATEWAY_OVERRIDES: dict[str, object] = {
    "demo_password": PASSWORD, "imap_smtp_web_password": True, "retry_base_seconds": 1,
    "rate_limit_per_minute": 10_000,
}


def free_ports() -> dict[str, int]:
    """One free loopback port for each port setting of an operator (``PORT_SETTINGS``)."""
    return {name: free_port() for name in PORT_SETTINGS}


def prepared_pair(root: Path, **overrides: object) -> tuple[App, App]:
    """``mss.pair.prepare`` of the ``mss demo --pair`` sides under ``root`` (free ports, no
    ``MSS_*`` from this process); returns the two Apps."""
    sides = demo_sides(root / "data", ports=(free_ports(), free_ports()), environ={})
    return prepare(*sides, **overrides)


def running_pair(prefix: str, roles: Iterable[str] = ROLES, **overrides: object
                 ) -> Iterator[tuple[Running, Running, Path]]:
    """The pair, prepared and started (``roles`` of each), for a fixture to yield from;
    stopped and removed afterwards."""
    root = open_tempdir(prefix)
    apps = list(prepared_pair(root, **overrides))
    try:
        a, b = start_both(apps, roles)
        try:
            yield a, b, root
        finally:
            stop(b)
            stop(a)
    finally:
        for app in apps:
            app.close()
        shutil.rmtree(root, ignore_errors=True)


def as_operator(running: Running) -> Operator:
    """The gateway tests' view of a running operator of the pair."""
    app = running.app
    space = TrustSpace(app.settings, app.db, app.pki, app.settings.domain)
    return Operator(space, running.service("mailstore"),  # type: ignore[arg-type]
                    running.service("gateway"))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Operator, Operator, Path]]:
    """mss.test and autre.test with their Dovecot and gateway running (no webmail), the demo
    password accepted on SMTP/IMAP (``GATEWAY_OVERRIDES``)."""
    for a, b, root in running_pair("mss-pair-", ("mailstore", "gateway"), **GATEWAY_OVERRIDES):
        yield as_operator(a), as_operator(b), root
