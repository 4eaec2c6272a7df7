"""Merging customers by hand: an operator says several ids are one person."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.exc import DBAPIError

from services.ingest.deps import Ingest
from services.ingest.identity import MAX_MERGED, MergeRefused
from services.ingest.privacy import CustomerId
from services.ingest.settings import ingest_settings
from shared.audit import Actor
from shared.auth import Operator
from shared.errors import (
    ErrorBody,
    FieldError,
    beyond_schema,
    error_response,
    responses,
    unavailable,
)
from shared.events import Identifier, NoNul
from shared.kafka import PublishError
from shared.logging import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["identities"])


class MergeIn(BaseModel):
    """The customers to merge into the survivor named in the path, and why."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_ids: list[Identifier] = Field(
        alias="from",
        min_length=1,
        max_length=MAX_MERGED,
        description="the customer ids that are the survivor from now on",
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul] = Field(
        description="why they are one person (kept on the merge event and in the audit log)"
    )


class MergeResult(BaseModel):
    status: Literal["merged", "already_merged"]
    customer_id: str = Field(description="the survivor")
    merged_ids: list[str] = Field(
        description="every id merged into the survivor by this merge (with the ids that were "
        "already merged into those)"
    )
    merge_event_id: str = Field(description="the event id of the `customer.merged` event")


@router.post(
    "/customers/{customer_id}/merge",
    status_code=202,
    response_model=MergeResult,
    responses=responses(
        {
            200: {"model": MergeResult, "description": "every id was already merged into it"},
            404: {"model": ErrorBody, "description": "ingest has never seen one of the ids"},
            409: {
                "model": ErrorBody,
                "description": "the survivor is itself merged into another customer, or an "
                "id is already merged into another",
            },
            503: {"model": ErrorBody, "description": "the broker or database did not answer"},
        },
        beyond_schema(
            {
                "body.from": "not the survivor itself; with the ids merged into them, at "
                f"most {MAX_MERGED}"
            }
        ),
    ),
    summary="Merge customers into one (the survivor)",
)
async def merge_customers(
    ingest: Ingest,
    customer_id: CustomerId,
    principal: Operator,
    body: Annotated[
        MergeIn,
        Body(
            openapi_examples={
                "two shops": {
                    "summary": "a store id and a marketplace id of one person",
                    "value": {"from": ["store-881", "mkt-17"], "reason": "same person, asked"},
                }
            }
        ),
    ],
) -> JSONResponse:
    """Say that the customers in `from` are the customer in the path (the survivor): a
    `customer.merged` event is published under the survivor's key, the merge is in the audit
    log, and from then on every event sent for a merged id is published under the survivor
    (with `addressed_to` naming the id it was sent for). Scoring folds their histories into
    one card, outreach their ledgers. An id that was itself a survivor brings its own merged
    ids along (chains resolve: X merged into Y, then Y into Z, puts X under Z).

    **202** with the merge event's id once the broker has it; **200** when every id was
    already merged into this survivor (the earlier merge's id; nothing is published);
    **404** when ingest has never had an event for one of the ids; **409** when the survivor
    is itself merged into another customer (refused, not redirected: the message names the
    customer to merge into) or an id is already merged into a different survivor; **422**
    when the survivor is among `from`; **503** when the broker or database does not answer
    (nothing was merged). Needs `ops:write`.

    Example: `curl -H "Authorization: Bearer $TEND_OPS_KEY" -H 'content-type: application/json'
    localhost:8001/v1/customers/web-42/merge -d '{"from":["store-881"],"reason":"same email"}'`
    """
    try:
        merged = await ingest.identities.merge(
            customer_id, body.from_ids, body.reason, Actor.of(principal)
        )
    except MergeRefused as exc:
        return error_response(
            exc.status, exc.message, errors=[FieldError(field=exc.field, reason=exc.message)]
        )
    except PublishError as exc:
        log.warning("merge_publish_failed", reason=str(exc))
        return _unavailable("the event broker")
    except (DBAPIError, OSError) as exc:
        log.warning("merge_database_unavailable", reason=type(exc).__name__)
        return _unavailable("the database")
    log.info("customers_merged", merge_event_id=merged.event_id, created=merged.created)
    result = MergeResult(
        status="merged" if merged.created else "already_merged",
        customer_id=merged.survivor,
        merged_ids=merged.merged_ids,
        merge_event_id=merged.event_id,
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=202 if merged.created else 200)


def _unavailable(what: str) -> JSONResponse:
    return unavailable(
        what, retry_after=ingest_settings().retry_after_seconds, note="nothing was merged"
    )
