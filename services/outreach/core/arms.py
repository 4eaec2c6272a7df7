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


# The arms whose actions are held out: decided and recorded with status ``control``, never sent.
HELD_OUT: frozenset[str] = frozenset({"control", "global_control"})
# The reason a global-control action carries.
GLOBAL_CONTROL = "global_control"


def arm_of(
    rule_id: str,
    customer_id: str,
    *,
    kind: str,
    audience: str,
    control_percent: float,
    global_percent: float,
    global_kinds: frozenset[str],
) -> Arm | None:
    """The arm one action of a rule falls in: ``global_control`` for a kind of
    ``global_kinds`` when the customer is in the global control group; else the rule's own
    ``control`` or ``treatment``. A team alert reaches its customer through the people it
    alerts (the call they make), so the rule's hold-out measures it like a message; the
    global control group does not hold team alerts out (the shop's people still hear)."""
    if (
        audience != "team"
        and kind in global_kinds
        and in_global_control(customer_id, global_percent)
    ):
        return "global_control"
    return "control" if in_rule_control(rule_id, customer_id, control_percent) else "treatment"
