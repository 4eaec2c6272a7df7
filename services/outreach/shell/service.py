"""What outreach holds while it runs: the shared runtime's parts and outreach's own."""

from __future__ import annotations

import asyncio

from services.outreach.core.budgets import ReadBudget
from services.outreach.settings import OutreachSettings
from services.outreach.shell.consumer import ChangeApplier
from services.outreach.shell.current import Current
from services.outreach.shell.delivery import DeliveryWorker
from shared.consumer import BatchConsumer
from shared.outbox import OutboxRelay
from shared.service_state import ServiceState


class OutreachState(ServiceState):
    settings: OutreachSettings
    current: Current
    applier: ChangeApplier
    relay: OutboxRelay
    delivery: DeliveryWorker
    consumer: BatchConsumer
    # Previews and backtests: how far one goes; how many backtests run at once.
    read_budget: ReadBudget
    backtests: asyncio.Semaphore
