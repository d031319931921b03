"""Persistent state of the sandbox: delivery flows and idempotency records, in SQLite.

The database runs in WAL mode. Every method is one transaction; writes start with
``BEGIN IMMEDIATE`` so that two processes sharing one database file serialise their writes, and
an in-process lock keeps threads of one process from interleaving on the shared connection.
Methods are synchronous; the application calls them from worker threads.

Exceptions::

    StoreError
    ├── FlowNotFound          the flow does not exist in the tenant
    ├── NameTaken             another flow of the tenant and cluster has this name
    ├── VersionMismatch       the If-Match condition does not hold
    ├── IdempotencyInFlight   the first request with this key has not finished
    └── IdempotencyKeyReused  the key was used for a different request
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

# A claim older than this is treated as abandoned (its process died before finishing).
IN_FLIGHT_STALE_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_flows (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    name TEXT NOT NULL,
    source_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    max_attempts INTEGER NOT NULL,
    backoff_seconds INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, cluster_id, name)
);
CREATE INDEX IF NOT EXISTS delivery_flows_by_tenant
    ON delivery_flows (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS delivery_flows_by_cluster
    ON delivery_flows (tenant_id, cluster_id, created_at, id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    body BLOB,
    headers TEXT,
    created_at REAL NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
"""

_FLOW_COLUMNS = (
    "id, tenant_id, cluster_id, name, source_id, destination_id, max_attempts, "
    "backoff_seconds, version, created_at, updated_at"
)


class StoreError(Exception):
    """Base of the errors the store reports to its caller."""


class FlowNotFound(StoreError):
    """The flow does not exist in the tenant."""


class NameTaken(StoreError):
    """Another flow of the same tenant and cluster already has this name."""


class VersionMismatch(StoreError):
    """The flow's current version does not satisfy the caller's precondition."""


class IdempotencyInFlight(StoreError):
    """The first request with this idempotency key is still being processed."""


class IdempotencyKeyReused(StoreError):
    """The idempotency key was first used for a different request."""


class FlowSpec(msgspec.Struct, frozen=True):
    """The writable fields of a flow, already validated."""

    cluster_id: str
    name: str
    source_id: str
    destination_id: str
    max_attempts: int
    backoff_seconds: int


class FlowRecord(msgspec.Struct, frozen=True):
    """A stored flow."""

    id: str
    tenant_id: str
    cluster_id: str
    name: str
    source_id: str
    destination_id: str
    max_attempts: int
    backoff_seconds: int
    version: int
    created_at: str
    updated_at: str


class StoredResponse(msgspec.Struct, frozen=True):
    """The first response given to an idempotent request, replayed to its retries."""

    status: int
    body: bytes
    headers: dict[str, str]


class Claimed(msgspec.Struct, frozen=True):
    """The caller holds the idempotency key and must complete or release it."""


class Completion:
    """A claimed idempotency key, completed in the same transaction as the write it guards.

    A write and the record of its response commit together or not at all: a process that dies in
    between leaves either nothing (the claim goes stale and a retry runs the write) or both (a
    retry replays the response), never a write whose retry would run it again.
    """

    def __init__(
        self, tenant_id: str, key: str, render: Callable[[FlowRecord | None], StoredResponse]
    ) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.render = render
        self.done = False

    def complete_in(self, db: sqlite3.Connection, record: FlowRecord | None) -> None:
        _complete_key(db, self.tenant_id, self.key, self.render(record))
        self.done = True


VersionCheck = Callable[[int], bool]


class Store:
    """SQLite-backed storage for one sandbox (``path`` may be ``":memory:"``)."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._cursor_secret = self._init_schema()

    def _init_schema(self) -> bytes:
        with self._lock:
            # executescript commits on its own; the statements are idempotent.
            self._db.executescript(_SCHEMA)
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('cursor_secret', ?)",
                (secrets.token_hex(32),),
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
        return bytes.fromhex(row[0])

    @property
    def cursor_secret(self) -> bytes:
        """A per-database secret that authenticates pagination cursors across restarts."""
        return self._cursor_secret

    def close(self) -> None:
        """Close the database connection; further calls fail."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # -- flows -----------------------------------------------------------------------------

    def list_flows(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[FlowRecord]:
        """Flows of the tenant, newest first: (created_at, id) descending, starting after
        ``after``, the last position of the previous page.

        Returns at most ``limit`` records. The order is total (ids are unique), so a page never
        repeats or skips a flow; flows created while a client pages land before its first page.
        """
        clauses = ["tenant_id = ?"]
        params: list[object] = [tenant_id]
        if cluster_id is not None:
            clauses.append("cluster_id = ?")
            params.append(cluster_id)
        if after is not None:
            clauses.append("(created_at, id) < (?, ?)")
            params.extend(after)
        params.append(limit)
        query = (
            f"SELECT {_FLOW_COLUMNS} FROM delivery_flows WHERE {' AND '.join(clauses)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        with self._read() as db:
            rows = db.execute(query, params).fetchall()
        return [FlowRecord(*row) for row in rows]

    def get_flow(self, tenant_id: str, flow_id: str) -> FlowRecord:
        """The flow ``flow_id`` of the tenant; raises :class:`FlowNotFound`."""
        with self._read() as db:
            return _fetch(db, tenant_id, flow_id)

    def create_flow(
        self,
        tenant_id: str,
        flow_id: str,
        spec: FlowSpec,
        now: str,
        *,
        completion: Completion | None = None,
    ) -> FlowRecord:
        """Insert a new flow at version 1; raises :class:`NameTaken`. ``completion`` (of the
        request's idempotency key) commits with it."""
        record = FlowRecord(
            id=flow_id,
            tenant_id=tenant_id,
            cluster_id=spec.cluster_id,
            name=spec.name,
            source_id=spec.source_id,
            destination_id=spec.destination_id,
            max_attempts=spec.max_attempts,
            backoff_seconds=spec.backoff_seconds,
            version=1,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._write() as db:
                db.execute(
                    f"INSERT INTO delivery_flows ({_FLOW_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    msgspec.structs.astuple(record),
                )
                if completion is not None:
                    completion.complete_in(db, record)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(spec.name) from exc
        return record

    def replace_flow(
        self,
        tenant_id: str,
        flow_id: str,
        spec: FlowSpec,
        now: str,
        *,
        check: VersionCheck | None,
        before_write: Callable[[FlowRecord], None] | None = None,
        completion: Completion | None = None,
    ) -> FlowRecord:
        """Replace the writable fields of a flow and bump its version.

        ``check`` receives the current version and may refuse the write
        (:class:`VersionMismatch`); ``before_write`` sees the current record and may raise to
        abort. Raises :class:`FlowNotFound` or :class:`NameTaken` too.
        """
        try:
            with self._write() as db:
                current = _fetch(db, tenant_id, flow_id)
                if check is not None and not check(current.version):
                    raise VersionMismatch(flow_id)
                if before_write is not None:
                    before_write(current)
                updated = msgspec.structs.replace(
                    current,
                    name=spec.name,
                    source_id=spec.source_id,
                    destination_id=spec.destination_id,
                    max_attempts=spec.max_attempts,
                    backoff_seconds=spec.backoff_seconds,
                    version=current.version + 1,
                    updated_at=now,
                )
                db.execute(
                    "UPDATE delivery_flows SET name = ?, source_id = ?, destination_id = ?, "
                    "max_attempts = ?, backoff_seconds = ?, version = ?, updated_at = ? "
                    "WHERE tenant_id = ? AND id = ?",
                    (
                        updated.name,
                        updated.source_id,
                        updated.destination_id,
                        updated.max_attempts,
                        updated.backoff_seconds,
                        updated.version,
                        updated.updated_at,
                        tenant_id,
                        flow_id,
                    ),
                )
                if completion is not None:
                    completion.complete_in(db, updated)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(spec.name) from exc
        return updated

    def delete_flow(
        self,
        tenant_id: str,
        flow_id: str,
        *,
        check: VersionCheck | None,
        completion: Completion | None = None,
    ) -> None:
        """Delete a flow; raises :class:`FlowNotFound` or :class:`VersionMismatch`."""
        with self._write() as db:
            current = _fetch(db, tenant_id, flow_id)
            if check is not None and not check(current.version):
                raise VersionMismatch(flow_id)
            db.execute(
                "DELETE FROM delivery_flows WHERE tenant_id = ? AND id = ?", (tenant_id, flow_id)
            )
            if completion is not None:
                completion.complete_in(db, None)

    # -- idempotency -----------------------------------------------------------------------

    def claim_idempotency_key(
        self, tenant_id: str, key: str, fingerprint: str, *, now: float, ttl: float
    ) -> Claimed | StoredResponse:
        """Reserve ``key`` for a request, or return the response of its first use.

        Raises :class:`IdempotencyKeyReused` when the key belongs to a different request and
        :class:`IdempotencyInFlight` while the first request is still running.
        """
        with self._write() as db:
            db.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (now - ttl,))
            row = db.execute(
                "SELECT fingerprint, completed, status, body, headers, claimed_at "
                "FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
                (tenant_id, key),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, created_at, "
                    "claimed_at) VALUES (?, ?, ?, ?, ?)",
                    (tenant_id, key, fingerprint, now, now),
                )
                return Claimed()
            stored_fingerprint, completed, status, body, headers, claimed_at = row
            if stored_fingerprint != fingerprint:
                raise IdempotencyKeyReused(key)
            if completed:
                return StoredResponse(
                    status=status,
                    body=bytes(body),
                    headers=msgspec.json.decode(headers, type=dict[str, str]),
                )
            if now - claimed_at < IN_FLIGHT_STALE_SECONDS:
                raise IdempotencyInFlight(key)
            db.execute(
                "UPDATE idempotency_keys SET claimed_at = ? WHERE tenant_id = ? AND key = ?",
                (now, tenant_id, key),
            )
            return Claimed()

    def complete_idempotency_key(self, tenant_id: str, key: str, response: StoredResponse) -> None:
        """Record the response of a claimed key whose request wrote nothing (a refusal), so
        that retries replay it. Writes complete their key themselves (:class:`Completion`)."""
        with self._write() as db:
            _complete_key(db, tenant_id, key, response)

    def release_idempotency_key(self, tenant_id: str, key: str) -> None:
        """Forget a claimed key whose request failed, so that a retry runs again."""
        with self._write() as db:
            db.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND completed = 0",
                (tenant_id, key),
            )


def _complete_key(
    db: sqlite3.Connection, tenant_id: str, key: str, response: StoredResponse
) -> None:
    db.execute(
        "UPDATE idempotency_keys SET completed = 1, status = ?, body = ?, headers = ? "
        "WHERE tenant_id = ? AND key = ?",
        (
            response.status,
            response.body,
            msgspec.json.encode(response.headers).decode(),
            tenant_id,
            key,
        ),
    )


def _fetch(db: sqlite3.Connection, tenant_id: str, flow_id: str) -> FlowRecord:
    row = db.execute(
        f"SELECT {_FLOW_COLUMNS} FROM delivery_flows WHERE tenant_id = ? AND id = ?",
        (tenant_id, flow_id),
    ).fetchone()
    if row is None:
        raise FlowNotFound(flow_id)
    return FlowRecord(*row)
