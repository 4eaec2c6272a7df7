"""Outreach's HTTP routes: thin routers over shell, store and core; a route module is never a
library for another (shared dependencies are in :mod:`.deps`, API models in
:mod:`services.outreach.schemas`)."""
