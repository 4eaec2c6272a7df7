"""The card's fast money text is :func:`shared.card.money_text`, whatever the amount."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from services.scoring.core.money import money_text_of
from shared.card import money_text


@pytest.mark.parametrize(
    "amount",
    [
        "0", "-0", "0.0", "-0.0", "52.3", "52", "100", "50.0", "1E+2", "1.2E-7", "NaN",
        "Infinity", "-5.3", "12.345", "12.340", "0.00", "0E-10", "1.0000", "7.00",
        "99999999999999999999999", "1234567890123456789012.5",
    ],
)  # fmt: skip
def test_every_form_of_amount_is_written_as_the_contract_writes_it(amount: str) -> None:
    assert money_text_of(Decimal(amount)) == money_text(Decimal(amount))


def test_sums_and_shares_of_any_precision_are_written_as_the_contract_writes_them() -> None:
    rng = random.Random(19)
    for _ in range(20_000):
        amount = Decimal(rng.randint(-(10**6), 10**9)) / Decimal(10 ** rng.randint(0, 6))
        assert money_text_of(amount) == money_text(amount), amount
