"""What scoring holds while it runs: the shared runtime's parts and scoring's own."""

from __future__ import annotations

from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from shared.consumer import BatchConsumer
from shared.outbox import OutboxRelay
from shared.service_state import ServiceState


class ScoringState(ServiceState):
    settings: ScoringSettings
    population: PopulationCache
    applier: EventApplier
    relay: OutboxRelay
    forwards: OutboxRelay
    consumer: BatchConsumer
