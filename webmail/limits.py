"""Flask-Limiter's counters in mss's database (``RATELIMIT_STORAGE_URI = "mss-db://"``), so
that the limits per address hold across every webmail process and host of an operator (issue
#19): with ``memory://`` each process counted on its own, and N processes let N times the
guesses through.

A ``limits`` storage backend (the library registers it by its scheme) over
``core.counters``. It has no connection of its own: it counts in the database of the
application handling the request, so two webmails in one process (``mss demo --pair``,
tests) keep theirs apart. Flask-Limiter checks before the view runs, outside its transaction.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from flask import current_app
from limits.storage import Storage
from sqlalchemy.exc import SQLAlchemyError

from core import counters
from core.db import Database

PREFIX = "limit:"


def _key(key: str) -> str:
    """Flask-Limiter's key (``LIMITER/<address>/<endpoint>/<amount>/<n>/<unit>``), hashed if
    it would not fit the column."""
    whole = PREFIX + key
    if len(whole) <= 254:
        return whole
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


class DatabaseStorage(Storage):
    """Fixed-window counters in ``window_count`` (Flask-Limiter's default strategy)."""

    STORAGE_SCHEME = ["mss-db"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    @staticmethod
    def _db() -> Database:
        database: Database = current_app.extensions["mss"].db
        return database

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        with self._db().appending() as conn:
            return counters.add(conn, _key(key), expiry, amount)

    def get(self, key: str) -> int:
        with self._db().reading() as conn:
            return counters.read(conn, _key(key))[0]

    def get_expiry(self, key: str) -> float:
        with self._db().reading() as conn:
            expires = counters.read(conn, _key(key))[1]
        return time.time() if expires is None else expires

    def check(self) -> bool:
        try:
            self._db().ping()
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._db().appending() as conn:
            return counters.clear_prefix(conn, PREFIX)

    def clear(self, key: str) -> None:
        with self._db().appending() as conn:
            counters.clear(conn, _key(key))
