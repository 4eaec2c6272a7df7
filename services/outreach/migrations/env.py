from services.outreach.store.tables import metadata
from shared.migrate import run_migrations

run_migrations(metadata)
