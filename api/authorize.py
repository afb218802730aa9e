"""Who is calling, and may they now: the signature, then the key's rate limit.

Both read the key store and Redis, so callers run this in one threadpool hop per request
(POST / and GET /events alike), not one hop each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis

from api.rate_limit import enforce
from api.signature import verify
from openpik.keys import Bucket, KeyStore
from openpik.settings import Settings


def authorize(
    fields: Mapping[str, Any],
    keys: KeyStore,
    client: redis.Redis,
    settings: Settings,
    bucket: Bucket,
    require_timestamp: bool,
) -> str:
    """The caller's PublicKey, once its signature holds and its ``bucket`` gave a token (blocking I/O)."""
    owner = verify(fields, keys.private_key, time.time(), require_timestamp, settings.timestamp_window_s)
    enforce(client, settings, keys, owner, bucket)
    return owner
