"""What ingest holds while it runs, as its routes receive it."""

from __future__ import annotations

from typing import Annotated

import httpx

from services.ingest.identity import IdentityMap
from services.ingest.intake import Intake
from shared.service_state import ServiceState, typed_state


class IngestState(ServiceState):
    intake: Intake
    identities: IdentityMap
    # Scoring's and outreach's APIs, for the customer export.
    peers: dict[str, httpx.AsyncClient]


Ingest = Annotated[IngestState, typed_state(IngestState)]
