"""A customer's own opt-out on scoring's card: an unsubscribe outranks any client's consent,
only a re-subscribe lifts it, and the result does not depend on arrival order."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.outreach.core.opt_out import opt_out_event
from services.outreach.settings import OutreachSettings
from services.scoring.core.card import Population, build_card
from services.scoring.core.state import CustomerState, apply
from services.scoring.settings import ScoringSettings
from shared.card import Consent, Unsubscribed
from shared.events import Envelope, EventType

T0 = datetime(2027, 1, 10, 9, tzinfo=UTC)
SETTINGS = ScoringSettings()


def consent(at: datetime, marketing: bool) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "customer.updated",
            "customer_id": "c1",
            "occurred_at": at,
            "received_at": at,
            "source": "test",
            "data": {"consent": {"email": True, "marketing": marketing}},
        }
    )


def consent_after(events: list[Envelope]) -> Consent:
    state: CustomerState | None = None
    for event in events:
        state, _ = apply(state, Envelope.from_json(event.to_json()), SETTINGS)
    assert state is not None
    return build_card(state, T0 + timedelta(days=1), Population(), SETTINGS).profile.consent


def test_an_unsubscribe_outranks_a_later_client_consent_until_it_is_lifted() -> None:
    subscribed = consent(T0, marketing=True)
    left = opt_out_event("c1", EventType.CUSTOMER_UNSUBSCRIBED, "link", T0 + timedelta(hours=1))
    synced = consent(T0 + timedelta(hours=2), marketing=True)
    back = opt_out_event("c1", EventType.CUSTOMER_RESUBSCRIBED, "operator", T0 + timedelta(hours=3))
    gone = Consent(
        email=True,
        marketing=False,
        unsubscribed=Unsubscribed(at=T0 + timedelta(hours=1), how="link"),
    )
    for order in itertools.permutations([subscribed, left, synced]):
        assert consent_after(list(order)) == gone
    for order in itertools.permutations([subscribed, left, synced, back]):
        assert consent_after(list(order)) == Consent(email=True, marketing=True)


def test_the_same_fact_is_one_event() -> None:
    args: Any = ("c1", EventType.CUSTOMER_UNSUBSCRIBED, "link", T0)
    assert opt_out_event(*args).event_id == opt_out_event(*args).event_id


def test_links_shorter_than_sixty_days_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="unsubscribe_link_days"):
        OutreachSettings(unsubscribe_link_days=30)
    assert OutreachSettings(unsubscribe_link_days=90).unsubscribe_link_days == 90
