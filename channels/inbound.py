"""The common inbound path of every channel: de-duplicate, then signal-with-start the
conversation so the webhook can acknowledge at once (the reply goes out through the channel's
outbound adapter when the turn is done)."""
from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from workflows import conversation_types as C
from workflows.search import CHANNEL, TENANT_ID


async def deliver_inbound(client: Client, settings: Any, *, tenant_id: str, channel: str, thread: str,
                          text: str, customer: dict[str, Any], message_id: str,
                          attachments: list[dict[str, Any]] | None = None) -> str:
    """Send one customer message into its conversation (started when new); returns its id.

    `message_id` (the channel's own id: MessageSid, event id, Message-ID) also de-duplicates
    inside the conversation, behind the database key the webhook checks first."""
    cid = C.conversation_id(tenant_id, channel, thread)
    await client.start_workflow(
        C.WORKFLOW_NAME,
        C.ConversationInput(tenant_id=tenant_id, channel=channel, thread=thread, customer=customer,
                            idle_timeout_s=settings.conversation_idle_s,
                            turn_timeout_s=settings.conversation_turn_s),
        id=cid, task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=C.MESSAGE_SIGNAL,
        start_signal_args=[C.MessageIn(text=text, message_id=message_id, customer=customer,
                                       attachments=list(attachments or []))],
        search_attributes=TypedSearchAttributes([SearchAttributePair(TENANT_ID, tenant_id),
                                                 SearchAttributePair(CHANNEL, channel)]))
    return cid


CHANNEL_EVENT_SIGNAL = "channel_event"


async def deliver_event(client: Client, *, tenant_id: str, channel: str, thread: str, event: dict[str, Any]) -> bool:
    """Tell a running conversation what happened on its channel outside a message (e.g.
    {"kind": "call_ended", "status": "completed", "duration_s": 42}): the `channel_event` signal,
    never a start. False when there is no such conversation (nothing to tell)."""
    try:
        await client.get_workflow_handle(C.conversation_id(tenant_id, channel, thread)).signal(
            CHANNEL_EVENT_SIGNAL, event)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
