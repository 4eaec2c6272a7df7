"""Least privilege in PostgreSQL: a role per service that writes only its own schema.

``tend migrate`` (:func:`shared.migrate.upgrade_all`) ends here. It creates the group roles
(``NOLOGIN``) when the migrating user may (``CREATEROLE``; the local setup gives it), and
grants, again at every migration so that new tables are covered:

* ``tend_ingest``, ``tend_scoring``, ``tend_outreach``: read and write their own schema
  (``ingest``, ``scoring``, ``outreach``: rows, sequences, ``TRUNCATE`` for a rebuild); read
  ``auth`` (API keys); append to ``auth.audit_log`` (each service records the changes made
  through it, in the same transaction); spend request budgets in ``auth.rate_limits``.
  Outreach alone may also blank the subject and contents of ``auth.audit_log`` rows, which is
  how an erasure anonymises the suppressions it recorded. None may write ``auth.api_keys`` or
  another service's schema.
* ``tend_keys``: what ``tend keys`` needs: write ``auth.api_keys``, append to the audit log.

A deployment logs each service in as a user that is a member of its role
(``CREATE ROLE scoring_app LOGIN PASSWORD '…' IN ROLE tend_scoring``) and keeps the owner of
the schemas (the migrating user) for ``tend migrate`` alone. Roles are cluster-wide: every
database of the cluster that is migrated grants to the same ones.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.logging import get_logger

log = get_logger(__name__)

# The group role of each service, by the schema it owns.
SERVICE_ROLES = {
    "ingest": "tend_ingest",
    "scoring": "tend_scoring",
    "outreach": "tend_outreach",
}
KEYS_ROLE = "tend_keys"
ALL_ROLES = (*SERVICE_ROLES.values(), KEYS_ROLE)

_OWN = (
    "GRANT USAGE ON SCHEMA {schema} TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {schema} TO {role}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    # Which migrations ran is the migrating user's to write.
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.alembic_version FROM {role}",
)
_AUTH = (
    "GRANT USAGE ON SCHEMA auth TO {role}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA auth TO {role}",
    "GRANT INSERT ON auth.audit_log TO {role}",
)
_BUDGETS = "GRANT SELECT, INSERT, UPDATE, DELETE ON auth.rate_limits TO {role}"
# An erasure anonymises the suppressions outreach recorded (services/outreach/store/erasure.py).
_ANONYMISE = 'GRANT UPDATE (subject, "before", "after") ON auth.audit_log TO {role}'
_KEYS = ("GRANT INSERT, UPDATE ON auth.api_keys TO {role}",)


async def grant_service_roles(conn: AsyncConnection) -> list[str]:
    """Create the roles where allowed and grant each its privileges on the schemas of the
    database ``conn`` is in; returns the roles that do not exist (nothing granted to them)."""
    may_create = await conn.scalar(
        text("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    existing = set(
        (
            await conn.execute(
                text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
                {"names": list(ALL_ROLES)},
            )
        ).scalars()
    )
    for role in ALL_ROLES:
        if role not in existing and may_create:
            # Another database of the cluster may be migrated at the same moment.
            await conn.execute(
                text(
                    f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
                    "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                )
            )
            existing.add(role)
    missing = [role for role in ALL_ROLES if role not in existing]
    schemas = set(
        (
            await conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"),
                {"names": [*SERVICE_ROLES, "auth"]},
            )
        ).scalars()
    )
    for schema, role in SERVICE_ROLES.items():
        if role in missing or schema not in schemas or "auth" not in schemas:
            continue
        statements = [*_OWN, *_AUTH, _BUDGETS]
        if schema == "outreach":
            statements.append(_ANONYMISE)
        for statement in statements:
            await conn.execute(text(statement.format(schema=schema, role=role)))
    if KEYS_ROLE not in missing and "auth" in schemas:
        for statement in (*_AUTH, *_KEYS):
            await conn.execute(text(statement.format(role=KEYS_ROLE)))
    if missing:
        log.warning(
            "database_roles_missing",
            roles=missing,
            fix="have a superuser run CREATE ROLE <name> NOLOGIN for each, or give the "
            "migrating user CREATEROLE, then run tend migrate again",
        )
    return missing
