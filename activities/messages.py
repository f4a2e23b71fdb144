"""Messages a procedure sends: recorded with the run (idempotent), delivered to a conversation."""
from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.services import Services
from db.runs import record_message
from workflows import types as T


class MessageActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=T.SEND_MESSAGE)
    async def send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        created = await self.services.db(
            record_message, p["tenant_id"], p["run_id"], p["step_id"], int(p["seq"]), p["text"])
        return {"recorded": created, "attempt": activity.info().attempt}
