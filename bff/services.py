"""What a request handler needs: the shared services, and the per-call context built from them."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from cachetools import LRUCache
from starlette.requests import Request
from starlette.responses import Response

import upstream_client as uc

from .audit import AuditEvent, Auditor, AuditUnavailable, Outcome
from .auth import Action, Authenticator, Permissions, Principal, authorize, permissions
from .cache import SingleFlightCache
from .catalog import Catalog
from .context import note_cache
from .credentials import UpstreamCredentials
from .http import Handler
from .middleware import new_request_id
from .problems import (
    DEFAULT_RETRY_AFTER,
    ProblemError,
    authentication_required,
    problem_from_upstream,
)
from .settings import Settings
from .state.invalidation import Invalidation
from .state.rate_limit import RateLimiter
from .views import Names, flow_list_view

logger = logging.getLogger("bff.audit")
T = TypeVar("T")

PageKey = tuple[str, str, int, str]
"""(tenant, cluster, limit, cursor): one page of a cluster's flows."""
FlowKey = tuple[str, str, str]
"""(tenant, cluster, flow id): one flow."""


@dataclass(frozen=True)
class MicroCache:
    """Upstream answers to GETs, kept for ``[cache].ttl_seconds`` per tenant and cluster.

    Concurrent misses share one upstream call; a write to a cluster drops all of its entries.
    ``rendered`` keeps the encoded view of a cached page, and its entity tag, for each permission
    set it was shown with: it is used only while that very page and those very names are the
    cached ones, so a write, a reload or new names make it unreachable at once.
    """

    pages: SingleFlightCache[PageKey, uc.FlowPage]
    flows: SingleFlightCache[FlowKey, uc.Flow]
    rendered: LRUCache[tuple[PageKey, Permissions], tuple[uc.FlowPage, Names, bytes, str]]

    @classmethod
    def for_settings(cls, settings: Settings) -> MicroCache:
        ttl, maxsize = settings.cache.ttl_seconds, settings.cache.max_entries
        return cls(
            pages=SingleFlightCache(ttl=ttl, maxsize=maxsize, report=note_cache),
            flows=SingleFlightCache(ttl=ttl, maxsize=maxsize, report=note_cache),
            rendered=LRUCache(maxsize=maxsize),
        )

    def render_page(
        self, key: PageKey, page: uc.FlowPage, names: Names, permissions: Permissions
    ) -> tuple[bytes, str]:
        """The page's view as JSON and its entity tag, made once per page, names and permission
        set (:func:`page_tag`)."""
        keep = self.pages.enabled
        rendered = self.rendered.get((key, permissions)) if keep else None
        if rendered is not None and rendered[0] is page and rendered[1] is names:
            return rendered[2], rendered[3]
        view = flow_list_view(page, limit=key[2], names=names, permissions=permissions)
        body = msgspec.json.encode(view)
        etag = page_tag(body, permissions)
        if keep:
            self.rendered[key, permissions] = (page, names, body, etag)
        return body, etag

    def forget(self, tenant_id: str, cluster_id: str) -> None:
        self.pages.invalidate(lambda key: key[:2] == (tenant_id, cluster_id))
        self.flows.invalidate(lambda key: key[:2] == (tenant_id, cluster_id))


def page_tag(body: bytes, permissions: Permissions) -> str:
    """The strong entity tag of a list answer: a digest of its bytes and of what the caller may
    do, so that callers who may do different things never share a tag, even where the bytes
    agree (an empty page)."""
    digest = hashlib.blake2b(msgspec.json.encode(permissions), digest_size=16)
    digest.update(body)
    return f'"{digest.hexdigest()}"'


@dataclass(frozen=True)
class Services:
    settings: Settings
    client: uc.BackendClient
    catalog: Catalog
    responses: MicroCache
    invalidation: Invalidation
    credentials: UpstreamCredentials
    rate_limiter: RateLimiter | None
    authenticators: Sequence[Authenticator]
    audit: Auditor

    async def authenticate(self, request: Request) -> Principal:
        for authenticator in self.authenticators:
            principal = await authenticator(request)
            if principal is not None:
                return principal
        raise authentication_required()

    async def written(self, tenant_id: str, cluster_id: str) -> None:
        """A write went upstream: no instance may serve cached reads of that cluster now."""
        await self.invalidation.written(tenant_id, cluster_id)


@dataclass
class Call:
    """One authorized API call: who, for which tenant (and cluster), with which upstream token.

    The token is made when an upstream call first needs it (:attr:`token`): a call answered from
    the caches mints none.
    """

    services: Services
    principal: Principal
    tenant_id: str
    cluster_id: str
    request_id: str
    _token: uc.Credential | None = None

    @property
    def token(self) -> uc.Credential:
        """The credential for the upstream (the caller's own, or one minted for this tenant)."""
        if self._token is None:
            self._token = self.services.credentials.token_for(self.principal, self.tenant_id)
        return self._token

    @classmethod
    async def begin(cls, request: Request, action: Action) -> Call:
        """Authenticate and authorize; nothing reaches the upstream before this returns."""
        services: Services = request.app.state.services
        principal = await services.authenticate(request)
        request.state.principal = principal
        if services.rate_limiter is not None:
            retry_after = await services.rate_limiter.hit(principal.subject)
            if retry_after is not None:
                raise ProblemError(
                    429,
                    "rate-limited",
                    "Too many requests; try again shortly.",
                    headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
                )
        tenant_id = request.path_params["tid"]
        authorize(principal, tenant_id, action)
        call = cls(
            services=services,
            principal=principal,
            tenant_id=tenant_id,
            cluster_id=request.path_params.get("cid", ""),
            request_id=getattr(request.state, "request_id", None) or new_request_id(),
        )
        if services.credentials.relays_caller_token:
            # Nothing to mint; a caller without a token of their own is refused at once.
            call._token = services.credentials.token_for(principal, tenant_id)
        return call

    def permissions(self) -> Permissions:
        return permissions(self.principal, self.tenant_id)

    async def names(self) -> Names:
        return await self.services.catalog.names(
            self.tenant_id, self.cluster_id, token=lambda: self.token, request_id=self.request_id
        )

    async def written(self) -> None:
        await self.services.written(self.tenant_id, self.cluster_id)

    async def audited(
        self,
        request: Request,
        event: str,
        forward: Callable[[], Awaitable[T]],
        *,
        flow_id: str | None = None,
        idempotency_key: str | None = None,
        status: int = 200,
        changes: list[str] | None = None,
        flow_id_of: Callable[[T], str] | None = None,
    ) -> T:
        """Run ``forward`` (the upstream write) between an ``attempted`` and an outcome event.

        The attempted event is written first; if it cannot be, nothing is forwarded and the
        caller gets 503 ``audit-unavailable``. The outcome (``succeeded`` with ``status``, or
        ``failed`` with the problem the caller sees) follows with the same ``audit_id``.
        """
        audit = self.services.audit
        request.state.audited = True
        base = audit.event(
            request.scope,
            event,
            "attempted",
            actor=audit.actor(self.principal),
            tenant_id=self.tenant_id,
            cluster_id=self.cluster_id or None,
            flow_id=flow_id,
            idempotency_key=idempotency_key,
            changes=changes,
        )
        try:
            await audit.record(base)
        except AuditUnavailable as exc:
            logger.error("write refused, audit trail unavailable: %s", exc)
            raise ProblemError(
                503,
                "audit-unavailable",
                "Changes are paused because they cannot be recorded; try again shortly.",
                headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
            ) from None
        try:
            result = await forward()
        except (uc.UpstreamError, ProblemError) as exc:
            problem = exc if isinstance(exc, ProblemError) else problem_from_upstream(exc)
            await self._outcome(base, "failed", problem.status, problem.slug, flow_id)
            raise
        done_id = flow_id_of(result) if flow_id_of is not None else flow_id
        await self._outcome(base, "succeeded", status, None, done_id)
        return result

    async def _outcome(
        self,
        base: AuditEvent,
        outcome: Outcome,
        status: int,
        reason: str | None,
        flow_id: str | None,
    ) -> None:
        event = msgspec.structs.replace(
            base, outcome=outcome, status=status, reason=reason, flow_id=flow_id
        )
        # The write already happened: if this fails, its attempted event stands alone.
        await self.services.audit.record_after(event, f"the outcome of audit {base.audit_id}")

    async def require_cluster(self) -> None:
        await self.services.catalog.require_cluster(
            self.tenant_id, self.cluster_id, token=lambda: self.token, request_id=self.request_id
        )


def audited_write(event: str) -> Callable[[Handler], Handler]:
    """Wrap a write handler so that a refusal before its upstream call is audited ``denied``.

    Refusals are the problems raised before :meth:`Call.audited` (CSRF or origin, rate limit,
    tenant, scope, validation, an unknown cluster or flow). A 401 is not audited: nobody was
    authenticated to name.
    """

    def wrap(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ProblemError as problem:
                if problem.status != 401 and not getattr(request.state, "audited", False):
                    await _record_denied(request, event, problem)
                raise

        return endpoint

    return wrap


async def _record_denied(request: Request, event: str, problem: ProblemError) -> None:
    audit: Auditor = request.app.state.services.audit
    params = request.path_params
    denied = audit.event(
        request.scope,
        event,
        "denied",
        actor=audit.actor(getattr(request.state, "principal", None)),
        status=problem.status,
        reason=problem.slug,
        tenant_id=params.get("tid"),
        cluster_id=params.get("cid"),
        flow_id=params.get("fid"),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    # The write is refused anyway; the refusal itself may fail to be recorded.
    await audit.record_after(denied, "a denied write")
