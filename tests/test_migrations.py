"""Alembic migrations build exactly the schema the models describe, on both engines."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core import migrate
from core.db import load_models


def test_upgrade_matches_models_and_is_idempotent(empty_db):
    assert migrate.current_revision(empty_db) is None
    migrate.upgrade(empty_db)
    migrate.upgrade(empty_db)  # a second run changes nothing
    assert migrate.current_revision(empty_db) == migrate.head_revision(empty_db)
    with empty_db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, load_models())
    assert diff == []
