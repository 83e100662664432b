"""Times as the people of the trust space read them: Paris time (``Europe/Paris``, with its
summer time), written the French way. Stored and transmitted times stay in UTC (RFC 5322 Date
headers keep their own offset); only what a person reads is converted, in one place, so that a
list, a reply quote and a notice never disagree about the hour."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    PARIS: tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # no tz database on this host: UTC, labelled as such below
    PARIS = UTC


def paris(value: datetime) -> datetime:
    """``value`` in Paris time; a naive value is taken as UTC (how the database stores it)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(PARIS)


def french_datetime(value: datetime | None, missing: str = "—") -> str:
    """``03/12/2026 à 21:09`` in Paris time; ``missing`` when there is no time."""
    if value is None:
        return missing
    return f"{paris(value):%d/%m/%Y à %H:%M}"


def short_datetime(value: datetime | None, missing: str = "—") -> str:
    """``03/12 à 21:09`` in Paris time (a timeline within the year); ``missing`` without."""
    if value is None:
        return missing
    return f"{paris(value):%d/%m à %H:%M}"
