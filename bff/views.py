"""UI view models and the reshape between them and the backend's models.

Upstream ``Flow`` → :class:`FlowView` on the way out; a validated UI write
(:class:`bff.inputs.FlowWrite`) → ``FlowCreate``/``FlowUpdate`` on the way in, with the cluster
stamped from the path. Where the backend's snake_case meets the dashboard's camelCase in data,
it is here; in error messages, in :mod:`bff.problems`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

import msgspec

import upstream_client as uc

from .auth import Permissions
from .inputs import DEFAULT_RETRY_POLICY, FlowWrite

UpstreamBody = TypeVar("UpstreamBody", uc.FlowCreate, uc.FlowUpdate)


class _View(msgspec.Struct, rename="camel", omit_defaults=False):
    pass


class NamedRef(_View):
    id: str
    name: str | None


class RetryPolicyView(_View):
    max_attempts: int
    backoff_seconds: int


class FlowPermissions(_View):
    update: bool
    delete: bool


# A flow's permissions follow from the caller's in the tenant: two values, made once.
_FLOW_PERMISSIONS = {
    writer: FlowPermissions(update=writer, delete=writer) for writer in (False, True)
}


class FlowView(_View):
    id: str
    name: str
    cluster_id: str
    source: NamedRef
    destination: NamedRef
    retry_policy: RetryPolicyView
    created_at: datetime
    updated_at: datetime
    permissions: FlowPermissions


class PageView(_View):
    limit: int
    next_cursor: str | None
    has_more: bool


class FlowListView(_View):
    items: list[FlowView]
    page: PageView


class ClusterView(_View):
    id: str
    name: str
    region: str
    status: str


class ClusterListView(_View):
    items: list[ClusterView]


class OptionDefaults(_View):
    retry_policy: RetryPolicyView


class CallerPermissions(_View):
    read: bool
    create: bool
    update: bool
    delete: bool


class FlowOptionsView(_View):
    cluster_id: str
    sources: list[NamedRef]
    destinations: list[NamedRef]
    defaults: OptionDefaults
    permissions: CallerPermissions


class Names(msgspec.Struct, frozen=True):
    """Display names of a cluster's sources and destinations; ``None`` when the lookup failed."""

    sources: Mapping[str, str] | None
    destinations: Mapping[str, str] | None


UNKNOWN_NAMES = Names(sources=None, destinations=None)


def _retry_view(policy: uc.RetryPolicy) -> RetryPolicyView:
    return RetryPolicyView(max_attempts=policy.max_attempts, backoff_seconds=policy.backoff_seconds)


def flow_view(flow: uc.Flow, names: Names, permissions: Permissions) -> FlowView:
    sources = names.sources or {}
    destinations = names.destinations or {}
    return FlowView(
        id=flow.id,
        name=flow.name,
        cluster_id=flow.cluster_id,
        source=NamedRef(id=flow.source_id, name=sources.get(flow.source_id)),
        destination=NamedRef(id=flow.destination_id, name=destinations.get(flow.destination_id)),
        retry_policy=_retry_view(flow.config.retry_policy),
        created_at=flow.created_at,
        updated_at=flow.updated_at,
        permissions=_FLOW_PERMISSIONS[permissions.write],
    )


def flow_list_view(
    page: uc.FlowPage, *, limit: int, names: Names, permissions: Permissions
) -> FlowListView:
    return FlowListView(
        items=[flow_view(flow, names, permissions) for flow in page.delivery_flows],
        page=PageView(limit=limit, next_cursor=page.next_cursor, has_more=bool(page.next_cursor)),
    )


def cluster_list_view(clusters: list[uc.Cluster]) -> ClusterListView:
    return ClusterListView(
        items=[
            ClusterView(id=c.id, name=c.name, region=c.region, status=c.status) for c in clusters
        ]
    )


def options_view(
    cluster_id: str,
    ingesters: list[uc.Ingester],
    destinations: list[uc.Destination],
    permissions: Permissions,
) -> FlowOptionsView:
    return FlowOptionsView(
        cluster_id=cluster_id,
        sources=[NamedRef(id=i.id, name=i.name) for i in ingesters],
        destinations=[NamedRef(id=d.id, name=d.name) for d in destinations],
        defaults=OptionDefaults(retry_policy=_retry_view(DEFAULT_RETRY_POLICY)),
        permissions=CallerPermissions(
            read=permissions.read,
            create=permissions.write,
            update=permissions.write,
            delete=permissions.write,
        ),
    )


def upstream_body(write: FlowWrite, cluster_id: str, model: type[UpstreamBody]) -> UpstreamBody:
    """The backend's body for a create (``FlowCreate``) or a full replacement (``FlowUpdate``)."""
    return model(
        name=write.name,
        cluster_id=cluster_id,
        source_id=write.source_id,
        destination_id=write.destination_id,
        config=uc.FlowConfig(
            retry_policy=uc.RetryPolicy(
                max_attempts=write.max_attempts, backoff_seconds=write.backoff_seconds
            )
        ),
    )


def changed_fields(current: uc.Flow, write: FlowWrite) -> list[str]:
    """The UI names of the fields ``write`` changes on ``current`` (for the audit trail)."""
    policy = current.config.retry_policy
    before = {
        "name": current.name,
        "sourceId": current.source_id,
        "destinationId": current.destination_id,
        "retryPolicy.maxAttempts": policy.max_attempts,
        "retryPolicy.backoffSeconds": policy.backoff_seconds,
    }
    after = {
        "name": write.name,
        "sourceId": write.source_id,
        "destinationId": write.destination_id,
        "retryPolicy.maxAttempts": write.max_attempts,
        "retryPolicy.backoffSeconds": write.backoff_seconds,
    }
    return [field for field, value in after.items() if before[field] != value]
