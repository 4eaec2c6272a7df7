"""The ingest API: what customers do, in; events on Kafka, out."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, FastAPI, Header
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.ingest.deps import Ingest, IngestState
from services.ingest.intake import Intake, Outcome, Prepared, prepare, prepare_batch
from services.ingest.metrics import EVENTS
from services.ingest.schemas import (
    BatchIn,
    BatchItem,
    BatchResult,
    ComplaintIn,
    CustomerIn,
    EventResult,
    IngestItem,
    OrderIn,
    VisitIn,
)
from services.ingest.settings import ingest_settings
from shared.auth import EventsWriter, Principal
from shared.errors import (
    ERROR_RESPONSES,
    ErrorBody,
    FieldError,
    beyond_schema,
    error_response,
    field_errors,
    responses,
    unavailable,
)
from shared.events import EventType
from shared.heap import settle_heap
from shared.kafka import PublishError
from shared.logging import get_logger

log = get_logger(__name__)


@asynccontextmanager
async def _settled_heap(_app: FastAPI) -> AsyncIterator[None]:
    """Once the app has started, keep the garbage collector off what it holds."""
    settle_heap()
    yield


router = APIRouter(prefix="/v1", tags=["events"], lifespan=_settled_heap)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        pattern=r"^[A-Za-z0-9._:@+\-]+$",
        description="Used as the event id when the body has none; a retry with the same key "
        "is recognised.",
    ),
]

_batch_item = TypeAdapter[Any](BatchItem)
_batch_items = TypeAdapter[list[Any]](list[BatchItem])

SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = responses(
    {
        200: {"model": EventResult, "description": "already accepted earlier (a retry)"},
        409: {"model": ErrorBody, "description": "this event id was used for a different payload"},
        503: {"model": ErrorBody, "description": "the broker did not acknowledge; retry later"},
    },
    beyond_schema(
        {
            "body.occurred_at": "at most `TEND_INGEST_MAX_FUTURE_SECONDS` (300 s by default) "
            "in the future, and not before `TEND_INGEST_EARLIEST_OCCURRED_AT` (1970)",
            "body.amount": "at most the base currency's decimals (2 for USD)",
            "body.outstanding": "at most the base currency's decimals (2 for USD)",
            "body.items": "each `unit_price` with at most the base currency's decimals",
            "customer_id": "not a customer erased after this event occurred",
            "body.refund_id": "only on a refund (`status: refunded`)",
            "body.identifiers": "an `email` is an email address, a `phone` a possible number "
            "(read in `TEND_PHONE_REGION` without a country code), an `external` id has its "
            "`source`",
        }
    ),
)


def _unavailable(what: str) -> JSONResponse:
    return unavailable(
        what, retry_after=ingest_settings().retry_after_seconds, note="nothing was accepted"
    )


def _item_locations(index: int, exc: ValidationError) -> list[dict[str, Any]]:
    """Error locations as a client reads them: ``events.3.amount``, without the union tag."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if len(loc) > 1 and loc[0] in ("order", "complaint", "visit", "customer"):
            loc = loc[1:]
        out.append({**err, "loc": ("events", index, *loc)})
    return out


def _judge(
    events: list[dict[str, Any]],
) -> tuple[list[IngestItem], list[int], dict[int, list[dict[str, str]]]]:
    """The valid items of a batch with their input indexes, and the field errors of the others.

    The whole batch is validated in one pass first, the usual case being that every item is
    good; only when that fails is each item judged alone, to tell the good from the bad.
    """
    try:
        return _batch_items.validate_python(events), list(range(len(events))), {}
    except ValidationError:
        pass
    valid: list[IngestItem] = []
    at: list[int] = []
    rejected: dict[int, list[dict[str, str]]] = {}
    for i, raw in enumerate(events):
        try:
            valid.append(_batch_item.validate_python(raw))
        except ValidationError as exc:
            rejected[i] = [e.model_dump() for e in field_errors(_item_locations(i, exc))]
        else:
            at.append(i)
    return valid, at, rejected


async def _accept(intake: Intake, batch: Sequence[Prepared]) -> list[Outcome] | JSONResponse:
    try:
        return await intake.accept(batch)
    except PublishError as exc:
        log.warning("publish_failed", reason=str(exc), events=len(batch))
        return _unavailable("the event broker")
    except (OperationalError, DBAPIError, PoolTimeout, OSError) as exc:
        log.warning("database_unavailable", reason=type(exc).__name__, events=len(batch))
        return _unavailable("the database")


async def _single(
    ingest: IngestState, item: IngestItem, principal: Principal, header_key: str | None
) -> JSONResponse:
    prepared = prepare(
        item, header_key=header_key, source=principal.name[:64], received_at=datetime.now(UTC)
    )
    outcomes = await _accept(ingest.intake, [prepared])
    if isinstance(outcomes, JSONResponse):
        return outcomes
    outcome = outcomes[0]
    envelope = prepared
    EVENTS.labels(envelope.event_type, outcome).inc()
    if outcome is Outcome.CONFLICT:
        return error_response(
            409,
            f"event id {envelope.event_id!r} was already used for a different payload",
            errors=[FieldError(field="event_id", reason="already used for a different payload")],
        )
    if outcome is Outcome.ERASED:
        return error_response(
            422,
            "this customer was erased; events from before the erasure are not accepted",
            errors=[FieldError(**_ERASED)],
        )
    body = EventResult(
        status="accepted" if outcome is Outcome.ACCEPTED else "duplicate",
        event_id=envelope.event_id,
        event_type=envelope.event_type,
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202 if outcome is Outcome.ACCEPTED else 200
    )


@router.post(
    "/orders",
    status_code=202,
    response_model=EventResult,
    responses=SINGLE_RESPONSES,
    summary="Record an order event",
)
async def post_order(
    ingest: Ingest,
    order: OrderIn,
    principal: EventsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record an order placed, paid, refunded or cancelled.

    Answers **202** once the event broker has durably acknowledged the event, **200** with
    `duplicate` when the same event was accepted before (no second event is published),
    **409** when its event id was used for a different payload, and **503** with
    `Retry-After` when the broker is unreachable (nothing was accepted: retry).
    """
    return await _single(ingest, order, principal, idempotency_key)


@router.post(
    "/complaints",
    status_code=202,
    response_model=EventResult,
    responses=SINGLE_RESPONSES,
    summary="Record a complaint event",
)
async def post_complaint(
    ingest: Ingest,
    complaint: ComplaintIn,
    principal: EventsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record a complaint opened or resolved. Same answers as `POST /v1/orders`."""
    return await _single(ingest, complaint, principal, idempotency_key)


@router.post(
    "/visits",
    status_code=202,
    response_model=EventResult,
    responses=SINGLE_RESPONSES,
    summary="Record a visit",
)
async def post_visit(
    ingest: Ingest,
    visit: VisitIn,
    principal: EventsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record a visit (store, web, app, phone, sales call). Same answers as `POST /v1/orders`."""
    return await _single(ingest, visit, principal, idempotency_key)


@router.post(
    "/customers",
    status_code=202,
    response_model=EventResult,
    responses=SINGLE_RESPONSES,
    summary="Upsert a customer profile",
)
async def post_customer(
    ingest: Ingest,
    customer: CustomerIn,
    principal: EventsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create or update a customer's profile: fields present replace the stored ones, absent
    fields are kept. Same answers as `POST /v1/orders`."""
    return await _single(ingest, customer, principal, idempotency_key)


@router.post(
    "/events",
    response_model=BatchResult,
    summary="Record a batch of mixed events",
    responses={
        **ERROR_RESPONSES,
        503: {"model": ErrorBody, "description": "the broker did not acknowledge; retry"},
    },
)
async def post_events(
    ingest: Ingest,
    principal: EventsWriter,
    batch: Annotated[
        BatchIn,
        Body(
            openapi_examples={
                "mixed": {
                    "summary": "an order and a visit",
                    "value": {
                        "events": [
                            {
                                "type": "order",
                                "order_id": "o-1001",
                                "customer_id": "c-42",
                                "occurred_at": "2026-11-20T10:15:00Z",
                                "status": "paid",
                                "amount": "59.90",
                                "currency": "USD",
                            },
                            {
                                "type": "visit",
                                "visit_id": "v-77",
                                "customer_id": "c-42",
                                "occurred_at": "2026-11-21T16:00:00Z",
                                "channel": "store",
                            },
                        ]
                    },
                }
            }
        ),
    ],
) -> Response:
    """Record up to 1,000 mixed events in one call. Each item carries a `type` (`order`,
    `complaint`, `visit`, `customer`) beside that kind's fields, exactly as the single
    endpoints take them.

    Items are judged one by one: the answer lists, in input order, each item's result —
    `accepted`, `duplicate` (accepted before) or `rejected` with its field errors. Valid items
    are accepted even when others are rejected. The whole call answers 503 (nothing new
    acknowledged: retry it as is; accepted items come back as duplicates) when the broker is
    unreachable.
    """
    events = batch.events
    # Plain dicts, not models, on this path: it runs for every item of every batch.
    results: list[dict[str, Any]] = [{}] * len(events)
    valid, at, rejected = _judge(events)
    for i, errors in rejected.items():
        results[i] = _item(i, "rejected", None, None, errors)

    counts = dict.fromkeys(Outcome, 0)
    if valid:
        prepared = prepare_batch(valid, source=principal.name[:64], received_at=datetime.now(UTC))
        outcomes = await _accept(ingest.intake, prepared)
        if isinstance(outcomes, JSONResponse):
            return outcomes
        tally: Counter[tuple[EventType, Outcome]] = Counter()
        for i, p, outcome in zip(at, prepared, outcomes, strict=True):
            tally[p.event_type, outcome] += 1
            if outcome is Outcome.CONFLICT:
                results[i] = _item(i, "rejected", p.event_id, p.event_type, [_REUSED])
            elif outcome is Outcome.ERASED:
                results[i] = _item(i, "rejected", p.event_id, p.event_type, [_erased_at(i)])
            else:
                results[i] = _item(i, outcome, p.event_id, p.event_type, [])
        for (event_type, outcome), n in tally.items():
            EVENTS.labels(event_type, outcome).inc(n)
            counts[outcome] += n
    body = {
        "accepted": counts[Outcome.ACCEPTED],
        "duplicates": counts[Outcome.DUPLICATE],
        "rejected": len(events) - len(valid) + counts[Outcome.CONFLICT] + counts[Outcome.ERASED],
        "results": results,
    }
    return Response(orjson.dumps(body), media_type="application/json")


_REUSED = {"field": "event_id", "reason": "already used for a different payload"}
_ERASED = {
    "field": "customer_id",
    "reason": "this customer was erased; events from before the erasure are not accepted",
}


def _erased_at(index: int) -> dict[str, str]:
    return {**_ERASED, "field": f"events.{index}.customer_id"}


def _item(
    index: int,
    status: str,
    event_id: str | None,
    event_type: EventType | None,
    errors: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "index": index,
        "status": status,
        "event_id": event_id,
        "event_type": event_type,
        "errors": errors,
    }
