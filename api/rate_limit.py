"""Per-key request rates: a token bucket per PublicKey and kind of action, kept in Redis.

Generate actions and queries take from separate buckets, so a client polling its tasks
never uses up the requests it may submit, and the other way round. Each limit comes from
the key's own override in the key store, else from the settings; a rate of 0 is no limit.
The buckets live in Redis, so every gateway of a cluster takes from the same ones, and
one script refills and takes on Redis's clock, so the gateways' clocks do not matter and
two requests never take the same token.
"""

from __future__ import annotations

import math

import redis.asyncio

from api.errors import RateLimited
from openpik.keys import ApiKey, Bucket, RateLimit
from openpik.settings import Settings
from openpik.task_records import rate_limit_key


def default_limit(settings: Settings, bucket: Bucket) -> RateLimit:
    """The settings' limit of one bucket, for keys without an override."""
    per_s, burst = {
        Bucket.GENERATE: (settings.rate_limit_generate_per_s, settings.rate_limit_generate_burst),
        Bucket.QUERY: (settings.rate_limit_query_per_s, settings.rate_limit_query_burst),
    }[bucket]
    return RateLimit(per_s=per_s, burst=burst)


async def enforce(
    client: redis.asyncio.Redis, settings: Settings, key: ApiKey | None, owner: str, bucket: Bucket
) -> None:
    """Take one token of ``owner``'s ``bucket``, or raise RateLimited saying when one will be there.

    Called once per signed request, before anything is validated or queued, with the owner's
    key (its own limits). Without a limit (the default) no bucket is kept and Redis is not asked.
    """
    limit = (key.rate_limit(bucket) if key else None) or default_limit(settings, bucket)
    if limit.per_s == 0:
        return
    wait_ms = int(await client.eval(_TAKE, 1, rate_limit_key(owner, bucket), limit.per_s, limit.burst))
    if wait_ms:
        raise RateLimited(
            f"rate limit: this key may send {limit.per_s:g} {bucket} requests per second"
            f" (burst {limit.burst}); retry after {retry_after_s(wait_ms)} s"
        )


def retry_after_s(wait_ms: int) -> float:
    """The wait, rounded up to a tenth of a second, so waiting that long always finds a token."""
    return math.ceil(wait_ms / 100) / 10


# KEYS[1]: the bucket, a hash {tokens, at}; ARGV: tokens per second, burst. A missing bucket
# is full. Returns 0 when a token was taken, else the milliseconds until one will be there
# (rounded up, and a little more, so a client that waits that long finds it). A refused
# request changes nothing. The bucket expires once it would have refilled: a full bucket
# and a missing one are the same.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = burst
if saved[1] then
  tokens = math.min(burst, tonumber(saved[1]) + math.max(0, now - tonumber(saved[2])) * rate)
end
if tokens < 1 then
  return math.floor((1 - tokens) / rate * 1000) + 1
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.floor((burst - tokens) / rate * 1000) + 1)
return 0
"""
