"""Structured logging: one JSON object per line, with context bound per request or batch.

Log events name what happened and carry ids (event id, topic, partition, offset), never
personal data: no names, emails, phone numbers, birthdays, complaint text or free-text
attributes. Call sites are written that way; :func:`redact` is the safety net behind them,
run on every line (ours and the libraries'):

- a value logged under a personal key (``email=...``, ``name=...``) is replaced, however
  deeply nested;
- in every string (messages, exception text and tracebacks) email addresses, the offending
  input pydantic quotes in its errors (``input_value=...``), the parameters SQLAlchemy
  appends to a failed statement and the key values PostgreSQL names in a constraint
  violation are replaced.

uvicorn's loggers are routed through the same handler, and an access line (off by default)
names the path without its query string, which may carry a search for an email or a name;
aiokafka's DEBUG line for each record sent names its size, not its value.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# Keys whose value is personal data whatever it holds. Ids (customer_id, event_id...) are
# pseudonymous and stay: operators need them to follow an event through the pipeline.
PERSONAL_KEYS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "email",
        "phone",
        "birthday",
        "address",
        "text",
        "attributes",
        "profile",
        "payload",
        "subject",
        "body",
        "recipient",
        "recipients",
        "q",
        "input",
        "input_value",
    }
)

_EMAIL = re.compile(r"[^\s@\"'<>(),;:\[\]]+@[^\s@\"'<>(),;:\[\]]+\.[A-Za-z]{2,}")
# pydantic: "... [type=string_pattern_mismatch, input_value='ada@x', input_type=str]"
_PYDANTIC_INPUT = re.compile(r"input_value=.*?, input_type=")
# SQLAlchemy: "[SQL: INSERT ...]\n[parameters: ('Ada', 'ada@x')]"; one line, repr'd values.
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
# PostgreSQL: "DETAIL:  Key (email)=(ada@x) already exists."
_KEY_DETAIL = re.compile(r"Key \(([^)]*)\)=\(.*?\)( already exists| is not present|\.|$)", re.M)


def scrub(text: str) -> str:
    """``text`` without the personal data a library may have quoted in it."""
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if "input_value=" in text:
        text = _PYDANTIC_INPUT.sub(f"input_value={REDACTED}, input_type=", text)
    if "[parameters:" in text:
        text = _SQL_PARAMETERS.sub(f"[parameters: {REDACTED}]", text)
    if "Key (" in text:
        text = _KEY_DETAIL.sub(rf"Key (\1)=({REDACTED})\2", text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if k in PERSONAL_KEYS else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    """A structlog processor: the event with its personal data replaced (see the module's
    docstring). Runs last before rendering, after tracebacks became text."""
    for key, value in event_dict.items():
        if key in PERSONAL_KEYS:
            event_dict[key] = REDACTED
        elif value is not None and not isinstance(value, int | float | bool):
            event_dict[key] = _clean(value)
    return event_dict


class _AccessPathOnly(logging.Filter):
    """uvicorn's access line without the query string (``?q=ada@example.com``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


class _RecordSizeOnly(logging.Filter):
    """aiokafka's DEBUG line for every record sent quotes the whole value (a profile, a card);
    the size is all an operator needs there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and "value=" in str(record.msg):
            value = args[1]
            size = f"<{len(value)} bytes>" if isinstance(value, bytes | str) else repr(value)
            record.args = (args[0], size, args[2])
        return True


_ACCESS_FILTER = _AccessPathOnly()
_KAFKA_FILTER = _RecordSizeOnly()


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route structlog and the standard library (uvicorn, aiokafka, alembic) to stderr."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn gives its loggers handlers of their own (plain text, not redacted); theirs go
    # through ours instead, like every other library's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if _ACCESS_FILTER not in access.filters:
        access.addFilter(_ACCESS_FILTER)
    access.setLevel(logging.WARNING)
    producer = logging.getLogger("aiokafka.producer.producer")
    if _KAFKA_FILTER not in producer.filters:
        producer.addFilter(_KAFKA_FILTER)
    # aiokafka logs every reconnect attempt at ERROR while a broker is down; one line per
    # failure reaches us through our own handling instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
