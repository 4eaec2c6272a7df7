"""Which arm of an experiment a customer is in: a stable hash, never a random draw.

A rule with ``control_percent`` holds out that share of its matches: the customer is in the
rule's control arm when the hash of (rule, customer) falls below it. The same customer is in
the same arm across restarts, rebuilds, replays and edits of the rule (only changing the
percentage moves the line, and then only customers near it). The global control group is the
same idea over the customer alone, with its own salt, so it is independent of every rule's.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["treatment", "control", "global_control"]

GLOBAL_SALT = "tend-global-control"


def bucket(*parts: str) -> float:
    """A number in [0, 100) that depends only on ``parts``, evenly spread."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def in_rule_control(rule_id: str, customer_id: str, percent: float) -> bool:
    """Is the customer in the rule's control arm (``percent`` of 100 held out)?"""
    return percent > 0 and bucket("rule", rule_id, customer_id) < percent


def in_global_control(customer_id: str, percent: float) -> bool:
    """Is the customer in the global control group (no promotional kind reaches them)?"""
    return percent > 0 and bucket(GLOBAL_SALT, customer_id) < percent
