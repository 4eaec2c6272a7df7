"""Reading a record of the changes topic as the shared :class:`~shared.changes.Change`.

The card stays a plain dict (outreach reads it by path, through conditions and templates);
only the change around it is validated. Fields outreach does not know are ignored, in the
change and in the event it carries alike, so a producer may add one during a rolling deploy.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from shared.changes import Change
from shared.events import LENIENT


def read_change(raw: bytes | str) -> Change:
    """The change ``raw`` holds; ValueError when it holds none (a record without a card is not
    a change at all, and says so)."""
    # orjson, then validation of the Python objects: the card, a dict of anything, is built
    # once by orjson instead of walked by the validator.
    parsed = orjson.loads(raw)
    try:
        return Change.model_validate(parsed, extra="ignore", context=LENIENT)
    except ValidationError:
        if not isinstance(parsed, dict) or not isinstance(parsed.get("card"), dict):
            raise ValueError("not a change: no card") from None
        raise
