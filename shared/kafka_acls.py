"""The Kafka ACLs each service needs, and applying them (``tend topics --acls``).

Least privilege on the broker: a service reads and writes only the topics its work touches,
and consumes only in its own group. Ingest cannot read profiles off the changes topic, scoring
cannot forge the events ingest vouches for, and nobody but outreach writes actions. The
table (:func:`service_acls`) is the one the README shows.

Every ACL is on a literal name (this deployment's prefixed topics, the services' groups), so
two deployments sharing a cluster never grant each other anything. aiokafka has no ACL call on
its admin client; its protocol module has the CreateAcls request, sent here to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.kafka_security import start_admin
from shared.settings import CommonSettings
from shared.topics import Topics


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    DESCRIBE = 8


_LITERAL = 3
_ALLOW = 3
_ANY_HOST = "*"

SERVICES = ("ingest", "scoring", "outreach")
DEFAULT_PRINCIPALS: dict[str, str] = {s: f"User:tend-{s}" for s in SERVICES}


@dataclass(frozen=True, slots=True)
class Acl:
    """An ALLOW rule: ``principal`` may do ``operation`` on the named resource."""

    principal: str
    resource: ResourceType
    name: str
    operation: Operation

    def describe(self) -> str:
        return f"{self.principal}  {self.resource.name.lower()}:{self.name}  {self.operation.name}"


def service_acls(
    settings: CommonSettings,
    groups: Mapping[str, str],
    principals: Mapping[str, str] = DEFAULT_PRINCIPALS,
) -> list[Acl]:
    """Every ACL the services need, for this deployment's topics. ``groups`` names the
    consumer group of scoring and outreach; ``principals`` the Kafka principal each service
    authenticates as (``User:<SASL user name>``).

    READ and WRITE imply DESCRIBE, and WRITE on a topic allows the idempotent producer
    (KIP-679), so no cluster-wide grant is needed."""
    t = Topics.from_settings(settings)
    R, W = Operation.READ, Operation.WRITE
    wanted: dict[str, list[tuple[ResourceType, str, Operation]]] = {
        # Publishes events; erasing a customer reads the DLQ and writes tombstones to it.
        "ingest": [
            (ResourceType.TOPIC, t.events, W),
            (ResourceType.TOPIC, t.dlq, R),
            (ResourceType.TOPIC, t.dlq, W),
        ],
        # Consumes events (and rebuilds from them), publishes changes, dead-letters, and
        # shows the DLQ's tail to operators.
        "scoring": [
            (ResourceType.TOPIC, t.events, R),
            (ResourceType.GROUP, groups["scoring"], R),
            (ResourceType.TOPIC, t.changes, W),
            (ResourceType.TOPIC, t.dlq, R),
            (ResourceType.TOPIC, t.dlq, W),
        ],
        # Consumes changes (and backtests over them), publishes actions and the events it
        # learns (a customer's own unsubscribe), dead-letters, and shows the DLQ's tail.
        "outreach": [
            (ResourceType.TOPIC, t.changes, R),
            (ResourceType.GROUP, groups["outreach"], R),
            (ResourceType.TOPIC, t.actions, W),
            (ResourceType.TOPIC, t.events, W),
            (ResourceType.TOPIC, t.dlq, R),
            (ResourceType.TOPIC, t.dlq, W),
        ],
    }
    return [
        Acl(principals[service], resource, name, op)
        for service, grants in wanted.items()
        for resource, name, op in grants
    ]


async def apply_acls(settings: CommonSettings, acls: Sequence[Acl]) -> None:
    """Create ``acls`` on the cluster (creating one that exists changes nothing). The client
    of ``settings`` must be allowed to (a super user, or ALTER on the cluster)."""
    admin = await start_admin(settings)
    try:
        for acl in acls:
            request = CreateAclsRequest(
                resource_type=acl.resource,
                resource_name=acl.name,
                resource_pattern_type_filter=_LITERAL,
                principal=acl.principal,
                host=_ANY_HOST,
                operation=acl.operation,
                permission_type=_ALLOW,
            )
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise RuntimeError(
                        f"the broker refused the ACL {acl.describe()}: "
                        f"{for_code(code).__name__}: {message}"
                    )
    finally:
        await admin.close()
