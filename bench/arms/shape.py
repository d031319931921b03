"""What every arm shares: the route it answers and the reshape of one upstream flow."""

from __future__ import annotations

from typing import Any

FLOWS_ROUTE = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"


def reshape(flow: dict[str, Any]) -> dict[str, Any]:
    """One upstream flow (snake_case) as the UI's view of it (camelCase)."""
    retry = flow["config"]["retry_policy"]
    return {
        "id": flow["id"],
        "name": flow["name"],
        "source": {"id": flow["source_id"]},
        "destination": {"id": flow["destination_id"]},
        "retryPolicy": {
            "maxAttempts": retry["max_attempts"],
            "backoffSeconds": retry["backoff_seconds"],
        },
        "createdAt": flow["created_at"],
        "updatedAt": flow["updated_at"],
    }
