"""The duplicates report: customers who are likely one person, for an operator to merge (on
ingest: ``POST /v1/customers/{survivor}/merge``) or dismiss here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scoring.api.deps import Scoring
from services.scoring.core.identities import name_likeness
from services.scoring.store import identities
from shared import audit
from shared.auth import Operator, Reader
from shared.cursor import CURSOR_RESPONSES, decode_cursor, encode_cursor
from shared.errors import ERROR_RESPONSES, responses
from shared.events import Identifier

router = APIRouter(prefix="/v1", tags=["duplicates"])


class SharedIdentifier(BaseModel):
    kind: str = Field(description="`email` or `phone`")
    value: str = Field(description="as compared: an email lower-cased, a phone in E.164")


class DuplicatePair(BaseModel):
    pair: list[str] = Field(description="the two customer ids, the smaller first")
    names: list[str | None] = Field(description="their names, in the same order")
    shared: list[SharedIdentifier] = Field(description="the identifiers both are known by")
    name_likeness: float | None = Field(
        description="how alike the names read, 0 to 1 (difflib's ratio); null when either "
        "is unknown. Added evidence: a pair is listed only for a shared email or phone"
    )


class DuplicatePage(BaseModel):
    items: list[DuplicatePair]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    a: str = Field(min_length=1, max_length=128)
    b: str = Field(min_length=1, max_length=128)


@router.get(
    "/duplicates",
    response_model=DuplicatePage,
    responses=responses(CURSOR_RESPONSES),
    summary="Customers who are likely one person",
)
async def list_duplicates(
    scoring: Scoring,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=500, description="Pairs per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000, description="The `next_cursor` of the previous page; omit at first."
        ),
    ] = None,
) -> DuplicatePage:
    """Pairs of customers who share an email or a phone (as compared: emails in any case,
    phones in any format), with the identifiers they share and how alike their names read,
    in customer id order. A namesake with another email and phone is not listed. Pairs an
    operator dismissed (`POST /v1/duplicates/dismiss`) and ids already merged are left out."""
    after = decode_cursor(cursor, _Cursor) if cursor is not None else None
    pairs, last = await identities.likely_pairs(
        scoring.engine, (after.a, after.b) if after else None, limit
    )
    return DuplicatePage(
        items=[
            DuplicatePair(
                pair=[p.first_id, p.second_id],
                names=[p.first_name, p.second_name],
                shared=[SharedIdentifier(kind=k, value=v) for k, v in p.shared],
                name_likeness=name_likeness(p.first_name, p.second_name),
            )
            for p in pairs
        ],
        next_cursor=encode_cursor(_Cursor(a=last[0], b=last[1])) if last else None,
    )


class Dismissal(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"pair": ["web-1042", "store-77"]}]}
    )

    pair: list[Identifier] = Field(
        min_length=2, max_length=2, description="the two customer ids, in any order"
    )

    @model_validator(mode="after")
    def _two(self) -> Dismissal:
        if self.pair[0] == self.pair[1]:
            raise ValueError("pair must name two different customers")
        return self


class Dismissed(BaseModel):
    pair: list[str] = Field(description="the two customer ids, the smaller first")
    dismissed: bool = Field(description="false when the pair was dismissed already")


@router.post(
    "/duplicates/dismiss",
    response_model=Dismissed,
    responses=ERROR_RESPONSES,
    summary="Say two customers are not one person",
)
async def dismiss_duplicate(scoring: Scoring, principal: Operator, body: Dismissal) -> Dismissed:
    """Hide the pair from the duplicates report for good (written to the audit log as
    `duplicate.dismissed`). Dismissing a pair again changes nothing (`dismissed: false`)."""
    first, second = sorted(body.pair)
    async with scoring.engine.begin() as conn:
        new = await identities.dismiss(conn, first, second)
        if new:
            await audit.record(
                conn,
                actor=audit.Actor.of(principal),
                service="scoring",
                action="duplicate.dismissed",
                subject=f"{first} {second}",
                after={"pair": [first, second]},
            )
    return Dismissed(pair=[first, second], dismissed=new)
