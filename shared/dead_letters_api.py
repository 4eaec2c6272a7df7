"""``GET /v1/dead-letters`` and ``GET /v1/dead-letters/summary``: the dead-letter topic for
operations, newest first, without payloads. Served by scoring (the DLQ is the cluster's, one
topic for every consumer; one service reads it for all).

What is read and shown is :mod:`shared.dead_letters`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from shared.auth import Reader
from shared.cursor import CURSOR_RESPONSES, decode_cursor, encode_cursor
from shared.dead_letters import READ_RECORDS, Letter, Tail, read_tail
from shared.errors import responses, unavailable_error
from shared.service_state import state_of

router = APIRouter(prefix="/v1", tags=["operations"])


class DeadLetterOut(BaseModel):
    """One record the consumers gave up on, as operations see it: never its payload."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="`<partition>/<offset>` in the dead-letter topic")
    failed_at: datetime = Field(description="when it was dead-lettered")
    state: Literal["pending", "replayed"] = Field(
        description="`replayed`: `tend dlq replay` has sent it back to its source topic"
    )
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    group: str | None = Field(description="the consumer group that gave up on it")
    reason: str = Field(
        description="why: `statement_timeout` (it kept timing out alone), else the error's "
        "class (`ValidationError`, `JSONDecodeError`, ...)"
    )
    error: str | None = Field(description="what failed, without the personal data it quoted")
    key: str | None = Field(description="its key in the source topic: the customer id")
    event_id: str | None = Field(
        description="the id of the event (or change) it held, when it names one"
    )
    size: int = Field(description="bytes of payload")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters) for the next page; null on the "
        "last page"
    )
    complete: bool = Field(
        description=f"false: the topic holds more than the newest {READ_RECORDS} records "
        "read, and older dead letters are not listed"
    )


class ReasonCount(BaseModel):
    reason: str
    pending: int
    replayed: int


class DeadLetterSummary(BaseModel):
    total: int
    pending: int = Field(description="waiting for a fix and `tend dlq replay`")
    replayed: int
    by_reason: list[ReasonCount] = Field(description="most frequent first")
    oldest_pending_at: datetime | None
    complete: bool = Field(
        description=f"false: only the newest {READ_RECORDS} records of the topic were counted"
    )


# The position after a page's last letter: its time, then its place in the topic.
class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    p: StrictInt
    o: StrictInt


def _order(letter: Letter) -> tuple[datetime, int, int]:
    return letter.failed_at, letter.partition, letter.offset


async def _tail(request: Request) -> Tail:
    state = state_of(request)
    try:
        return await read_tail(state.common, state.topics.dlq)
    except TimeoutError as exc:
        raise unavailable_error("the broker") from exc


@router.get(
    "/dead-letters",
    response_model=DeadLetterPage,
    responses=responses(CURSOR_RESPONSES),
    summary="Dead letters",
)
async def list_dead_letters(
    request: Request,
    _: Reader,
    state: Annotated[
        Literal["pending", "replayed"] | None, Query(description="Only records in this state.")
    ] = None,
    reason: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=r"^[A-Za-z0-9_.]+$",
            description="Only records given up on for this (a reason as listed).",
        ),
    ] = None,
    source_topic: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=249,
            pattern=r"^[A-Za-z0-9._-]+$",  # what Kafka allows in a topic name
            description="Only records from this topic.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Records per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000, description="The `next_cursor` of the previous page; omit at first."
        ),
    ] = None,
) -> DeadLetterPage:
    """The records the consumers could not process and set aside in the dead-letter topic,
    newest first, one page at a time: where each came from (topic, partition, offset), which
    consumer group gave up and why, the error (scrubbed of personal data), the customer id
    it was keyed by and the id of the event or change it held — never the payload. Records
    of erased customers are left out. Replay them with `tend dlq replay` once the cause is
    fixed.

    The newest 10,000 records of the topic are read (`complete` says whether that was all of
    it); **503** when the broker does not answer within 10 s."""
    after = decode_cursor(cursor, _Cursor) if cursor is not None else None
    tail = await _tail(request)
    chosen = [
        d
        for d in reversed(tail.letters)
        if (state is None or d.state == state)
        and (reason is None or d.reason == reason)
        and (source_topic is None or d.source_topic == source_topic)
        and (after is None or _order(d) < (after.at, after.p, after.o))
    ]
    chosen.sort(key=_order, reverse=True)
    page = chosen[:limit]
    more = len(chosen) > limit
    last = page[-1] if more else None
    return DeadLetterPage(
        items=[_out(d) for d in page],
        next_cursor=encode_cursor(_Cursor(at=last.failed_at, p=last.partition, o=last.offset))
        if last
        else None,
        complete=tail.complete,
    )


@router.get(
    "/dead-letters/summary",
    response_model=DeadLetterSummary,
    responses=responses(),
    summary="Dead letters by reason",
)
async def dead_letters_summary(request: Request, _: Reader) -> DeadLetterSummary:
    """How many records wait in the dead-letter topic (and how many were replayed), by the
    reason they were given up on, and when the oldest still waiting failed. Erased records
    are not counted. **503** when the broker does not answer within 10 s."""
    tail = await _tail(request)
    counts: dict[str, list[int]] = {}
    for d in tail.letters:
        counts.setdefault(d.reason, [0, 0])[d.state == "replayed"] += 1
    pending = [d for d in tail.letters if d.state == "pending"]
    rows = sorted(counts.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    return DeadLetterSummary(
        total=len(tail.letters),
        pending=len(pending),
        replayed=len(tail.letters) - len(pending),
        by_reason=[ReasonCount(reason=r, pending=p, replayed=x) for r, (p, x) in rows],
        oldest_pending_at=min((d.failed_at for d in pending), default=None),
        complete=tail.complete,
    )


def _out(d: Letter) -> DeadLetterOut:
    return DeadLetterOut(
        id=f"{d.partition}/{d.offset}",
        failed_at=d.failed_at,
        state="replayed" if d.state == "replayed" else "pending",
        source_topic=d.source_topic,
        source_partition=d.source_partition,
        source_offset=d.source_offset,
        group=d.group,
        reason=d.reason,
        error=d.error,
        key=d.key,
        event_id=d.event_id,
        size=d.size,
    )
