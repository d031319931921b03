"""Nothing readable at rest: what the stores keep in Redis is sealed with AES-256-GCM.

A key ring is a text file, one key a line: ``<id> <base64 of 32 random bytes>``, ids random
(:func:`new_key_line`). The first line seals; every line opens, so a new key is put on top (``bff
keys rotate``) and the old ones stay until what they sealed has expired. For several instances,
``bff keys rotate --stage`` first puts the new key second (every instance learns to open it),
then ``bff keys rotate --promote`` moves it to the top. A sealed record is
``<id length><id><12-byte nonce><ciphertext and tag>``; its associated data is the Redis key it
is stored under, so a record copied under another key does not open.

Errors: :func:`load_key_ring` raises :class:`KeyRingError` (a ``ValueError``) naming the file
and the line; :meth:`KeyRing.open` raises :class:`Unsealable` for a record it cannot open (a key
no longer in the ring, a record tampered with or moved): the stores treat that record as gone.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger("bff.sealing")

KEY_BYTES = 32
_NONCE_BYTES = 12
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class KeyRingError(ValueError):
    """The key ring file cannot be used; the message names the file and what is wrong."""


class Unsealable(Exception):
    """A sealed record that no key of the ring opens.

    ``unknown_key``: it names a key this ring does not hold (another instance's newer ring may:
    leave the record be); otherwise it is not a sealed record, or not authentic under its key and
    Redis key (moved, altered, or from an incompatible release).
    """

    def __init__(self, reason: str, *, unknown_key: bool = False) -> None:
        super().__init__(reason)
        self.unknown_key = unknown_key


def new_key_line() -> str:
    """A fresh key as a ring line: a random id and 32 random bytes."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    return f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def write_private(path: Path, content: bytes) -> None:
    """A new file readable by its owner only; never over an existing one (``FileExistsError``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)


def write_new_ring(path: Path) -> None:
    """A new ring of one key at ``path``, readable by its owner only; never over a file."""
    write_private(path, (new_key_line() + "\n").encode())


def rotate_ring(path: Path, *, stage: bool = False) -> str:
    """A new key in the ring at ``path``: at the top, sealing from the next start; or, with
    ``stage``, second, opening only (for a fleet: every instance must hold a key before any
    seals with it; :func:`promote_staged` then moves it up). Returns the new key's id."""
    load_key_ring(path)  # a ring that does not load is not rewritten
    line = new_key_line()
    lines = [each for each in path.read_text().splitlines() if each.strip()]
    lines.insert(1 if stage else 0, line)
    _rewrite(path, lines)
    return line.split()[0]


def promote_staged(path: Path) -> str:
    """The ring's second key moves to the top: it seals from the next start. Returns its id."""
    ring = load_key_ring(path)
    if len(ring.ids) < 2:
        raise KeyRingError(f"{path}: no second key to promote; stage one first")
    lines = [each for each in path.read_text().splitlines() if each.strip()]
    keys = [each for each in lines if not each.lstrip().startswith("#")]
    keys[0], keys[1] = keys[1], keys[0]
    _rewrite(path, keys)
    return ring.ids[1]


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace the ring at ``path`` at once (readers see the old file or the new one)."""
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(each + "\n" for each in lines))
    os.replace(temporary, path)


class KeyRing:
    """Keys by id; the first one seals."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        self.ids = [key_id for key_id, _ in keys]
        self._sealing_id = keys[0][0].encode()
        self._sealing = AESGCM(keys[0][1])
        self._opening = {key_id.encode(): AESGCM(key) for key_id, key in keys}
        self._unknown_logged: set[bytes] = set()

    def __repr__(self) -> str:  # the keys must never reach a log line
        return f"KeyRing(ids={self.ids!r})"

    def seal(self, plaintext: bytes, where: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        key_id = self._sealing_id
        sealed = self._sealing.encrypt(nonce, plaintext, where)
        return bytes((len(key_id),)) + key_id + nonce + sealed

    def open(self, record: bytes, where: bytes) -> bytes:
        """The plaintext of ``record`` stored under ``where``; :class:`Unsealable` if none."""
        end = 1 + record[0] if record else 0
        if not record or len(record) < end + _NONCE_BYTES + 16:
            raise Unsealable("not a sealed record")
        key_id, body = record[1:end], record[end:]
        nonce, sealed = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
        aead = self._opening.get(key_id)
        if aead is None:
            if key_id not in self._unknown_logged:  # logged once per key, not per request
                self._unknown_logged.add(key_id)
                logger.warning(
                    "a record in Redis is sealed with key %r, which is not in the key ring: "
                    "its session is treated as ended",
                    key_id.decode(errors="replace"),
                )
            raise Unsealable("sealed with a key not in the ring", unknown_key=True)
        try:
            return aead.decrypt(nonce, sealed, where)
        except InvalidTag:
            raise Unsealable("not authentic under its key and Redis key") from None


def load_key_ring(path: str | os.PathLike[str]) -> KeyRing:
    """The ring in ``path``; :class:`KeyRingError` naming the file and line if it is unusable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyRingError(f"cannot read key ring {path}: {exc.strerror}") from exc
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not 1 <= len(parts[0]) <= 64 or not parts[0].isascii():
            raise KeyRingError(f"{path}:{number}: expected '<id> <base64 of 32 bytes>'")
        try:
            key = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise KeyRingError(f"{path}:{number}: the key is not base64") from None
        if len(key) != KEY_BYTES:
            raise KeyRingError(f"{path}:{number}: the key is {len(key)} bytes, not {KEY_BYTES}")
        if any(key_id == parts[0] for key_id, _ in keys):
            raise KeyRingError(f"{path}:{number}: key id {parts[0]!r} appears twice")
        keys.append((parts[0], key))
    if not keys:
        raise KeyRingError(f"key ring {path} holds no key; make one with: bff keys --config FILE")
    return KeyRing(keys)
