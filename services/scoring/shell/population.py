"""The population inputs in force (RFM and tier cut points, BG/NBD and Gamma-Gamma parameters,
the median purchase gap), held in memory for the consumer, the sweep and the read API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import Population
from services.scoring.store import customers as store


class PopulationCache:
    """The population inputs in force, reloaded from the database by the app's loop (and
    replaced by a refit in this process)."""

    def __init__(self, population: Population | None = None) -> None:
        self.current = population or Population()

    async def reload(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            self.current = await store.load_population(conn)
