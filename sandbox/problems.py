"""RFC 9457 problem details: the one shape of every error the sandbox returns.

Handlers raise :class:`Problem`; the application turns it into ``application/problem+json``
in one place, with ``instance`` set to the request id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from starlette.responses import Response

PROBLEM_TYPE_BASE = "https://api.zen-mesh.io/errors/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

TITLES = {
    "validation-error": "Validation Error",
    "authentication-required": "Authentication Required",
    "tenant-forbidden": "Tenant Forbidden",
    "insufficient-scope": "Insufficient Scope",
    "not-found": "Not Found",
    "method-not-allowed": "Method Not Allowed",
    "conflict": "Conflict",
    "precondition-failed": "Precondition Failed",
    "payload-too-large": "Payload Too Large",
    "unsupported-media-type": "Unsupported Media Type",
    "idempotency-key-reused": "Idempotency Key Reused",
    "internal-error": "Internal Server Error",
    "service-unavailable": "Service Unavailable",
}
REALM = "zen-sandbox"


class FieldError(msgspec.Struct, frozen=True):
    """One invalid input: a dotted snake_case ``field``, a human ``message`` and a ``code``."""

    field: str
    message: str
    code: str


class Problem(Exception):
    """An error response; ``slug`` selects the ``type`` URI and the title."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str) -> dict[str, Any]:
        """The problem document for the request whose id is ``instance``."""
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": TITLES.get(self.slug, "Error"),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        document.update(self.extra)
        if self.errors is not None:
            document["errors"] = [msgspec.to_builtins(error) for error in self.errors]
        return document

    def response(self, instance: str) -> Response:
        """Render this problem as an HTTP response."""
        return Response(
            msgspec.json.encode(self.body(instance)),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def validation_problem(errors: list[FieldError]) -> Problem:
    """A 400 ``validation-error`` whose detail repeats the first field error."""
    first = errors[0]
    return Problem(400, "validation-error", f"{first.field}: {first.message}", errors=errors)


def authentication_required(
    detail: str, *, invalid_token: bool = False, dpop_algs: Sequence[str] = ()
) -> Problem:
    """A 401 with the ``WWW-Authenticate`` challenge clients need to react to.

    With ``dpop_algs`` a ``DPoP`` challenge follows the ``Bearer`` one, as a resource that takes
    both schemes answers (RFC 9449 7.2): the error, if any, stays with ``Bearer``.
    """
    challenge = f'Bearer realm="{REALM}"'
    if invalid_token:
        challenge += ', error="invalid_token"'
    if dpop_algs:
        challenge += f', DPoP realm="{REALM}", algs="{" ".join(dpop_algs)}"'
    return Problem(401, "authentication-required", detail, headers={"WWW-Authenticate": challenge})


def dpop_refused(
    detail: str, *, error: str, dpop_algs: Sequence[str], nonce: str | None = None
) -> Problem:
    """A 401 with a ``DPoP`` challenge (RFC 9449 7.1): ``error`` is ``invalid_token``,
    ``invalid_dpop_proof`` or ``use_dpop_nonce``, and ``nonce`` goes out as ``DPoP-Nonce``.

    ``detail`` doubles as the ``error_description``, so it is fixed text without quotes.
    """
    challenge = (
        f'DPoP realm="{REALM}", error="{error}", error_description="{detail}", '
        f'algs="{" ".join(dpop_algs)}"'
    )
    headers = {"WWW-Authenticate": challenge}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    return Problem(401, "authentication-required", detail, headers=headers)


def not_found(detail: str = "The requested resource does not exist.") -> Problem:
    """A 404 ``not-found``."""
    return Problem(404, "not-found", detail)
