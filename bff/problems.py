"""RFC 9457 problem+json: the only shape an error takes on its way to the browser.

Two translations live here and nowhere else: :class:`ProblemError` raised by our own code,
and ``upstream_client`` exceptions (:func:`problem_from_upstream`). Upstream problems are
reshaped, never passed through: only their user-facing ``detail`` and field errors survive, with
field names in the UI's camelCase.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

import msgspec
from starlette.responses import Response

import upstream_client as uc

TYPE_BASE = "https://api.zen-mesh.io/errors/"
MEDIA_TYPE = "application/problem+json"
DEFAULT_RETRY_AFTER = 5
REALM = "flows-bff"

logger = logging.getLogger("bff.problems")

TITLES: dict[str, str] = {
    "validation-error": "Validation Error",
    "authentication-required": "Authentication Required",
    "session-expired": "Session Expired",
    "insufficient-scope": "Insufficient Scope",
    "tenant-forbidden": "Tenant Forbidden",
    "csrf-check-failed": "CSRF Check Failed",
    "not-found": "Not Found",
    "method-not-allowed": "Method Not Allowed",
    "not-acceptable": "Not Acceptable",
    "payload-too-large": "Payload Too Large",
    "headers-too-large": "Request Header Fields Too Large",
    "unsupported-media-type": "Unsupported Media Type",
    "login-failed": "Sign-in Failed",
    "conflict": "Conflict",
    "precondition-failed": "Precondition Failed",
    "idempotency-key-reused": "Idempotency Key Reused",
    "rate-limited": "Rate Limited",
    "internal-error": "Internal Server Error",
    "audit-unavailable": "Audit Unavailable",
    "service-unavailable": "Service Unavailable",
    "bad-gateway": "Bad Gateway",
    "upstream-unavailable": "Upstream Unavailable",
    "upstream-timeout": "Upstream Timeout",
}


class FieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    message: str
    code: str | None = None


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    trace_id: str | None = msgspec.field(default=None, name="traceId")
    required_scope: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """An error the client should see as problem+json with ``status`` and type ``slug``."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        required_scope: str | None = None,
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.required_scope = required_scope
        self.errors = list(errors) if errors else None

    def response(self, request_id: str | None, trace_id: str | None = None) -> Response:
        """The problem+json answer; ``instance`` is the request id, ``traceId`` the W3C trace."""
        problem = Problem(
            type=TYPE_BASE + self.slug,
            title=TITLES[self.slug],
            status=self.status,
            detail=self.detail,
            instance=request_id,
            trace_id=trace_id,
            required_scope=self.required_scope,
            errors=self.errors,
        )
        return Response(
            msgspec.json.encode(problem),
            status_code=self.status,
            headers=self.headers,
            media_type=MEDIA_TYPE,
        )


def challenge(error: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401: our realm, and an RFC 6750 error code if any."""
    value = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}


def authentication_required(
    detail: str = "Sign in to continue.", *, error: str | None = None
) -> ProblemError:
    return ProblemError(401, "authentication-required", detail, headers=challenge(error))


def session_expired(detail: str, *, clear_cookie: str | None = None) -> ProblemError:
    """401 ``session-expired``; ``clear_cookie`` names a session cookie the browser must drop."""
    headers = challenge("invalid_token")
    if clear_cookie:
        # A __Host- cookie is only ever set, or deleted, by a Set-Cookie that says Secure.
        secure = "; Secure" if clear_cookie.startswith("__Host-") else ""
        headers["Set-Cookie"] = (
            f"{clear_cookie}=; Max-Age=0; Path=/; HttpOnly; SameSite=strict{secure}"
        )
    return ProblemError(401, "session-expired", detail, headers=headers)


def signin_unavailable() -> ProblemError:
    """503: the identity provider cannot be reached, so no sign-in can be made or checked."""
    return ProblemError(
        503,
        "upstream-unavailable",
        "Sign-in is temporarily unavailable.",
        headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
    )


def validation_error(errors: Sequence[FieldError], detail: str | None = None) -> ProblemError:
    first = errors[0]
    return ProblemError(
        400, "validation-error", detail or f"{first.field}: {first.message}", errors=errors
    )


def not_found(detail: str = "The resource does not exist.") -> ProblemError:
    return ProblemError(404, "not-found", detail)


def problem_from_upstream(exc: uc.UpstreamError) -> ProblemError:
    """Translate an ``upstream_client`` exception into what the browser may see.

    A 401 is the gateway's fault whichever credential it sent (see
    :class:`bff.credentials.UpstreamCredentials`): signing in again would not help the user.
    """
    if isinstance(exc, uc.AuthenticationError):
        return ProblemError(
            502,
            "bad-gateway",
            "The backend does not accept the credentials this gateway sends: a configuration "
            "error, reported to the operators. Signing in again will not help.",
        )
    if isinstance(exc, uc.APITimeoutError):
        return ProblemError(504, "upstream-timeout", "The backend did not answer in time.")
    if isinstance(exc, uc.APIConnectionError):
        return ProblemError(
            503,
            "upstream-unavailable",
            "The backend cannot be reached right now.",
            headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
        )
    if isinstance(exc, uc.ResponseValidationError):
        logger.error("upstream answered outside the contract: %s", exc)
        return ProblemError(502, "bad-gateway", "The backend sent a response we cannot read.")
    if not isinstance(exc, uc.APIStatusError):
        return ProblemError(502, "bad-gateway", "The backend call failed.")
    return _from_status(exc)


def _from_status(exc: uc.APIStatusError) -> ProblemError:
    problem = exc.problem
    detail = ui_text(problem.detail) if problem and problem.detail else None
    match exc:
        case uc.BadRequestError():
            errors = [
                FieldError(ui_field(e.field), ui_text(e.message), e.code)
                for e in (problem.errors if problem and problem.errors else [])
            ]
            return ProblemError(
                400, "validation-error", detail or "The request is invalid.", errors=errors
            )
        case uc.PermissionDeniedError() if exc.required_scope:
            return ProblemError(
                403,
                "insufficient-scope",
                f"This action needs the {exc.required_scope} scope.",
                required_scope=exc.required_scope,
            )
        case uc.PermissionDeniedError():
            return ProblemError(403, "tenant-forbidden", "You have no access to this tenant.")
        case uc.NotFoundError():
            return not_found()
        case uc.ConflictError():
            return ProblemError(409, "conflict", detail or "The request conflicts with the data.")
        case uc.PreconditionFailedError():
            return ProblemError(
                412,
                "precondition-failed",
                "The flow was changed by someone else; reload it and try again.",
            )
        case uc.UnprocessableEntityError():
            return ProblemError(
                422,
                "idempotency-key-reused",
                detail or "This Idempotency-Key was already used for a different request.",
            )
        case uc.RateLimitError():
            return ProblemError(
                429,
                "rate-limited",
                "Too many requests to the backend; try again shortly.",
                headers={"Retry-After": _retry_after(exc.retry_after)},
            )
    if exc.status_code == 503:
        return ProblemError(
            503,
            "upstream-unavailable",
            "The backend is temporarily unavailable.",
            headers={"Retry-After": _retry_after(exc.retry_after)},
        )
    if exc.status_code == 504:
        return ProblemError(504, "upstream-timeout", "The backend did not answer in time.")
    # Other statuses are not in the contract: the browser can do nothing about them.
    logger.error(
        "upstream answered %s (request %s): %s",
        exc.status_code,
        exc.request_id,
        problem.detail if problem else "",
    )
    return ProblemError(502, "bad-gateway", "The backend refused the request.")


def _retry_after(seconds: float | None) -> str:
    return str(DEFAULT_RETRY_AFTER if seconds is None else max(1, math.ceil(seconds)))


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
