from services.outreach.models import metadata
from shared.migrate import run_migrations

run_migrations(metadata)
