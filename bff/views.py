"""UI view models and the reshape between them and the backend's models.

This is the one place where the backend's snake_case meets the dashboard's camelCase: upstream
``Flow`` → :class:`FlowView` on the way out, UI write bodies → ``FlowCreate``/``FlowUpdate`` on the
way in (with the cluster stamped from the path), and backend field names in error messages →
the names the UI's form fields use.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

import upstream_client as uc

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_MAX = 128
MAX_ATTEMPTS_RANGE = (1, 10)
BACKOFF_SECONDS_RANGE = (1, 3600)
DEFAULT_RETRY_POLICY = uc.RetryPolicy()

UpstreamBody = TypeVar("UpstreamBody", uc.FlowCreate, uc.FlowUpdate)


class Permissions(msgspec.Struct, frozen=True):
    """What a principal may do in one tenant."""

    read: bool
    write: bool


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


class FlowWrite(msgspec.Struct, frozen=True):
    """A validated write body from the UI."""

    name: str
    source_id: str
    destination_id: str
    max_attempts: int
    backoff_seconds: int


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


# --- reading the UI's write body ---------------------------------------------------------------

_WRITE_FIELDS = {"name", "sourceId", "destinationId", "retryPolicy"}
_RETRY_FIELDS = {"maxAttempts", "backoffSeconds"}
_NOT_IN_V1 = {
    "destinationIds": "Multi-target fanout is not offered in V1.",
    "targets": "Multi-target fanout is not offered in V1.",
    "draft": "Draft and published flows are not offered in V1.",
    "status": "Draft and published flows are not offered in V1.",
    "gitops": "GitOps for flows is not offered in V1.",
}


class BodyErrors(Exception):
    """The write body has field errors: a list of ``(field, message, code)``."""

    def __init__(self, errors: list[tuple[str, str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def parse_flow_write(data: Any) -> FlowWrite:
    """Validate a decoded JSON write body, collecting every field error at once."""
    if not isinstance(data, dict):
        raise BodyErrors([("", "The body must be a JSON object.", "type")])
    errors: list[tuple[str, str, str]] = []
    for key in data:
        if key in _NOT_IN_V1:
            errors.append((key, _NOT_IN_V1[key], "not_supported"))
        elif key not in _WRITE_FIELDS:
            errors.append((key, "Unknown field.", "unknown_field"))

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(("name", "Enter a name.", "required" if name is None else "invalid"))
    elif len(name) > NAME_MAX:
        errors.append(("name", f"Use at most {NAME_MAX} characters.", "too_long"))
    elif has_invisible_characters(name):
        errors.append(
            (
                "name",
                "Use visible characters only: no control, formatting or direction marks.",
                "invalid_character",
            )
        )
    source_id = _id_field(data, "sourceId", "Choose a source.", errors)
    destination_id = _id_field(data, "destinationId", "Choose a destination.", errors)

    policy = data.get("retryPolicy", {})
    max_attempts, backoff = DEFAULT_RETRY_POLICY.max_attempts, DEFAULT_RETRY_POLICY.backoff_seconds
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        errors.append(("retryPolicy", "Must be an object.", "type"))
    else:
        errors.extend(
            (f"retryPolicy.{key}", "Unknown field.", "unknown_field")
            for key in policy
            if key not in _RETRY_FIELDS
        )
        max_attempts = _int_field(policy, "maxAttempts", MAX_ATTEMPTS_RANGE, max_attempts, errors)
        backoff = _int_field(policy, "backoffSeconds", BACKOFF_SECONDS_RANGE, backoff, errors)
    if errors:
        raise BodyErrors(errors)
    assert isinstance(name, str) and source_id and destination_id
    return FlowWrite(
        name=name.strip(),
        source_id=source_id,
        destination_id=destination_id,
        max_attempts=max_attempts,
        backoff_seconds=backoff,
    )


def _id_field(
    data: dict[str, Any], key: str, missing: str, errors: list[tuple[str, str, str]]
) -> str | None:
    value = data.get(key)
    if value is None:
        errors.append((key, missing, "required"))
    elif not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        errors.append((key, "Not a valid id.", "invalid"))
    else:
        return value
    return None


def _int_field(
    data: dict[str, Any],
    key: str,
    bounds: tuple[int, int],
    default: int,
    errors: list[tuple[str, str, str]],
) -> int:
    value = data.get(key, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append((f"retryPolicy.{key}", "Must be a whole number.", "type"))
    elif not low <= value <= high:
        errors.append((f"retryPolicy.{key}", f"Must be between {low} and {high}.", "out_of_range"))
    else:
        return value
    return default


# --- backend names in the UI's words -----------------------------------------------------------

_SNAKE_PATH = re.compile(
    r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?:\.[a-z][a-z0-9_]*)*\b|\bconfig\.[a-z_.]+"
)


def _camel(segment: str) -> str:
    head, *rest = segment.split("_")
    return head + "".join(part.title() for part in rest)


def ui_field(path: str) -> str:
    """``config.retry_policy.max_attempts`` → ``retryPolicy.maxAttempts``."""
    parts = path.split(".")
    if parts[0] == "config":
        parts = parts[1:] or ["retry_policy"]
    return ".".join(_camel(part) for part in parts)


# Ids such as ``plane_dev_us_east_1`` are snake_case too: only the backend's field names are
# rewritten, so that an id quoted in a message still names the real thing.
_BACKEND_FIELDS = frozenset(
    name
    for model in (uc.Flow, uc.FlowCreate, uc.FlowConfig, uc.RetryPolicy)
    for name in model.__struct_fields__
)


def _ui_words(match: re.Match[str]) -> str:
    words = match.group(0)
    path = words.rstrip(".")
    if not all(part in _BACKEND_FIELDS for part in path.split(".")):
        return words
    return ui_field(path) + words[len(path) :]


def ui_text(text: str) -> str:
    """Rewrite backend field names inside a message, e.g. ``source_id: endpoint not found``."""
    return _SNAKE_PATH.sub(_ui_words, text)


# Control characters (C0, C1), format characters (bidi overrides and isolates, zero-width
# spaces and joiners, the byte-order mark…), line and paragraph separators, surrogates, private
# use and unassigned code points: none of them belongs in a name a person reads.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def has_invisible_characters(text: str) -> bool:
    """Whether ``text`` holds a character that is not shown, or that changes how others show."""
    return any(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)
