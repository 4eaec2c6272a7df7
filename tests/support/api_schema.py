"""schemathesis over a running service, judged by what its OpenAPI document says.

Six checks, on every operation, with a pinned seed:

- ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``: every answer is a documented status with a documented
  body, never a 5xx;
- ``negative_data_rejection``: a request that breaks the schema is refused (4xx);
- ``positive_data_acceptance``: a request the schema allows is answered 2xx or a status the
  route documents — a 404 for an unknown id, a 409, a 403 for a key without the scope, a 429
  — but not a 400/413/415 nor a 422, which would mean the schema does not say what the
  validator enforces. The exception is a route's own :func:`shared.errors.beyond_schema`
  rules (a cursor it wrote, a time relative to now), and :func:`beyond_schema_only` checks
  that such a 422 names only the fields those rules list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import schemathesis
from schemathesis.config import SchemathesisConfig

from shared.errors import BEYOND_SCHEMA

SEED = 20261204

# Statuses that only ever mean "this request is malformed": never an answer to one the
# schema allows.
MALFORMED = {"400", "413", "415", "422"}
_METHODS = {"get", "put", "post", "delete", "patch"}


def _accepted(responses: dict[str, Any]) -> list[str]:
    """What a schema-valid request may be answered, by what the route documents."""
    statuses = {"2xx"}
    for status, answer in responses.items():
        if status not in MALFORMED or (status == "422" and BEYOND_SCHEMA in answer):
            statuses.add(status)
    return sorted(statuses)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _recursive(node: Any, components: dict[str, Any]) -> bool:
    """Whether ``node`` reaches a component that refers back to itself (the rule language)."""
    seen: set[str] = set()
    todo = list(_refs(node))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        below = set(_refs(components.get(name, {})))
        if name in below or _reaches(below, name, components):
            return True
        todo.extend(below)
    return False


def _reaches(start: set[str], target: str, components: dict[str, Any]) -> bool:
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name == target:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(components.get(name, {})))
    return False


def _operation(label: str, op: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "include-name": label,
        "checks": {"positive_data_acceptance": {"expected-statuses": _accepted(op["responses"])}},
    }
    if _recursive(op.get("requestBody", {}), components):
        # The coverage phase walks every branch of a recursive language (thousands of
        # requests for one rule body); fuzzing draws from it instead.
        config["phases"] = {"coverage": {"enabled": False}}
    return config


def load(url: str) -> schemathesis.BaseSchema:
    """The service's OpenAPI document at ``url``, with each operation's accepted statuses."""
    document = httpx.get(f"{url}/openapi.json", timeout=10).raise_for_status().json()
    components = document.get("components", {}).get("schemas", {})
    operations = [
        _operation(f"{method.upper()} {path}", op, components)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in _METHODS
    ]
    config = SchemathesisConfig.from_dict({"seed": SEED, "base-url": url, "operations": operations})
    return schemathesis.openapi.from_dict(document, config=config)


def _covers(rule: str, field: str) -> bool:
    """A rule covers the field it names and the fields below it; a rule on the whole body
    (``body``: a check across fields) covers only errors named ``body``."""
    return field == rule or (rule != "body" and field.startswith(f"{rule}."))


def beyond_schema_only(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request refused with a 422 names only fields whose rules the route
    lists as beyond its schema."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    answer = case.operation.definition.raw["responses"].get("422", {})
    rules: dict[str, str] = answer.get(BEYOND_SCHEMA, {})
    named = [e["field"] for e in response.json().get("errors", [])]
    unexplained = [f for f in named if not any(_covers(r, f) for r in rules)]
    if unexplained or not named:
        raise AssertionError(
            f"a schema-valid request was refused for {unexplained or 'no field'}, which the "
            f"schema does not state (rules beyond it: {sorted(rules) or 'none'}): "
            f"{response.text[:500]}"
        )
    return None


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.positive_data_acceptance,
    beyond_schema_only,
]


# Headers of the HTTP connection itself (RFC 9110 section 7.6.1, RFC 9112): a malformed one is
# refused by the HTTP server before any route sees the request (uvicorn answers a plain-text
# 400, "Invalid HTTP request received."), so the schema, which describes the API, has no say.
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def call_and_check(case: Any, headers: dict[str, str]) -> None:
    if case.headers:
        for name in [n for n in case.headers if n.lower() in TRANSPORT_HEADERS]:
            del case.headers[name]
    case.call_and_validate(headers=headers, checks=CHECKS)
