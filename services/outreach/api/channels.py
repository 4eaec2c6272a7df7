"""The channels API: where outreach sends (webhook endpoints, SMTP servers).

A webhook channel's signing secret is write-only: it is generated when not given and shown
once, in the create answer; no read ever returns it. A webhook URL is checked when it is
saved (and again, on the addresses it resolves to, at every send).

Every change is written to the audit log in the transaction that makes it (the request's
own), as the read API shows the channel: with `has_secret`, never the secret.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.api.deps import Outreach
from services.outreach.core import netguard
from services.outreach.core.channels import HTTP_KINDS, EmailConfig, SmsConfig, WebhookConfig
from services.outreach.schemas import ChannelCreated, ChannelIn, ChannelOut, ChannelUpdate
from services.outreach.shell.channels import webhook as webhook_channel
from services.outreach.shell.resolve import resolve
from services.outreach.shell.service import OutreachState
from shared import audit
from shared.auth import MarketingWriter, Principal, Reader
from shared.errors import ERROR_RESPONSES, ErrorBody, beyond_schema, responses
from shared.service_state import Transaction

router = APIRouter(prefix="/v1", tags=["channels"])

ChannelId = Annotated[str, Path(description="the channel's id", max_length=64)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such channel"},
}
# What a channel's checks judge beyond its schema.
_GUARDED = {
    "config.url": "http(s) without credentials (https in production), not resolving to a "
    "loopback, private, link-local or metadata address unless private webhooks are allowed",
    "config.smtp_host": "allowed by the network guard",
    "config.smtp_port": "allowed by the network guard",
}
CREATE_CHECKS = beyond_schema(_GUARDED)
UPDATE_CHECKS = beyond_schema(
    {
        **_GUARDED,
        "config": "the config of the channel's kind",
        "secret": "only a webhook channel has one",
    }
)
OPERATOR_DISABLED = "disabled by an operator"


_COLUMNS = "id, kind, config, enabled, disabled_reason, secret IS NOT NULL AS has_secret, "
_COLUMNS += "created_at, updated_at"


@router.post(
    "/channels",
    status_code=201,
    response_model=ChannelCreated,
    responses=responses(
        {409: {"model": ErrorBody, "description": "the id is taken"}}, CREATE_CHECKS
    ),
    summary="Add a channel",
)
async def create_channel(
    outreach: Outreach, body: ChannelIn, principal: MarketingWriter, conn: Transaction
) -> ChannelCreated:
    """Add a webhook endpoint, an SMS provider's API or an SMTP server. A webhook's or an
    SMS provider's URL must be http(s) (https in production), carry no credentials, and not
    point at loopback, private, link-local or metadata addresses (unless private targets are
    allowed); one without a `secret` gets a generated one, returned here once and never
    again. An SMTP server is held to the
    same address rules, and its port must be one of `TEND_OUTREACH_SMTP_PORTS` (25, 465, 587
    and 2525 by default); both are checked again at every send, on the resolved address."""
    config = await _valid_config(outreach, body.kind, body.config)
    generated = None
    secret = _valid_secret(body.kind, body.secret)
    if body.kind in HTTP_KINDS and secret is None:
        secret = generated = webhook_channel.generate_secret()
    now = datetime.now(UTC)
    try:
        row = (
            await conn.execute(
                text(
                    "INSERT INTO outreach.channels (id, kind, config, secret, enabled, "
                    "disabled_reason, created_at, updated_at) VALUES (:id, :kind, "
                    "CAST(:config AS jsonb), :secret, :enabled, :reason, :now, :now) "
                    f"RETURNING {_COLUMNS}"
                ),
                {
                    "id": body.id,
                    "kind": body.kind,
                    "config": _json(config),
                    "secret": secret,
                    "enabled": body.enabled,
                    "reason": None if body.enabled else OPERATOR_DISABLED,
                    "now": now,
                },
            )
        ).one()
        out = ChannelOut(**row._asdict())
        await _audit(conn, principal, "channel.created", body.id, None, out)
    except IntegrityError:  # the request's transaction rolls back as the 409 leaves
        raise HTTPException(409, f"a channel with id {body.id!r} exists") from None
    return ChannelCreated(**out.model_dump(), secret=generated)


@router.get(
    "/channels", response_model=list[ChannelOut], responses=ERROR_RESPONSES, summary="List channels"
)
async def list_channels(_: Reader, conn: Transaction) -> list[ChannelOut]:
    """Every channel, newest first within each kind (the newest enabled one of a kind is
    the one actions go to). Secrets are never shown."""
    rows = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM outreach.channels ORDER BY kind, created_at DESC")
        )
    ).all()
    return [ChannelOut(**r._asdict()) for r in rows]


@router.get(
    "/channels/{channel_id}", response_model=ChannelOut, responses=NOT_FOUND, summary="One channel"
)
async def get_channel(channel_id: ChannelId, _: Reader, conn: Transaction) -> ChannelOut:
    """The channel's kind, config and state (a webhook disabled after its endpoint answered
    410 says so in `disabled_reason`). The secret is never shown."""
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM outreach.channels WHERE id = :id"),
            {"id": channel_id},
        )
    ).first()
    if row is None:
        raise HTTPException(404, f"no channel with id {channel_id!r}")
    return ChannelOut(**row._asdict())


@router.put(
    "/channels/{channel_id}",
    response_model=ChannelOut,
    responses=responses(NOT_FOUND, UPDATE_CHECKS),
    summary="Replace a channel's settings",
)
async def update_channel(
    outreach: Outreach,
    channel_id: ChannelId,
    body: ChannelUpdate,
    principal: MarketingWriter,
    conn: Transaction,
) -> ChannelOut:
    """Replace the config and the enabled flag, and the secret when one is given (the kind
    stays). Enabling a channel clears its `disabled_reason`."""
    kind = await conn.scalar(
        text("SELECT kind FROM outreach.channels WHERE id = :id"), {"id": channel_id}
    )
    if kind is None:
        raise HTTPException(404, f"no channel with id {channel_id!r}")
    config = await _valid_config(outreach, kind, body.config)
    secret = _valid_secret(kind, body.secret)
    found = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM outreach.channels WHERE id = :id FOR UPDATE"),
            {"id": channel_id},
        )
    ).first()
    if found is None:  # deleted since it was read above
        raise HTTPException(404, f"no channel with id {channel_id!r}")
    row = (
        await conn.execute(
            text(
                "UPDATE outreach.channels SET config = CAST(:config AS jsonb), "
                "secret = coalesce(:secret, secret), enabled = :enabled, "
                "disabled_reason = CASE WHEN :enabled THEN NULL "
                "ELSE coalesce(disabled_reason, :reason) END, updated_at = :now "
                f"WHERE id = :id RETURNING {_COLUMNS}"
            ),
            {
                "id": channel_id,
                "config": _json(config),
                "secret": secret,
                "enabled": body.enabled,
                "reason": OPERATOR_DISABLED,
                "now": datetime.now(UTC),
            },
        )
    ).one()
    out = ChannelOut(**row._asdict())
    await _audit(
        conn,
        principal,
        "channel.updated",
        channel_id,
        ChannelOut(**found._asdict()),
        out,
        secret_rotated=secret is not None,
    )
    return out


@router.delete(
    "/channels/{channel_id}",
    status_code=204,
    response_class=Response,
    responses=NOT_FOUND,
    summary="Remove a channel",
)
async def delete_channel(
    channel_id: ChannelId, principal: MarketingWriter, conn: Transaction
) -> Response:
    """Remove the channel. Pending actions then go to the next newest enabled channel of
    their kind (webhook actions wait when there is none)."""
    row = (
        await conn.execute(
            text(f"DELETE FROM outreach.channels WHERE id = :id RETURNING {_COLUMNS}"),
            {"id": channel_id},
        )
    ).first()
    if row is None:
        raise HTTPException(404, f"no channel with id {channel_id!r}")
    await _audit(conn, principal, "channel.deleted", channel_id, ChannelOut(**row._asdict()), None)
    return Response(status_code=204)


async def _audit(
    conn: AsyncConnection,
    principal: Principal,
    action: str,
    channel_id: str,
    before: ChannelOut | None,
    after: ChannelOut | None,
    *,
    secret_rotated: bool = False,
) -> None:
    # The channel as the read API shows it: `has_secret`, never the secret. A rotation
    # leaves `has_secret` as it was, so it is said outright.
    shown = after.model_dump(mode="json") if after is not None else None
    if shown is not None and secret_rotated:
        shown["secret_rotated"] = True
    await audit.record(
        conn,
        actor=audit.Actor.of(principal),
        service="outreach",
        action=action,
        subject=channel_id,
        before=before,
        after=shown,
    )


async def _valid_config(
    outreach: OutreachState, kind: str, config: dict[str, Any]
) -> dict[str, Any]:
    """The config normalised for storage, or a 422 naming each bad ``config.*`` field."""
    models: dict[str, type[WebhookConfig | SmsConfig | EmailConfig]] = {
        "webhook": WebhookConfig,
        "sms": SmsConfig,
        "email": EmailConfig,
    }
    model = models[kind]
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("config", *e["loc"])} for e in exc.errors()]
        ) from None
    if isinstance(parsed, WebhookConfig | SmsConfig):
        errors = await _url_errors(outreach, parsed.url)
        if errors:
            raise RequestValidationError(
                [
                    {"loc": ("config", "url"), "msg": f"the URL {e}", "type": "value_error"}
                    for e in errors
                ]
            )
    elif isinstance(parsed, EmailConfig) and (
        parsed.smtp_host is not None or parsed.smtp_port is not None
    ):
        smtp_errors = await _smtp_errors(outreach, parsed)
        if smtp_errors:
            raise RequestValidationError(
                [
                    {"loc": ("config", field), "msg": message, "type": "value_error"}
                    for field, message in smtp_errors
                ]
            )
    return parsed.model_dump(by_alias=True, exclude_none=True)


async def _smtp_errors(outreach: OutreachState, config: EmailConfig) -> list[tuple[str, str]]:
    """Why the SMTP server an email channel names may not be used, field by field: the
    same guard as a webhook's (checked again on the resolved addresses at every send), and a
    port in the allowlist. Whichever half the channel leaves out comes from the settings."""
    settings = outreach.settings
    allow_private = settings.allow_private_webhooks
    host = config.smtp_host or settings.smtp_host
    port = config.smtp_port or settings.smtp_port
    host_field = "smtp_host" if config.smtp_host is not None else "smtp_port"
    port_field = "smtp_port" if config.smtp_port is not None else "smtp_host"
    port_note = "" if config.smtp_port is not None else " (the settings' port: name smtp_port)"
    host_note = "" if config.smtp_host is not None else " (the settings' host: name smtp_host)"
    errors = [(port_field, e + port_note) for e in netguard.port_errors(port, settings.smtp_ports)]
    refused = netguard.host_errors(host, allow_private=allow_private)
    if not refused:
        # A name that resolves into our network now is refused now; one that does not
        # resolve yet may be set up later, and every send checks again.
        try:
            async with asyncio.timeout(settings.webhook_timeout_seconds):
                found = await resolve(host, port, allow_private=allow_private)
            refused = found.errors if found.resolved else []
        except TimeoutError:
            refused = []
    errors += [(host_field, f"the SMTP host {e}{host_note}") for e in refused]
    return errors


async def _url_errors(outreach: OutreachState, url: str) -> list[str]:
    allow_private = outreach.settings.allow_private_webhooks
    errors = netguard.check_url(
        url,
        allow_private=allow_private,
        require_https=outreach.common.environment == "production",
    )
    if errors:
        return errors
    # A name that resolves into our network now is refused now; one that does not resolve
    # yet may be set up later, and every send checks again.
    host, port = _host_port(url)
    try:
        async with asyncio.timeout(outreach.settings.webhook_timeout_seconds):
            found = await resolve(host, port, allow_private=allow_private)
    except TimeoutError:
        return []
    return found.errors if found.resolved else []


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _valid_secret(kind: str, secret: str | None) -> str | None:
    if secret is None:
        return None
    if kind not in HTTP_KINDS:
        raise RequestValidationError(
            [
                {
                    "loc": ("secret",),
                    "msg": "only webhook and sms channels have a signing secret",
                    "type": "value_error",
                }
            ]
        )
    try:
        webhook_channel.secret_key(secret)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": ("secret",), "msg": f"the secret {exc}", "type": "value_error"}]
        ) from None
    return secret


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()
