"""Keys for tests: a session key ring, as ``bff keys`` writes one.

:data:`RING` seals and opens in-process stores; :data:`RING_FILE` is the same ring as a file, for
settings (``[sessions].encryption_keys_file`` is required with Redis); :func:`redis_sessions` is
the ``[sessions]`` table of a gateway whose sessions live in the Redis at ``url``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bff.state.sealing import load_key_ring, new_key_line

RING_FILE = Path(tempfile.mkdtemp(prefix="bff-test-keys-")) / "session.keys"
RING_FILE.write_text(new_key_line() + "\n")
RING = load_key_ring(RING_FILE)


def redis_sessions(url: str, **more: Any) -> dict[str, Any]:
    """``[sessions]`` for Redis at ``url``, sealed with :data:`RING_FILE`."""
    return {"backend": "redis", "redis_url": url, "encryption_keys_file": str(RING_FILE), **more}
