"""Templates: rendering over the card, errors reported by part, and the sandbox holding."""

from __future__ import annotations

import pytest

from services.outreach.core.rule_pack import default_pack
from services.outreach.core.templates import (
    SAMPLE_CARD,
    Template,
    TemplateError,
    build_context,
    check,
    render,
)

OFFER = {"code": "TEA10", "description": "10% off tea", "discount": "10%", "expires_days": 30}


def test_renders_card_customer_offer_and_unsubscribe_url() -> None:
    template = Template(
        subject="{{ customer.name }}, your code {{ offer.code }}",
        body="{{ card.tier }} customer with {{ card.value.orders }} orders "
        "({{ card.value.lifetime_spend }}). Stop: {{ unsubscribe_url }}",
    )
    context = build_context(SAMPLE_CARD, OFFER, "https://shop.example/u/abc")
    assert render(template, context) == (
        "Ada Lovelace, your code TEA10",
        "key customer with 14 orders (1234.50). Stop: https://shop.example/u/abc",
    )


def test_none_renders_as_nothing_and_text_is_not_html_escaped() -> None:
    card = {**SAMPLE_CARD, "profile": {**SAMPLE_CARD["profile"], "name": None}}
    template = Template(subject="Hello {{ customer.name }}", body="Fish & chips <b>{{ offer }}</b>")
    assert render(template, build_context(card)) == ("Hello", "Fish & chips <b></b>")


def test_the_subject_is_folded_onto_one_line() -> None:
    card = {**SAMPLE_CARD, "profile": {**SAMPLE_CARD["profile"], "name": "Eve\r\nBcc: all@x"}}
    subject, _ = render(Template(subject="Hi {{ customer.name }}", body="."), build_context(card))
    assert subject == "Hi Eve Bcc: all@x"


def test_a_missing_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match=r"body: 'dict object' has no attribute 'nmae'"):
        render(Template(body="Hi {{ customer.nmae }}"), build_context(SAMPLE_CARD))


def test_check_reports_each_failing_part() -> None:
    errors = check(Template(subject="{{ offer.code }}", body="{% if card.tier %}unclosed"))
    assert errors[0] == "subject: 'None' has no attribute 'code'"  # no offer on this rule
    assert errors[1].startswith("body, line 1: Unexpected end of template")
    assert check(Template(subject="{{ offer.code }}", body="ok"), OFFER) == []


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ card.__class__.__bases__ }}",
        "{{ '{0.__class__}'.format(card) }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ customer.get.__self__ }}",
        "{{ card.value.update({'orders': 0}) }}",
        "{{ card.profile.tags.append('x') }}",
    ],
)
def test_sandbox_escapes_and_mutation_are_refused(source: str) -> None:
    (error,) = check(Template(body=source))
    assert error.startswith("body: not allowed in a template:"), error
    with pytest.raises(TemplateError):
        render(Template(body=source), build_context(SAMPLE_CARD))


@pytest.mark.parametrize("name", ["settings", "config", "environ", "os", "secrets", "lipsum"])
def test_nothing_beyond_the_four_context_names_is_reachable(name: str) -> None:
    assert check(Template(body=f"{{{{ {name} }}}}")) == [f"body: '{name}' is undefined"]


def test_the_context_exposes_exactly_four_names() -> None:
    assert set(build_context(SAMPLE_CARD)) == {"card", "customer", "offer", "unsubscribe_url"}


def test_the_default_pack_renders_on_the_sample_card() -> None:
    for rule in default_pack():
        offer = rule.action.offer.model_dump() if rule.action.offer else None
        subject, body = render(rule.action.template, build_context(SAMPLE_CARD, offer, "U"))
        assert body.strip(), rule.id
        assert "\n" not in subject
        if rule.action.channel == "email":
            assert subject, rule.id
