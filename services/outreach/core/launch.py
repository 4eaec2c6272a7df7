"""A broadcast launch's content: the new items it announces, with their categories and brands.

A launch (``POST /v1/broadcasts``) may carry content. While it runs, every card it judges
carries the content under :data:`~services.outreach.core.conditions.LAUNCH_KEY` (see
:func:`launch_view`), so a rule's conditions can target customers by their preferences against
the launch (``{"bought": {"launch": "category", "within_days": 365}}``), and its template sees
``launch``: ``launch.all_items`` (every item; not ``launch.items``, which Jinja reads as the
mapping's own method), ``launch.items_for_customer`` (the items in a
category the customer has bought, or of a brand they have bought: "new in the categories
you buy"), ``launch.categories`` and ``launch.brands``. Outside a launch all four are empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.outreach.core.conditions import LAUNCH_KEY

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_ITEMS = 100


class LaunchItem(BaseModel):
    """One new item: its ``category`` (required: it is what the launch targets by) and what
    the message may say of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Name
    category: Name
    brand: Name | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    price: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}(\.[0-9]{1,4})?$")] | None = None
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


class LaunchContent(BaseModel):
    """What a launch announces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[LaunchItem] = Field(min_length=1, max_length=MAX_ITEMS)


def launch_view(content: LaunchContent, at: datetime) -> dict[str, Any]:
    """The content as cards carry it during the launch at ``at`` (JSON-native values)."""
    items = [i.model_dump(mode="json") for i in content.items]
    return {
        "at": at.isoformat(),
        "items": items,
        "categories": sorted({i.category for i in content.items}),
        "brands": sorted({i.brand for i in content.items if i.brand is not None}),
    }


EMPTY: Mapping[str, Any] = {
    "all_items": [],
    "items_for_customer": [],
    "categories": [],
    "brands": [],
}


def template_launch(card: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``launch`` a template sees for ``card`` (:data:`EMPTY` outside a launch)."""
    launch = card.get(LAUNCH_KEY)
    if not isinstance(launch, Mapping):
        return EMPTY
    prefs = card.get("preferences")
    bought = prefs if isinstance(prefs, Mapping) else {}
    categories = bought.get("categories") or {}
    brands = bought.get("brands") or {}
    items = list(launch.get("items") or ())
    mine = [
        i
        for i in items
        if i.get("category") in categories or (i.get("brand") is not None and i["brand"] in brands)
    ]
    return {
        "all_items": items,
        "items_for_customer": mine,
        "categories": list(launch.get("categories") or ()),
        "brands": list(launch.get("brands") or ()),
    }
