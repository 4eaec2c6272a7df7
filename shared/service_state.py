"""What a running service holds, as its routes receive it: the typed state and a request's
unit of work.

The app's ``state`` is a :class:`ServiceState` (each service narrows it with its own parts);
routes reach it through :func:`typed_state` rather than untyped attributes, and
:data:`Transaction` is one connection in one transaction that commits when the route returns,
before the answer is sent, and rolls back when it raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import State

from shared.auth import KeyStore
from shared.clock import Clock
from shared.kafka import Producer
from shared.ratelimit import RateLimiter
from shared.settings import CommonSettings
from shared.supervisor import Supervisor
from shared.topics import Topics


class ServiceState(State):
    """What every service holds while it runs; a service's own state adds its parts."""

    service: str
    common: CommonSettings
    clock: Clock
    topics: Topics
    engine: AsyncEngine
    producer: Producer
    keys: KeyStore
    rate_limiter: RateLimiter | None
    # The background tasks, once the runtime has started them.
    supervisor: Supervisor


S = TypeVar("S", bound=ServiceState)


def state_of(request: Request) -> ServiceState:
    """The running service's state (typed: each service narrows it with its own alias)."""
    return cast(ServiceState, request.app.state)


async def _transaction(request: Request) -> AsyncIterator[AsyncConnection]:
    async with state_of(request).engine.begin() as conn:
        yield conn


# A request's unit of work: committed when the route returns, before the answer is sent;
# rolled back when it raises.
Transaction = Annotated[AsyncConnection, Depends(_transaction, scope="function")]


def typed_state(kind: type[S]) -> Any:
    """A dependency giving a route its service's state as ``kind``:
    ``Scoring = Annotated[ScoringState, typed_state(ScoringState)]``."""

    # async: a plain function would be run in a worker thread, on every request.
    async def dependency(request: Request) -> S:
        found = request.app.state
        if not isinstance(found, kind):
            raise TypeError(f"the app's state is a {type(found).__name__}, not {kind.__name__}")
        return found

    return Depends(dependency)
