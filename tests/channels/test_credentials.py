"""The per-process cache of webhook credentials: a hit needs no load, a failed check is decided on
freshly loaded credentials, entries expire and are bounded, and forged requests for made-up
tenants add nothing to it."""
from __future__ import annotations

import asyncio

import pytest

from channels.credentials import CredentialCache, credential_cache
from channels.errors import Forbidden
from tests.channels.conftest import meta_headers, slack_event, slack_headers, sms_form


class Store:
    """What the database holds; counts the loads."""

    def __init__(self, token: str) -> None:
        self.token, self.loads = token, 0

    async def load(self):
        self.loads += 1
        return {"phone_number": "+1555"}, {"auth_token": self.token}


def checker(signed_with: str):
    def check(creds) -> None:
        if creds[1]["auth_token"] != signed_with:
            raise Forbidden("invalid signature")
    return check


def verified(cache: CredentialCache, store: Store, signed_with: str, channel: str = "sms"):
    return asyncio.run(cache.verified("acme", channel, store.load, checker(signed_with)))


def test_a_verified_request_fills_the_cache_and_the_next_needs_no_load():
    cache, store = CredentialCache(), Store("t1")
    assert verified(cache, store, "t1")[1] == {"auth_token": "t1"}
    assert verified(cache, store, "t1")[1] == {"auth_token": "t1"}
    assert store.loads == 1
    verified(cache, store, "t1", channel="whatsapp")  # another channel is another entry
    assert store.loads == 2


def test_a_rotated_secret_verifies_at_once_and_a_forged_request_is_refused_on_what_is_stored():
    cache, store = CredentialCache(), Store("t1")
    verified(cache, store, "t1")
    store.token = "t2"                       # rotated by another API process
    assert verified(cache, store, "t2")[1] == {"auth_token": "t2"}
    assert store.loads == 2
    with pytest.raises(Forbidden):
        verified(cache, store, "forged")
    assert store.loads == 3                  # decided on a fresh load, not on the cache
    assert cache.get("acme", "sms")[1] == {"auth_token": "t2"}


def test_entries_expire_after_the_ttl_and_drop_forgets_them():
    now = [100.0]
    cache, store = CredentialCache(ttl_s=5, clock=lambda: now[0]), Store("t1")
    verified(cache, store, "t1")
    now[0] += 4.9
    verified(cache, store, "t1")
    assert store.loads == 1
    now[0] += 0.2                            # 5.1 s after it was loaded
    verified(cache, store, "t1")
    assert store.loads == 2
    cache.drop("acme", "sms")
    assert cache.get("acme", "sms") is None
    verified(cache, store, "t1")
    verified(cache, store, "t1", channel="voice")
    cache.drop("acme")
    assert cache.get("acme", "sms") is None and cache.get("acme", "voice") is None


def test_the_cache_is_bounded_and_keeps_the_most_recently_used():
    cache = CredentialCache(max_entries=2)
    creds = ({}, {"auth_token": "x"})
    cache.put("a", "sms", creds)
    cache.put("b", "sms", creds)
    assert cache.get("a", "sms") == creds    # used again: now the newest
    cache.put("c", "sms", creds)
    assert cache.get("b", "sms") is None
    assert cache.get("a", "sms") == creds and cache.get("c", "sms") == creds


def test_forged_requests_for_made_up_tenants_add_nothing_to_the_cache(client, tenant):
    """The tenant in a webhook's path is the sender's choice: caching the credentials of nobody
    under it let anyone fill the cache (4 kB names here) and push real tenants out."""
    body = slack_event("hello")
    r = client.post(f"/webhooks/{tenant.id}/slack/events", content=body, headers=slack_headers(body))
    assert r.status_code == 200, r.text
    cache = credential_cache(client.app)
    real = cache.get(tenant.id, "slack")
    assert real is not None
    size = len(cache)
    for i in range(100):
        name = f"t{i}-" + "x" * 4000
        answers = (client.post(f"/webhooks/{name}/slack/events", content=body, headers=slack_headers(body)),
                   client.post(f"/webhooks/{name}/twilio/sms", data=sms_form(), headers={"X-Twilio-Signature": "x"}),
                   client.post(f"/webhooks/{name}/meta", content=b"{}", headers=meta_headers(b"{}")))
        assert [a.status_code for a in answers] == [403, 403, 403]
    assert len(cache) == size and cache.get(tenant.id, "slack") == real
