"""A readable difference between two JSON documents: each pretty-printed with sorted keys,
compared line by line (difflib), for a rule's versions and the audit log's entries."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["added", "removed", "same", "hunk"]


@dataclass(frozen=True)
class Line:
    kind: Kind
    text: str


def pretty(doc: Any) -> list[str]:
    if doc is None:
        return []
    return json.dumps(doc, indent=2, sort_keys=True, default=str).splitlines()


def diff_lines(before: Any, after: Any, context: int = 3) -> list[Line]:
    """The lines that changed between ``before`` and ``after`` with ``context`` lines around
    each change; empty when they are the same."""
    out: list[Line] = []
    for text in difflib.unified_diff(pretty(before), pretty(after), n=context, lineterm=""):
        if text.startswith(("---", "+++")):
            continue
        if text.startswith("@@"):
            if out:  # lines left out between two changes
                out.append(Line("hunk", "…"))
        elif text.startswith("+"):
            out.append(Line("added", text[1:]))
        elif text.startswith("-"):
            out.append(Line("removed", text[1:]))
        else:
            out.append(Line("same", text[1:]))
    return out
