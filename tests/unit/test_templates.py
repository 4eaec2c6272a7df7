"""Templates: rendering over the card, errors reported by part, and the sandbox holding."""

from __future__ import annotations

import pytest

from services.outreach.core.rule_pack import default_pack
from services.outreach.core.template_limits import ALWAYS_FITS, RenderLimits
from services.outreach.core.templates import (
    SAMPLE_CARD,
    Template,
    TemplateError,
    TemplateLimit,
    _compiled,
    build_context,
    check,
    plain_text,
    render,
    static_errors,
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
    unclosed = Template(subject="{{ offer.code }}", body="{% if x %}unclosed")
    errors = check(unclosed)
    assert errors[0] == "subject: 'None' has no attribute 'code'"  # no offer on this rule
    assert errors[1].startswith("body: line 1: Unexpected end of template")
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
def test_nothing_beyond_the_six_context_names_is_reachable(name: str) -> None:
    assert check(Template(body=f"{{{{ {name} }}}}")) == [f"body: '{name}' is undefined"]


def test_the_context_exposes_exactly_six_names() -> None:
    names = {"card", "customer", "offer", "unsubscribe_url", "launch", "holiday"}
    assert set(build_context(SAMPLE_CARD)) == names


def test_the_default_pack_renders_on_the_sample_card() -> None:
    for rule in default_pack():
        offer = rule.action.offer.model_dump() if rule.action.offer else None
        subject, body = render(rule.action.template, build_context(SAMPLE_CARD, offer, "U"))
        assert body.strip(), rule.id
        assert "\n" not in subject
        if rule.action.channel == "email":
            assert subject, rule.id


# -- hard limits ------------------------------------------------------------------------------

BOMBS = {
    "repeat": ("{{ 'x' * 10**10 }}", "text over 100000 characters"),
    "power": ("{{ 9**9**9 }}", "number over 64 bits"),
    "nested_loops": (
        "{% for i in range(5000) %}{% for j in range(3000) %}x{% endfor %}{% endfor %}",
        "loop iterations over 10000",
    ),
    "nested_loops_from_data": (
        "{% set n = card.value.orders * 300 %}"
        "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}",
        "loop iterations over 10000",
    ),
    "big_range": ("{% for i in range(20000) %}x{% endfor %}", "range over 10000"),
    "recursive_macro": (
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "recursion depth over 20",
    ),
    "doubling_macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(18) }}",
        "calls over 10000",
    ),
    "recursive_loop": (
        "{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}",
        "recursion depth over 20",
    ),
    "doubling_list": (
        "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}",
        "list over 100000 items",
    ),
    "doubling_text": (
        "{% set ns = namespace(x='ab') %}{% for i in range(64) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}",
        "text over 100000 characters",
    ),
    "nested_literals": (
        "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 40 + "{{ a|string|length }}",
        "text over 100000 characters",
    ),
    "padding": ("{{ 'x'|center(card.value.orders * 10**8) }}", "text over 100000 characters"),
    "format_width": ("{{ '{:>999999999}'.format(1) }}", "text over 100000 characters"),
    "printf_width": ("{{ '%999999999d' % 1 }}", "text over 100000 characters"),
    "join": ("{% set s = 'x' * 90000 %}{{ [s, s]|join }}", "text over 100000 characters"),
    "replace": ("{% set s = 'x' * 900 %}{{ s|replace('x', s) }}", "text over 100000 characters"),
    "output": (
        "{% for i in range(9000) %}{{ 'x' * 90 }}{% endfor %}",
        "output over 100000 characters",
    ),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_template_bomb_is_refused_naming_the_limit(name: str) -> None:
    source, limit = BOMBS[name]
    static = static_errors(source)
    if static:  # refused as written, before anything runs
        assert static == [f"template_limit: {limit}"]
        return
    # A generous time limit, so the limit named is the one the bomb is about on any machine.
    limits = RenderLimits(seconds=30)
    assert check(Template(body=source), limits=limits) == [f"body: template_limit: {limit}"]
    with pytest.raises(TemplateLimit) as raised:
        render(Template(body=source), build_context(SAMPLE_CARD), limits)
    assert raised.value.limit.startswith(limit)


def test_a_bomb_in_a_branch_the_sample_never_reaches_is_refused_as_written() -> None:
    source = "{% if card.tier == 'low' %}{{ 'x' * 10**10 }}{% endif %}"
    assert static_errors(source) == ["template_limit: text over 100000 characters"]
    assert check(Template(body=source)) == ["body: template_limit: text over 100000 characters"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "{{ " + " + ".join(["1"] * 4000) + " }}",
        "{% for a in [1] %}" * 30 + "x" + "{% endfor %}" * 30,
    ],
)
def test_a_template_nested_too_deep_is_refused_not_a_crash(source: str) -> None:
    assert static_errors(source) == ["template_limit: nesting too deep"]


def test_render_time_is_bounded() -> None:
    slow = (
        "{% set s = 'x' * 90000 %}"
        "{% for i in range(9000) %}{{ s|replace('x', 'y')|length }}{% endfor %}"
    )
    (error,) = check(Template(body=slow), limits=RenderLimits(seconds=0.01))
    assert error == "body: template_limit: render time over 10 ms"


def test_ordinary_templates_are_untouched_by_the_limits() -> None:
    template = Template(
        subject="{{ customer.name|upper }}",
        body="{% for t in card.profile.tags %}{{ t }}{% if not loop.last %}, {% endif %}"
        "{% endfor %}; {{ [1, 2]|join('-') }} {{ 'a' ~ 'b' }} {{ '%05.1f'|format(3.14159) }} "
        "{{ '{:,}'.format(1234567) }} {{ 2**10 }} {{ 'ab' * 3 }} {{ range(3)|list }}",
    )
    assert render(template, build_context(SAMPLE_CARD)) == (
        "ADA LOVELACE",
        "vip, newsletter; 1-2 ab 003.1 1,234,567 1024 ababab [0, 1, 2]",
    )


@pytest.mark.parametrize(
    "source",
    [
        "Thank you",
        "Thank you\n",
        "  two\n\nparagraphs \t%} and }} alone\n\n",
        "100% off, #1 choice } ",
        "",
    ],
)
def test_text_alone_renders_as_jinja_renders_it(source: str) -> None:
    """A part without a Jinja delimiter is not run through Jinja (``plain_text``): it reads
    exactly as Jinja would have rendered it, and is held to the size limit all the same."""
    assert plain_text(source)
    jinja = _compiled(source).render()
    assert render(Template(subject=source, body=source or "x"), build_context(SAMPLE_CARD)) == (
        " ".join(jinja.split()),
        jinja or "x",
    )
    assert not plain_text(source + "{{ x }}") and not plain_text(source + "\r\n")


def test_text_alone_over_the_size_limit_is_refused() -> None:
    limits = RenderLimits(size=ALWAYS_FITS)
    with pytest.raises(TemplateLimit, match=f"output over {ALWAYS_FITS} characters"):
        render(Template(body="x" * (ALWAYS_FITS + 1)), build_context(SAMPLE_CARD), limits)
