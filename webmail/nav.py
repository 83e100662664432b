"""The navigation bar: each blueprint adds its entries when it is registered, so that a new
area (the mail views) appears by registering its blueprint, without touching the layout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request
from flask_login import current_user


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    order: int = 50
    operator_only: bool = False
    prefix: str = ""  # the entry is "current" for every path starting with it
    professional_only: bool = False  # hidden for accounts without a professional (operators)
    count: Callable[[], int | None] | None = None  # a number shown beside the label (unread)

    @property
    def current(self) -> bool:
        return bool(self.prefix) and request.path.startswith(self.prefix)


def add(app: Flask, endpoint: str, label: str, *, order: int = 50, operator_only: bool = False,
        prefix: str = "", professional_only: bool = False,
        count: Callable[[], int | None] | None = None) -> None:
    """Add an entry to the navigation bar of logged-in users (``count``: called when the bar
    is drawn, a positive number is shown beside the label)."""
    items: list[NavItem] = app.extensions.setdefault("mss.nav", [])
    items.append(NavItem(endpoint, label, order, operator_only, prefix, professional_only,
                         count))
    items.sort(key=lambda item: item.order)


def _items() -> list[NavItem]:
    if not current_user.is_authenticated:
        return []
    return [item for item in current_app.extensions.get("mss.nav", [])
            if (current_user.is_operator or not item.operator_only)
            and (current_user.professional_id is not None or not item.professional_only)]


def init_app(app: Flask) -> None:
    @app.context_processor
    def navigation() -> dict[str, Any]:
        return {"nav_items": _items}
