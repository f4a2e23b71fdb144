"""A webhook's channel credentials, cached per API process for a few seconds.

Verifying a webhook needs the channel's settings and its decrypted secret (Twilio's auth token,
Slack's signing secret, ...): two queries and a decryption. Under load that is half of an
acknowledgement's time, so each API process keeps them for `TTL_S` seconds:

- a request that verifies with the cached credentials needs no database read;
- a request that does NOT verify with them is checked again against the database (and the
  cache refreshed), so a rotated secret works at once and a forged request is refused on what
  is stored, never on what is cached;
- a configuration change through this process drops its entry at once (api/routes/channels.py);
  other API processes see it within TTL_S (so an old secret can still verify for up to TTL_S
  after it was replaced).

The cache lives in process memory only (the decrypted values never reach a log, a response or
the database).

A tenant that does not exist, or has not configured the channel, has credentials too: UNKNOWN,
whose every value is a random secret of this process that nobody can sign a request with
(`or_unknown`). The webhook then runs exactly the checks it runs for a configured channel (body
limit, then the signature) and refuses the request exactly as it refuses a forged one: same
status, same message. So the webhooks do not tell which tenants exist or which channels they use
(a 404, a different message, or a 403 instead of a 413 would). UNKNOWN is never cached: the
tenant in a forged request's path is the sender's choice (any string up to the request line's
size), so caching it let anyone fill the cache with junk entries of their making and push real
tenants' credentials out; a forged request for a configured channel is decided on a fresh load
all the same, so both are answered alike.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from channels.errors import NotConfigured
from db.channels import channel_credentials
from db.errors import NotFound

log = logging.getLogger("flywheel.channels")

TTL_S = 5.0
MAX_ENTRIES = 10_000

Creds = tuple[dict, dict[str, str]]


class CredentialCache:
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Creds]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant_id: str, channel: str) -> Creds | None:
        with self._lock:
            entry = self._entries.get((tenant_id, channel))
            if entry is None:
                return None
            if self.clock() - entry[0] > self.ttl_s:
                del self._entries[(tenant_id, channel)]
                return None
            self._entries.move_to_end((tenant_id, channel))
            return entry[1]

    def put(self, tenant_id: str, channel: str, creds: Creds) -> None:
        with self._lock:
            self._entries[(tenant_id, channel)] = (self.clock(), creds)
            self._entries.move_to_end((tenant_id, channel))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def drop(self, tenant_id: str, channel: str | None = None) -> None:
        """Forget a tenant's channel (or all of its channels)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == tenant_id and channel in (None, k[1])]:
                del self._entries[key]

    async def verified(self, tenant_id: str, channel: str, load: Callable[[], Awaitable[Creds]],
                       check: Callable[[Creds], None]) -> Creds:
        """The credentials `check` accepts (it raises when the request does not verify): the
        cached ones when they verify, else freshly loaded ones (which must verify)."""
        cached = self.get(tenant_id, channel)
        if cached is not None:
            try:
                check(cached)
                return cached
            except Exception:
                pass  # perhaps rotated: decide on what is stored
        fresh = await load()
        if fresh is not UNKNOWN:
            self.put(tenant_id, channel, fresh)
        check(fresh)
        return fresh


class _Unmatchable(dict):
    """Secrets of nobody: every name reads as the same random value of this process."""

    def get(self, key: str, default: Any = None) -> str:
        return _NOBODY

    def __getitem__(self, key: str) -> str:
        return _NOBODY

    def __contains__(self, key: object) -> bool:
        return True


_NOBODY = secrets.token_urlsafe(32)
UNKNOWN: Creds = ({}, _Unmatchable())


def or_unknown(load: Callable[[], Awaitable[Creds]]) -> Callable[[], Awaitable[Creds]]:
    """`load`, giving UNKNOWN instead of raising NotConfigured (no such tenant, or the channel is
    not configured): the webhook then refuses the request as it refuses a forged one."""
    async def guarded() -> Creds:
        try:
            return await load()
        except NotConfigured as err:
            log.info("webhook for an unconfigured channel: %s", err.message)
            return UNKNOWN
    return guarded


async def lookup(cache: "CredentialCache", tenant_id: str, channel: str,
                 load: Callable[[], Awaitable[Creds]]) -> Creds:
    """The channel's credentials, cached or loaded (and cached); whatever `load` raises."""
    cached = cache.get(tenant_id, channel)
    if cached is not None:
        return cached
    fresh = await load()
    if fresh is not UNKNOWN:
        cache.put(tenant_id, channel, fresh)
    return fresh


def configured_credentials(session: Any, box: Any, tenant_id: str, channel: str, name: str | None = None) -> Creds:
    """The channel's (settings, decrypted secrets); NotConfigured (naming it `name`, default
    "channel '<channel>'") when the tenant has not configured it."""
    try:
        return channel_credentials(session, box, tenant_id, channel)
    except NotFound:
        raise NotConfigured(f"{name or f'channel {channel!r}'} is not configured for this tenant") from None


def credential_cache(app: Any) -> CredentialCache:
    """The API process's cache (created on first use)."""
    cache = getattr(app.state, "channel_credentials", None)
    if cache is None:
        cache = app.state.channel_credentials = CredentialCache()
    return cache
