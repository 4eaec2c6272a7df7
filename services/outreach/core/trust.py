"""Stored rules are trusted: they were checked in full when saved.

Loading the rules (at start-up and every few seconds) validates each stored definition with
``context=TRUSTED``, and the validators that cost something or that a stored rule was already
held to (rendering nothing, compiling templates, checking conditions and crons) skip their work.
A stored rule that misbehaves anyway is isolated at run time
(:class:`services.outreach.core.rules.RuleSet`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationInfo

TRUSTED: Mapping[str, Any] = {"trusted": True}


def trusted(info: ValidationInfo) -> bool:
    """Whether the data being validated is a stored rule (validated with ``context=TRUSTED``)."""
    return isinstance(info.context, Mapping) and bool(info.context.get("trusted"))
