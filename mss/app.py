"""The wiring of one mss installation: settings, database, PKI and cards, built lazily once.

The `mss` command and the services receive an ``App``; nothing reads a global. Every
sub-command takes its ``App`` from ``app_of``, the one place that builds it for a command line.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.db import Database
from core.settings import Settings

if TYPE_CHECKING:
    import click

    from certs.card import SoftHsmCards
    from certs.pki import Pki

TOML_TEMPLATE = """# mss settings for this data directory (see README, "Settings").
# MSS_* environment variables override what is written here.
domain = "{domain}"
"""


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_connections = 0  # SQLAlchemy's default pool; see size_pool

    def size_pool(self, connections: int) -> None:
        """Let ``connections`` threads hold a database connection at once (``mss run`` sizes it
        from its services' threads before starting them; a command's one thread needs no more).
        An engine already made for a command's set-up is closed and made again."""
        if connections == self.db_connections:
            return
        if "db" in self.__dict__:
            self.__dict__.pop("db").dispose()
        self.db_connections = connections

    @classmethod
    def from_data_dir(cls, data_dir: str | Path | None = None, **overrides: Any) -> App:
        return cls(Settings.load(data_dir=data_dir, **overrides))

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.effective_database_url, connections=self.db_connections)

    @cached_property
    def pki(self) -> Pki:
        from certs.pki import Pki

        return Pki.load(self.settings.pki_dir, password=self.settings.secret())

    @cached_property
    def cards(self) -> SoftHsmCards:
        from certs.card import SoftHsmCards

        return SoftHsmCards(self.settings.cards_dir, module=self.settings.softhsm2_module)

    @property
    def local_domains(self) -> set[str]:
        return {self.settings.domain}

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()


def app_of(ctx: click.Context, **overrides: Any) -> App:
    """The App of this invocation, built once from --data-dir, MSS_* and ``overrides`` (the
    first command to ask gives them: ``mss init --domain``), closed when the command ends."""
    root = ctx.find_root()
    if not isinstance(root.obj, App):
        clean = {k: v for k, v in overrides.items() if v is not None}
        root.obj = App.from_data_dir(root.params.get("data_dir"), **clean)
        root.call_on_close(root.obj.close)
    return root.obj
