"""Models of the backend contract: snake_case msgspec Structs.

Models we receive ignore fields they do not know, so the upstream can grow. Models we send
(``FlowCreate``, ``FlowUpdate``) refuse unknown fields when decoded and encode only what they
declare.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class RetryPolicy(msgspec.Struct):
    """How the platform retries a delivery of a flow."""

    max_attempts: int = 3
    backoff_seconds: int = 10


class FlowConfig(msgspec.Struct):
    """Delivery settings of a flow."""

    retry_policy: RetryPolicy = msgspec.field(default_factory=RetryPolicy)


class Flow(msgspec.Struct):
    """A delivery flow: an endpoint (``source_id``, ``ing_…``) linked to a target
    (``destination_id``, ``dest_…``).

    ``etag`` is the upstream ``ETag`` header verbatim when the flow came alone; for a flow of a
    list it is derived from ``version`` in the same form (``'"3"'``). Send it back as
    ``if_match`` to update or delete only the version you read.
    """

    id: str
    tenant_id: str
    cluster_id: str
    name: str
    source_id: str
    destination_id: str
    config: FlowConfig
    version: int
    created_at: datetime
    updated_at: datetime
    etag: str | None = None

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = f'"{self.version}"'


class FlowCreate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Body of a flow creation. Without ``config`` the upstream applies its defaults."""

    name: str
    cluster_id: str
    source_id: str
    destination_id: str
    config: FlowConfig | None = None


class FlowUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Body of a flow update: a full replacement of the flow's fields."""

    name: str
    cluster_id: str
    source_id: str
    destination_id: str
    config: FlowConfig | None = None


class FlowPage(msgspec.Struct):
    """One page of flows; ``next_cursor`` is ``None`` on the last page."""

    delivery_flows: list[Flow]
    next_cursor: str | None = None


class Cluster(msgspec.Struct):
    """A data plane of the tenant."""

    id: str
    name: str
    region: str
    status: str


class Ingester(msgspec.Struct):
    """An endpoint (source receiver), ids ``ing_…``."""

    id: str
    name: str
    type: str
    cluster_id: str


class Destination(msgspec.Struct):
    """A target (delivery destination), ids ``dest_…``."""

    id: str
    name: str
    url: str
    cluster_id: str


class ProblemFieldError(msgspec.Struct):
    """One invalid field of a request; ``field`` is a dotted snake_case path."""

    field: str
    message: str
    code: str | None = None


class Problem(msgspec.Struct):
    """An RFC 9457 problem document returned by the upstream."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str | None = None
    instance: str | None = None
    required_scope: str | None = None
    errors: list[ProblemFieldError] | None = None


class ClusterPage(msgspec.Struct):
    clusters: list[Cluster]
    next_cursor: str | None = None


class IngesterPage(msgspec.Struct):
    ingesters: list[Ingester]
    next_cursor: str | None = None


class DestinationPage(msgspec.Struct):
    destinations: list[Destination]
    next_cursor: str | None = None
