"""Change ids: the same history always yields the same ids, in canonical UUID form."""

from __future__ import annotations

import uuid

from shared.changes import change_id_for


def test_a_change_id_is_a_canonical_name_based_uuid() -> None:
    cid = change_id_for("event", "e-1")
    parsed = uuid.UUID(cid)
    assert str(parsed) == cid
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122


def test_the_same_parts_give_the_same_id_and_other_parts_another() -> None:
    assert change_id_for("event", "e-1") == change_id_for("event", "e-1")
    assert change_id_for("event", "e-1") != change_id_for("time", "e-1")
    assert change_id_for("time", "c-1", "churned") != change_id_for("time", "c-1", "declining")
