"""Outbound delivery of replies per channel. The `api` channel answers in the HTTP response and
its transcript; every other channel's module registers an adapter in ADAPTERS when imported."""
from __future__ import annotations

import importlib
from typing import Any, Awaitable, Callable

Adapter = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]
ADAPTERS: dict[str, Adapter] = {}

# channel -> the module that registers its adapter
MODULES = {"sms": "channels.twilio", "whatsapp": "channels.twilio", "voice": "channels.twilio",
           "email": "channels.email", "slack": "channels.slack", "messenger": "channels.meta",
           "instagram": "channels.meta", "web": "channels.web"}


def adapter_for(channel: str) -> Adapter | None:
    if channel not in ADAPTERS and channel in MODULES:
        importlib.import_module(MODULES[channel])
    return ADAPTERS.get(channel)


async def deliver(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Deliver one message to the customer; adapters raise on failure so Temporal retries."""
    adapter = adapter_for(payload["channel"])
    if adapter is None:
        return {"delivered": False, "reason": f"no outbound adapter for channel {payload['channel']!r}"}
    return await adapter(services, payload)
