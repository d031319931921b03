"""Opaque, tamper-evident pagination cursors and the ``limit`` / ``cursor`` query rules.

A cursor is ``base64url(json) "." base64url(mac)``: the JSON names the list, the tenant, the
filter and the last position served; the MAC (keyed by a secret kept in the database, so cursors
survive restarts) makes any edited or foreign cursor a 400 instead of a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from sandbox.problems import FieldError, validation_problem

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAC_BYTES = 16


class _CursorBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    k: str
    t: str
    f: str
    p: tuple[str, ...]


class CursorCodec:
    """Encodes and checks cursors for one database."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(
        self, *, kind: str, tenant_id: str, filter_key: str, position: tuple[str, ...]
    ) -> str:
        """A cursor that resumes listing ``kind`` after ``position``."""
        payload = msgspec.json.encode(_CursorBody(k=kind, t=tenant_id, f=filter_key, p=position))
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(
        self, cursor: str, *, kind: str, tenant_id: str, filter_key: str, arity: int
    ) -> tuple[str, ...]:
        """The position stored in ``cursor``; a 400 problem for anything not issued here."""
        invalid = validation_problem(
            [FieldError("cursor", "is not a valid cursor for this list", "invalid")]
        )
        encoded_payload, dot, encoded_mac = cursor.partition(".")
        if not dot or len(cursor) > 1024:
            raise invalid
        try:
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
        except (binascii.Error, ValueError) as exc:
            raise invalid from exc
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        try:
            body = msgspec.json.decode(payload, type=_CursorBody)
        except msgspec.DecodeError as exc:
            raise invalid from exc
        if (body.k, body.t, body.f) != (kind, tenant_id, filter_key) or len(body.p) != arity:
            raise invalid
        return body.p

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def parse_limit(raw: str | None) -> int:
    """The page size from the ``limit`` query parameter (1 to 100, default 20)."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3:
        raise validation_problem(
            [FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}", "invalid")]
        )
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise validation_problem(
            [FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}", "out_of_range")]
        )
    return limit


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("cursor is not ASCII")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
