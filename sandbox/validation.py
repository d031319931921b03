"""Validation of delivery-flow request bodies against the tenant's seeded catalog.

Every problem found is reported as a :class:`~sandbox.problems.FieldError` with a dotted
snake_case path (``config.retry_policy.max_attempts``); the 400 detail repeats the first one.
Capabilities the backend does not offer in V1 (multi-target fanout, GitOps, draft/publish) are
named as such rather than reported as merely unknown.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sandbox.config import SandboxSettings
from sandbox.problems import FieldError, validation_problem
from sandbox.store import FlowSpec

NAME_MAX_CHARS = 128
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 10
MAX_ATTEMPTS_RANGE = (1, 10)
BACKOFF_SECONDS_RANGE = (1, 3600)

# Controls, format characters (bidi overrides, zero-width), separators U+2028/2029, surrogates,
# private use, unassigned: not characters a name shows.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_TOP_LEVEL_FIELDS = ("name", "cluster_id", "source_id", "destination_id", "config")
_READ_ONLY_FIELDS = frozenset({"id", "tenant_id", "version", "created_at", "updated_at"})
_FANOUT_FIELDS = frozenset(
    {"destination_ids", "destinations", "targets", "target_ids", "fanout", "source_ids"}
)
_GITOPS_FIELDS = frozenset(
    {"gitops", "git", "git_repository", "git_repo", "git_ref", "git_branch", "git_path"}
)
_DRAFT_FIELDS = frozenset(
    {"draft", "is_draft", "status", "state", "published", "publish", "published_at"}
)
_FANOUT_MESSAGE = "multi-target fanout is not offered in V1; give a single destination_id"
_GITOPS_MESSAGE = "GitOps management of flows is not offered in V1"
_DRAFT_MESSAGE = "draft and published flows are not offered in V1; a saved flow is live"


class Catalog:
    """The seeded clusters, endpoints and targets, indexed for lookups by id."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.tenants = {tenant.id: tenant for tenant in settings.tenants}
        self.clusters = {cluster.id: cluster for cluster in settings.clusters}
        self.ingesters = {ingester.id: ingester for ingester in settings.ingesters}
        self.destinations = {destination.id: destination for destination in settings.destinations}

    def has_cluster(self, tenant_id: str, cluster_id: str) -> bool:
        """Whether ``cluster_id`` is a cluster of the tenant."""
        cluster = self.clusters.get(cluster_id)
        return cluster is not None and cluster.tenant_id == tenant_id


def parse_flow(body: Any, catalog: Catalog, tenant_id: str) -> FlowSpec:
    """The flow described by a create or replace body; raises a 400 problem when invalid."""
    if not isinstance(body, dict):
        raise validation_problem([FieldError("body", "must be a JSON object", "type")])
    errors: list[FieldError] = []
    _check_field_names(body, _TOP_LEVEL_FIELDS, "", errors)

    name = _string(body, "name", errors)
    if name is not None:
        if len(name) > NAME_MAX_CHARS:
            errors.append(
                FieldError("name", f"must be at most {NAME_MAX_CHARS} characters", "too_long")
            )
        elif not name.strip():
            errors.append(FieldError("name", "must not be blank", "too_short"))
        elif any(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in name):
            errors.append(
                FieldError(
                    "name",
                    "must not contain control, formatting or direction characters",
                    "invalid",
                )
            )

    cluster_id = _string(body, "cluster_id", errors)
    cluster_ok = cluster_id is not None and catalog.has_cluster(tenant_id, cluster_id)
    if cluster_id is not None and not cluster_ok:
        errors.append(FieldError("cluster_id", "cluster not found", "not_found"))

    source_id = _string(body, "source_id", errors)
    if source_id is not None and cluster_ok:
        ingester = catalog.ingesters.get(source_id)
        if ingester is None or ingester.tenant_id != tenant_id:
            errors.append(FieldError("source_id", "endpoint not found", "not_found"))
        elif ingester.cluster_id != cluster_id:
            errors.append(
                FieldError("source_id", f"endpoint not found in cluster {cluster_id}", "not_found")
            )

    destination_id = _string(body, "destination_id", errors)
    if destination_id is not None and cluster_ok:
        destination = catalog.destinations.get(destination_id)
        if destination is None or destination.tenant_id != tenant_id:
            errors.append(FieldError("destination_id", "target not found", "not_found"))
        elif destination.cluster_id != cluster_id:
            errors.append(
                FieldError(
                    "destination_id", f"target not found in cluster {cluster_id}", "not_found"
                )
            )

    max_attempts, backoff_seconds = _retry_policy(body.get("config"), errors)
    if errors:
        raise validation_problem(errors)
    assert name is not None and cluster_id is not None
    assert source_id is not None and destination_id is not None
    return FlowSpec(
        cluster_id=cluster_id,
        name=name,
        source_id=source_id,
        destination_id=destination_id,
        max_attempts=max_attempts,
        backoff_seconds=backoff_seconds,
    )


def _check_field_names(
    body: dict[str, Any], allowed: tuple[str, ...], prefix: str, errors: list[FieldError]
) -> None:
    for key in body:
        if key in allowed:
            continue
        field = prefix + key
        if key in _FANOUT_FIELDS:
            errors.append(FieldError(field, _FANOUT_MESSAGE, "not_supported"))
        elif key in _GITOPS_FIELDS:
            errors.append(FieldError(field, _GITOPS_MESSAGE, "not_supported"))
        elif key in _DRAFT_FIELDS:
            errors.append(FieldError(field, _DRAFT_MESSAGE, "not_supported"))
        elif not prefix and key in _READ_ONLY_FIELDS:
            errors.append(FieldError(field, "is read-only and set by the server", "read_only"))
        else:
            errors.append(FieldError(field, "unknown field", "unknown_field"))


def _string(body: dict[str, Any], key: str, errors: list[FieldError]) -> str | None:
    if key not in body or body[key] is None:
        errors.append(FieldError(key, "is required", "required"))
        return None
    value = body[key]
    if not isinstance(value, str):
        errors.append(FieldError(key, "must be a string", "type"))
        return None
    if not value:
        errors.append(FieldError(key, "must not be empty", "too_short"))
        return None
    return value


def _retry_policy(config: Any, errors: list[FieldError]) -> tuple[int, int]:
    max_attempts, backoff_seconds = DEFAULT_MAX_ATTEMPTS, DEFAULT_BACKOFF_SECONDS
    if config is None:
        return max_attempts, backoff_seconds
    if not isinstance(config, dict):
        errors.append(FieldError("config", "must be an object", "type"))
        return max_attempts, backoff_seconds
    _check_field_names(config, ("retry_policy",), "config.", errors)
    policy = config.get("retry_policy")
    if policy is None:
        return max_attempts, backoff_seconds
    if not isinstance(policy, dict):
        errors.append(FieldError("config.retry_policy", "must be an object", "type"))
        return max_attempts, backoff_seconds
    _check_field_names(policy, ("max_attempts", "backoff_seconds"), "config.retry_policy.", errors)
    max_attempts = _bounded_int(
        policy, "max_attempts", MAX_ATTEMPTS_RANGE, DEFAULT_MAX_ATTEMPTS, errors
    )
    backoff_seconds = _bounded_int(
        policy, "backoff_seconds", BACKOFF_SECONDS_RANGE, DEFAULT_BACKOFF_SECONDS, errors
    )
    return max_attempts, backoff_seconds


def _bounded_int(
    policy: dict[str, Any],
    key: str,
    bounds: tuple[int, int],
    default: int,
    errors: list[FieldError],
) -> int:
    value = policy.get(key)
    if value is None:
        return default
    field = f"config.retry_policy.{key}"
    low, high = bounds
    # bool is an int subclass in Python; true is not a retry count.
    if type(value) is not int:
        errors.append(FieldError(field, "must be an integer", "type"))
        return default
    if not low <= value <= high:
        errors.append(FieldError(field, f"must be between {low} and {high}", "out_of_range"))
        return default
    return value
