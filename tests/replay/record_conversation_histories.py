"""Record the Conversation workflow histories that tests/replay/test_replay_conversations.py
replays (into tests/replay/conversations/).

Run `python tests/replay/record_conversation_histories.py` after a deliberate, versioned change
to the conversation workflow; every committed history must keep replaying, or running
conversations would break. `... record_conversation_histories.py NAME...` records only those
cases (a new case's history, without re-recording the others).
`conversation-closed-during-procedure-before-fix.json` is not made here: it is the
`conversation-closed-during-procedure` case recorded by the workflow of commit ebc4cfe (before the
procedure-outlives-close patch), which ended the run at the close; keep it as it is.

A dev server of its own and a worker with the real workflows (Conversation and the ProcedureRun
it starts); the activities answer fixed decisions, since a history records their results and
replay never runs them.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from temporalio import activity  # noqa: E402
from temporalio.client import Client, WithStartWorkflowOperation  # noqa: E402
from temporalio.common import WorkflowIDConflictPolicy  # noqa: E402

from procedures.loader import definition_sha256, load_procedure  # noqa: E402
from runtime.devserver import DevServer  # noqa: E402
from runtime.workers import build_worker  # noqa: E402
from workflows import conversation_types as C  # noqa: E402

TASK_QUEUE = "record-conversations"
ORDER_PROCEDURE = load_procedure("""
procedure: order-refund
trigger: {keywords: [refund]}
steps:
  - id: ask_order
    type: ask
    text: What is your order number?
    pattern: "^[0-9]{4}$"
    timeout: 1h
    save_as: order_number
  - id: noted
    type: message
    text: "Refund for order {{ order_number }} noted."
""")
ANSWER = {"kind": "answer", "text": "Standard delivery takes 3 to 5 business days.",
          "citations": [{"article_id": "shipping", "title": "Shipping times", "url": None}], "confidence": 0.71}
# a procedure that is still running when a person closes the conversation (or the call ends)
CHECK_PROCEDURE = load_procedure("""
procedure: order-check
trigger: {keywords: [check]}
steps:
  - id: checking
    type: message
    text: Checking your order.
  - id: pause
    type: wait
    for: 3s
  - id: shipped
    type: message
    text: Your order 1001 has shipped.
""")
# ... and one that hands off once it is done
ESCALATE_PROCEDURE = load_procedure("""
procedure: order-escalate
trigger: {keywords: [escalate]}
steps:
  - id: checking
    type: message
    text: Let me look into it.
  - id: pause
    type: wait
    for: 3s
  - id: to_people
    type: handoff
    reason: refund not approved
""")


def procedure(definition: dict) -> dict:
    return {"kind": "procedure", "procedure_id": definition["procedure"], "version": 1,
            "sha256": definition_sha256(definition), "definition": definition, "inputs": {},
            "how": "keyword", "score": 1.0}


PROCEDURE = procedure(ORDER_PROCEDURE)
PRIOR = {"seq": 5, "status": "closed", "outcome": "resolved", "rating": 4, "customer": {"email": "ann@example.com"}}
# a closed thread whose first message had the id m-1 (its reply projected with reply_to)
PRIOR_SEEN = {**PRIOR, "seen": [{"message_id": "m-1", "seq": 1, "reply": {
    "text": ANSWER["text"], "citations": ANSWER["citations"], "confidence": ANSWER["confidence"]}}]}


@activity.defn(name=C.DECIDE_TURN)
async def decide_turn(p: dict[str, Any]) -> dict[str, Any]:
    for word, decision in (("refund", PROCEDURE), ("check", procedure(CHECK_PROCEDURE)),
                           ("escalate", procedure(ESCALATE_PROCEDURE))):
        if word in p["text"]:
            return decision
    return ANSWER


@activity.defn(name=C.LOAD_CONVERSATION)
async def load_conversation(p: dict[str, Any]) -> dict[str, Any] | None:
    if p["conversation_id"].endswith("/returning"):
        return PRIOR
    return PRIOR_SEEN if "/retrying" in p["conversation_id"] else None


@activity.defn(name=C.RECORD_CONVERSATION)
async def record_conversation(p: dict[str, Any]) -> dict[str, Any]:
    return {"new": len(p["messages"])}


@activity.defn(name=C.DELIVER_MESSAGE)
async def deliver_message(p: dict[str, Any]) -> dict[str, Any]:
    return {"delivered": True}


def start(channel: str, thread: str) -> tuple[str, C.ConversationInput]:
    cid = C.conversation_id("acme", channel, thread)
    return cid, C.ConversationInput(tenant_id="acme", channel=channel, thread=thread, customer={},
                                    idle_timeout_s=2.0, turn_timeout_s=20.0)


async def say(client: Client, thread: str, text: str, channel: str = "api", message_id: str = "") -> dict:
    cid, inp = start(channel, thread)
    op = WithStartWorkflowOperation(C.WORKFLOW_NAME, inp, id=cid, task_queue=TASK_QUEUE,
                                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await client.execute_update_with_start_workflow("message", C.MessageIn(text=text, message_id=message_id),
                                                           start_workflow_operation=op)


async def call_ended(client: Client, thread: str) -> Any:
    """The relay's channel_event of a hang-up (signal-with-start, as the tests send it)."""
    cid, inp = start("voice", thread)
    return await client.start_workflow(
        C.WORKFLOW_NAME, inp, id=cid, task_queue=TASK_QUEUE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=C.CHANNEL_EVENT,
        start_signal_args=[{"kind": "call_ended", "status": "completed", "duration_s": 42}])


async def answer(client: Client) -> str:
    """An answer with citations, a rating, the idle close."""
    await say(client, "answer", "how long does delivery take?")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "answer"))
    await handle.signal("rate", 5)
    await handle.result()
    return handle.id


async def procedure_ask(client: Client) -> str:
    """A procedure that asks: a wrong answer re-asked, the right one, its message, the idle close."""
    await say(client, "procedure", "I want a refund")
    await say(client, "procedure", "12")
    await say(client, "procedure", "1001")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "procedure"))
    await handle.result()
    return handle.id


async def handoff(client: Client) -> str:
    """A webhook channel (signal-with-start): the customer asks for a person, the reply is
    delivered, a person replies and closes."""
    cid, inp = start("sms", "15550001")
    handle = await client.start_workflow(
        C.WORKFLOW_NAME, inp, id=cid, task_queue=TASK_QUEUE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=C.MESSAGE_SIGNAL, start_signal_args=[C.MessageIn(text="please connect me to a human",
                                                                       message_id="SM1")])
    while (await handle.query("state"))["status"] != C.HANDED_OFF:
        await asyncio.sleep(0.1)
    await handle.signal("agent_action", C.AgentAction("reply", "sam@example.com", "Sam here."))
    await handle.signal("agent_action", C.AgentAction("close", "sam@example.com"))
    await handle.result()
    return handle.id


async def returning(client: Client) -> str:
    """A thread with history in the database: the new run continues its numbering, reopened."""
    await say(client, "returning", "how long does delivery take?")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "returning"))
    await handle.signal("agent_action", C.AgentAction("close", "sam@example.com"))
    await handle.result()
    return handle.id


async def closed_during_procedure(client: Client) -> str:
    """A person closes while the procedure waits: the run stays, records its last message, ends."""
    await say(client, "closing", "please check my order")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "closing"))
    await handle.signal("agent_action", C.AgentAction("close", "sam@example.com"))
    await handle.result()
    return handle.id


async def handoff_after_close(client: Client) -> str:
    """A person closes while the procedure waits; it then hands off: the thread reopens handed
    off (back in the inbox), and closes after its idle timeout."""
    await say(client, "escalating", "please escalate my complaint")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "escalating"))
    await handle.signal("agent_action", C.AgentAction("close", "sam@example.com"))
    await handle.result()
    return handle.id


async def call_ended_after_answer(client: Client) -> str:
    """A voice call: an answer, then the hang-up closes the conversation at once."""
    await say(client, "CA0001", "how long does delivery take?", channel="voice")
    handle = await call_ended(client, "CA0001")
    await handle.result()
    return handle.id


async def call_ended_during_procedure(client: Client) -> str:
    """A voice call hangs up while its procedure waits: it closes once the procedure is done."""
    await say(client, "CA0002", "please check my order", channel="voice")
    handle = await call_ended(client, "CA0002")
    await handle.result()
    return handle.id


async def retry_of_a_closed_thread(client: Client) -> str:
    """A retry of a message answered before the thread closed: its earlier reply, no reopen."""
    await say(client, "retrying-1", "how long does delivery take?", message_id="m-1")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "retrying-1"))
    await handle.result()
    return handle.id


async def retry_after_a_reopen(client: Client) -> str:
    """A new message reopens the thread; a retry of its first session's message gets that reply."""
    await say(client, "retrying-2", "and express delivery?", message_id="m-2")
    await say(client, "retrying-2", "how long does delivery take?", message_id="m-1")
    handle = client.get_workflow_handle(C.conversation_id("acme", "api", "retrying-2"))
    await handle.signal("agent_action", C.AgentAction("close", "sam@example.com"))
    await handle.result()
    return handle.id


CASES = {"conversation-answer": answer, "conversation-procedure-ask": procedure_ask,
         "conversation-handoff": handoff, "conversation-reopened": returning,
         "conversation-closed-during-procedure": closed_during_procedure,
         "conversation-handoff-after-close": handoff_after_close,
         "conversation-call-ended": call_ended_after_answer,
         "conversation-call-ended-during-procedure": call_ended_during_procedure,
         "conversation-retry-of-a-closed-thread": retry_of_a_closed_thread,
         "conversation-retry-after-a-reopen": retry_after_a_reopen}


async def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, DevServer(db_file=Path(tmp) / "dev.db") as server:
        client = await Client.connect(server.address)
        async with build_worker(client, TASK_QUEUE, [decide_turn, load_conversation, record_conversation,
                                                     deliver_message]):
            for name in names:
                workflow_id = await CASES[name](client)
                history = await client.get_workflow_handle(workflow_id).fetch_history()
                (HERE / "conversations" / f"{name}.json").write_text(history.to_json())
                print(f"{name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(CASES)))
