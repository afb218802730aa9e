"""Who is calling, and may they now: the signature, then the key's rate limit.

Runs on the event loop for POST / and GET /events alike: a key file is read from memory (its
cache), and the rate limit is one script on the asyncio Redis client. Only a key store in Redis
is read in a thread (its client blocks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio
from fastapi.concurrency import run_in_threadpool

from api.rate_limit import enforce
from api.signature import verify
from openpik.keys import ApiKey, Bucket, KeyStore
from openpik.settings import Settings


async def authorize(
    fields: Mapping[str, Any],
    keys: KeyStore,
    client: redis.asyncio.Redis,
    settings: Settings,
    bucket: Bucket,
    require_timestamp: bool,
) -> str:
    """The caller's PublicKey, once its signature holds and its ``bucket`` gave a token."""
    public_key = fields.get("PublicKey")
    key = await _lookup(keys, public_key) if isinstance(public_key, str) and public_key else None
    owner = verify(fields, lambda _: _private_key(key), time.time(), require_timestamp, settings.timestamp_window_s)
    await enforce(client, settings, key, owner, bucket)
    return owner


async def _lookup(keys: KeyStore, public_key: str) -> ApiKey | None:
    return keys.get(public_key) if keys.in_memory else await run_in_threadpool(keys.get, public_key)


def _private_key(key: ApiKey | None) -> str | None:
    """What the signature check needs: None for unknown and disabled keys alike."""
    return key.private_key if key is not None and key.enabled else None
