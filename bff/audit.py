"""The audit trail: one JSON line per audited event, chained so that an edit shows.

Every event carries ``instance`` (this process), ``seq`` (1, 2, … within the instance),
``prev_hash`` (the previous event's ``hash``; 64 zeros for the first) and ``hash``, the SHA-256
of the event's canonical JSON (sorted keys, no spaces, UTF-8) without ``hash`` and ``log``. An
edited, deleted, inserted or swapped line breaks the chain; :func:`verify` finds the first one
(``bff audit verify FILE…``).

Writes are write-ahead: :meth:`AuditLog.record` returns only once the line is written (and, for
a file sink with ``fsync``, on disk). When it cannot be written it raises
:class:`AuditUnavailable`, and the write it was about is refused.

The fields are described by ``bff/audit.schema.json``. No token, cookie, session id or secret is
ever a field: the actor is named by issuer and subject only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from .context import request_facts
from .http import rfc3339

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger("bff.audit")

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "AuditEvent",
    "AuditLog",
    "AuditUnavailable",
    "Auditor",
    "ChainBreak",
    "FileSink",
    "Outcome",
    "Sink",
    "StdoutSink",
    "new_audit_id",
    "verify",
]

GENESIS_HASH = "0" * 64
USER_AGENT_MAX = 256

Outcome = Literal["attempted", "succeeded", "failed", "denied"]


class AuditUnavailable(Exception):
    """The audit event could not be written; the action it describes must not happen."""


Via = Literal["session", "bearer", "static"]


class Actor(msgspec.Struct, frozen=True):
    iss: str | None
    sub: str | None
    auth: Via | None


class Caller(Protocol):
    """Who acts, as an authenticator found them (:class:`bff.auth.Principal`)."""

    @property
    def subject(self) -> str: ...

    @property
    def via(self) -> Via: ...


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What happened, before the chain fields are stamped on it by :class:`AuditLog`."""

    event: str
    outcome: Outcome
    audit_id: str
    actor: Actor
    status: int | None = None
    reason: str | None = None
    tenant_id: str | None = None
    cluster_id: str | None = None
    flow_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    idempotency_key: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    changes: list[str] | None = None
    session_id: str | None = None


def new_audit_id() -> str:
    return "aud_" + secrets.token_hex(12)


def canonical_hash(record: dict[str, Any]) -> str:
    """SHA-256 of ``record`` as canonical JSON, without its ``hash`` and ``log`` members."""
    body = {key: value for key, value in record.items() if key not in {"hash", "log"}}
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


Observer = Callable[[str, str, str | None, bool], None]
"""Told (event, outcome, reason, written) of every event: metrics."""


class Sink(Protocol):
    def write(self, line: bytes) -> None:
        """Write one line (with its newline) durably, or raise OSError."""
        ...

    def close(self) -> None: ...


class StdoutSink:
    """One JSON object per line on standard output, marked ``"log": "audit"`` for collectors."""

    marker = "audit"

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream or sys.stdout.buffer

    def write(self, line: bytes) -> None:
        self._stream.write(line)
        self._stream.flush()

    def close(self) -> None:
        return None


class FileSink:
    """Appends to ``path``; with ``fsync`` each line is on disk before :meth:`write` returns."""

    marker = None

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None

    def write(self, line: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AuditLog:
    """Stamps events with this instance's chain fields and writes them, one at a time."""

    def __init__(
        self,
        sink: Sink,
        *,
        instance: str | None = None,
        observe: Observer | None = None,
    ) -> None:
        self._sink = sink
        self._observe = observe
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._prev_hash = GENESIS_HASH
        self._lock = asyncio.Lock()
        self._marker = getattr(sink, "marker", None)

    async def record(self, event: AuditEvent) -> None:
        """Write ``event``; raises :class:`AuditUnavailable` when the sink cannot take it."""
        async with self._lock:
            record = msgspec.to_builtins(event)
            if record.get("user_agent"):
                record["user_agent"] = record["user_agent"][:USER_AGENT_MAX]
            record.update(
                time=rfc3339(time.time()),
                instance=self.instance,
                seq=self._seq + 1,
                prev_hash=self._prev_hash,
            )
            record["hash"] = canonical_hash(record)
            if self._marker:
                record["log"] = self._marker
            line = msgspec.json.encode(record, order="sorted") + b"\n"
            try:
                # fsync blocks: off the event loop, so other requests go on meanwhile.
                await asyncio.to_thread(self._sink.write, line)
            except OSError as exc:
                if self._observe is not None:
                    self._observe(event.event, event.outcome, event.reason, False)
                raise AuditUnavailable(
                    f"cannot write the audit event: {exc.strerror or exc}"
                ) from exc
            self._seq += 1
            self._prev_hash = record["hash"]
            if self._observe is not None:
                self._observe(event.event, event.outcome, event.reason, True)

    def close(self) -> None:
        self._sink.close()


class Auditor:
    """What every audited action goes through: writes and sign-in events alike.

    An event names its actor one way (:meth:`actor`: the configured issuer and the subject, so a
    user is one actor whatever the provider's trailing slash) and the request it came with
    (:func:`bff.context.request_facts`). :meth:`record` is write-ahead and raises;
    :meth:`record_after` is for what already happened, so a failure is only logged.
    """

    def __init__(self, log: AuditLog, *, issuer: str, trusted_proxies: Sequence[str]) -> None:
        self._log = log
        self._issuer = issuer
        self._trusted_proxies = trusted_proxies

    def actor(self, principal: Caller | None) -> Actor:
        if principal is None:
            return Actor(iss=None, sub=None, auth=None)
        issuer = None if principal.via == "static" else self._issuer
        return Actor(iss=issuer, sub=principal.subject, auth=principal.via)

    def session_actor(self, sub: str | None) -> Actor:
        """The user a sign-in event is about (known by subject only, before a principal exists)."""
        return Actor(iss=self._issuer, sub=sub, auth="session")

    def event(
        self, scope: Any, event: str, outcome: Outcome, *, actor: Actor, **fields: Any
    ) -> AuditEvent:
        """An event of the request ``scope``, with a new ``audit_id``."""
        return AuditEvent(
            event=event,
            outcome=outcome,
            audit_id=new_audit_id(),
            actor=actor,
            **fields,
            **request_facts(scope, self._trusted_proxies),
        )

    async def record(self, event: AuditEvent) -> None:
        """Write-ahead: raises :class:`AuditUnavailable`, and the action must not happen."""
        await self._log.record(event)

    async def record_after(self, event: AuditEvent, what: str) -> None:
        """Record ``event`` of an action that already happened; a failure is only logged."""
        try:
            await self._log.record(event)
        except AuditUnavailable as exc:
            logger.error("cannot record %s: %s", what, exc)


@dataclass(frozen=True)
class ChainBreak:
    """The first place where a file's chain does not hold."""

    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


def _lines(paths: Iterable[str]) -> Iterator[tuple[str, int, bytes]]:
    for path in paths:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield path, number, line


def verify(paths: Iterable[str]) -> tuple[int, ChainBreak | None]:
    """Check every chain in ``paths`` (lines of several instances may interleave).

    Returns how many events held and the first break, or None when every chain is whole.
    Lines that are not audit events (other log lines on stdout) are skipped.
    """
    last: dict[str, tuple[int, str]] = {}
    checked = 0
    for path, number, line in _lines(paths):
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError:
            if line.lstrip().startswith(b"{"):
                return checked, ChainBreak(path, number, "not valid JSON")
            continue
        if not isinstance(record, dict) or "prev_hash" not in record:
            continue
        instance, seq = record.get("instance"), record.get("seq")
        if not isinstance(instance, str) or not isinstance(seq, int):
            return checked, ChainBreak(path, number, "no instance or seq")
        if canonical_hash(record) != record.get("hash"):
            return checked, ChainBreak(path, number, "edited: the hash does not match the event")
        expected_seq, expected_prev = last.get(instance, (1, GENESIS_HASH))
        if seq != expected_seq:
            problem = (
                f"missing event(s): seq {seq} follows {expected_seq - 1}"
                if seq > expected_seq
                else f"reordered or repeated: seq {seq} after {expected_seq - 1}"
            )
            return checked, ChainBreak(path, number, f"{problem} of instance {instance}")
        if record.get("prev_hash") != expected_prev:
            return checked, ChainBreak(path, number, "prev_hash does not name the event before")
        last[instance] = (seq + 1, record["hash"])
        checked += 1
    return checked, None
