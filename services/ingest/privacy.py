"""The data-subject endpoints: erase a customer, export what Tend holds on one.

Ingest is the front door for both. Erasure is an event like any other — a ``customer.erased``
tombstone on the events topic, keyed by the customer, so it is ordered after everything the
customer did — and every consumer forgets the customer when it reaches it: scoring drops the
state and announces an ``erasure`` change, outreach drops its replica and scrubs its ledger.
Ingest itself forgets the customer's idempotency records and identity-map entries (every id
merged into them, every identifier) and tombstones their dead letters; an id merged into
another is erased as the person it now is.
The export gathers each service's own export into one document.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.ingest.deps import Ingest
from services.ingest.identity import forget, held_on, person
from services.ingest.settings import ingest_settings
from shared.auth import Operator, Reader
from shared.dlq import erase_from_dlq
from shared.errors import ERROR_RESPONSES, ErrorBody, error_response, unavailable
from shared.events import Envelope, ErasureData, EventType
from shared.kafka import PublishError, Record, publish_many
from shared.logging import get_logger
from shared.privacy import anonymous_id, customer_digest

log = get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["privacy"])

CustomerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:@+\-]+$",
        description="the customer's id, as the events carried it",
    ),
]

PEERS = ("scoring", "outreach")


class ErasureAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    customer_id: str = Field(description="the person's id: the survivor of the id asked for")
    erased_ids: list[str] = Field(
        description="every id of the person: the survivor and the ids merged into it"
    )
    erasure_id: str = Field(description="the event id of the `customer.erased` tombstone")
    requested_at: datetime


class Export(BaseModel):
    customer_id: str
    exported_at: datetime
    ingest: dict[str, Any] = Field(
        description="the customer's idempotency records (event ids and when they were "
        "accepted) and, under `identity`, the person in the identity map: their survivor, "
        "every id merged into it and every identifier of theirs (null when unknown to it)"
    )
    scoring: dict[str, Any] | None = Field(
        description="scoring's export (card, facts, history, event ids), null when it holds nothing"
    )
    outreach: dict[str, Any] | None = Field(
        description="outreach's export (card replica, suppression, schedule, actions with "
        "their messages), null when it holds nothing"
    )


_FORGET_KEYS = text(
    "DELETE FROM ingest.idempotency_keys WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
_REGISTER = text(
    """
    INSERT INTO ingest.erasures AS e (customer_digest, erased_at)
    SELECT digest, CAST(:at AS timestamptz) FROM unnest(CAST(:digests AS text[])) AS t(digest)
    ON CONFLICT (customer_digest) DO UPDATE SET erased_at = EXCLUDED.erased_at
    """
)


_KEYS_OF = text(
    """
    SELECT event_id, state, created_at FROM ingest.idempotency_keys WHERE customer_id = :id
    ORDER BY created_at, event_id
    """
)


def _unavailable(what: str) -> JSONResponse:
    return unavailable(what, retry_after=ingest_settings().retry_after_seconds)


@router.delete(
    "/customers/{customer_id}",
    status_code=202,
    response_model=ErasureAccepted,
    responses={
        **ERROR_RESPONSES,
        503: {"model": ErrorBody, "description": "the broker or database did not answer; retry"},
    },
    summary="Erase a customer (right to erasure)",
)
async def erase_customer(
    ingest: Ingest, customer_id: CustomerId, principal: Operator
) -> JSONResponse:
    """Forget everything Tend holds on the customer. **202** once the erasure is durably on
    its way: a `customer.erased` event is on the events topic (after every event the customer
    had), ingest has forgotten the customer's idempotency records and their dead letters are
    tombstoned. Scoring and outreach forget the customer as they reach the event, within
    seconds; events from before the erasure that arrive later (a replay, a late retry) are
    dropped, while a customer who comes back afterwards starts afresh. Revenue and order
    totals keep what the customer spent; nothing personal is kept.

    The person is erased whole: an id merged into another resolves to its survivor, the
    tombstone goes under the survivor (with `addressed_to` naming the id asked for), and
    every id merged into it, with every identifier of theirs, leaves ingest's identity map.

    Erasing twice is harmless. Needs `ops:write`.

    Example: `curl -X DELETE -H "Authorization: Bearer $TEND_OPS_KEY"
    http://localhost:8001/v1/customers/c-42`"""
    now = datetime.now(UTC)
    try:
        survivor, ids = await person(ingest.engine, customer_id)
    except (DBAPIError, OSError) as exc:
        log.warning("erasure_database_unavailable", reason=type(exc).__name__)
        return _unavailable("the database")
    if customer_id not in ids:
        ids.append(customer_id)  # never seen by the map (an id from before it), erased all the same
    envelope = Envelope(
        event_id=f"erasure-{uuid.uuid4()}",
        event_type=EventType.CUSTOMER_ERASED,
        customer_id=survivor,
        occurred_at=now,
        received_at=now,
        source=ingest_settings().source,
        data=ErasureData(requested_by=principal.name[:64]),
        addressed_to=customer_id if customer_id != survivor else None,
    )
    topics, producer = ingest.topics, ingest.producer
    timeout = ingest_settings().publish_timeout_seconds
    try:
        await publish_many(
            producer,
            [Record(topics.events, survivor.encode(), envelope.to_json())],
            timeout=timeout,
        )
        for cid in ids:
            await erase_from_dlq(producer, topics, cid)
    except PublishError as exc:
        log.warning("erasure_publish_failed", reason=str(exc))
        return _unavailable("the event broker")
    try:
        async with ingest.engine.connect() as conn:
            await conn.execute(_FORGET_KEYS, {"ids": ids})
            await conn.execute(_REGISTER, {"digests": [customer_digest(i) for i in ids], "at": now})
            await forget(conn, ids, anonymous_id(envelope.event_id))
    except (DBAPIError, OSError) as exc:
        log.warning("erasure_database_unavailable", reason=type(exc).__name__)
        return _unavailable("the database")
    log.info("erasure_requested", erasure_id=envelope.event_id, key_id=principal.key_id)
    body = ErasureAccepted(
        customer_id=survivor, erased_ids=ids, erasure_id=envelope.event_id, requested_at=now
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


@router.get(
    "/customers/{customer_id}/export",
    response_model=Export,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody, "description": "Tend holds nothing on this customer"},
        503: {"model": ErrorBody, "description": "scoring or outreach did not answer; retry"},
    },
    summary="Export everything Tend holds on a customer (right of access)",
)
async def export_customer(
    request: Request, ingest: Ingest, customer_id: CustomerId, _: Reader
) -> JSONResponse:
    """One document with everything Tend holds on the customer: ingest's idempotency records
    and the person's entry in the identity map (their ids and identifiers),
    scoring's card, facts, stage history and applied event ids, and outreach's card replica,
    suppression, schedule and every action decided with its message. A part is `null` when
    that service holds nothing; **404** when none does. Needs `ops:read`.

    Example: `curl -H "Authorization: Bearer $TEND_OPS_KEY"
    http://localhost:8001/v1/customers/c-42/export`"""
    try:
        async with ingest.engine.connect() as conn:
            keys = (await conn.execute(_KEYS_OF, {"id": customer_id})).all()
        identity = await held_on(ingest.engine, customer_id)
    except (DBAPIError, OSError) as exc:
        log.warning("export_database_unavailable", reason=type(exc).__name__)
        return _unavailable("the database")
    parts: dict[str, dict[str, Any] | None] = {}
    auth = {h: v for h, v in request.headers.items() if h.lower() in ("authorization", "x-api-key")}
    peers = ingest.peers
    for name in PEERS:
        try:
            resp = await peers[name].get(f"/v1/customers/{customer_id}/export", headers=auth)
        except httpx.HTTPError as exc:
            log.warning("export_peer_unreachable", peer=name, reason=type(exc).__name__)
            return _unavailable(name)
        if resp.status_code == 404:
            parts[name] = None
        elif resp.status_code == 200:
            parts[name] = resp.json()
        else:
            log.warning("export_peer_failed", peer=name, status=resp.status_code)
            return _unavailable(name)
    ingest_part = {
        "events": [
            {"event_id": k.event_id, "published": k.state == 1, "accepted_at": k.created_at}
            for k in keys
        ],
        "identity": identity,
    }
    if not keys and identity is None and all(p is None for p in parts.values()):
        return error_response(404, f"Tend holds nothing on customer {customer_id!r}")
    body = Export(
        customer_id=customer_id,
        exported_at=datetime.now(UTC),
        ingest=ingest_part,
        scoring=parts["scoring"],
        outreach=parts["outreach"],
    )
    return JSONResponse(body.model_dump(mode="json"))
