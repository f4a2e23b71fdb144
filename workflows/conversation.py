"""Conversation: one durable workflow per conversation thread.

Messages arrive as the `message` Update (update-with-start) and are handled strictly in order.
Each turn either continues the procedure that is waiting for the customer, starts a procedure
whose trigger matches, answers from the knowledge base with citations, or hands off to a person.
Procedures run as child `ProcedureRun` workflows and report back with `procedure_event` signals.
Deterministic orchestration only; every decision that needs I/O is the `decide_turn` activity.

A thread keeps its workflow id for ever: a message after the conversation closed starts a new
run (or reopens the closing one), which first loads the thread's history from the database so
its messages continue the numbering of the transcript, and its recent message ids so a client's
retry of an earlier message gets its earlier reply instead of a second turn.

A person closing the conversation while its procedure runs (an approval pending) does not end
the run: it stays closed for the inbox, the AI quiet, and records and delivers what the
procedure still says until it finishes. The channel tells the conversation what happened outside
a message with `channel_event` (a phone call's end closes it).
"""
from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows import conversation_types as C
    from workflows import types as T
    from workflows.search import run_search_attributes

# "Ask for a person" means a request, not a mention: "talk to a human", "I need an agent",
# "human please", "agent" alone; not "the customs agent", "a person other than me", "my operator".
_WHO = (r"(?:(?:a|an|the|some|your|one\s+of\s+your)\s+)?(?:(?:real|live|actual|human)\s+)?"
        r"(?:human(?:\s+being)?|person|people|agent|someone|somebody|anyone|anybody|representative|rep|"
        r"operator|manager|supervisor|staff|colleague|customer\s+(?:service|support|care)|support\s+team|"
        r"your\s+team)")
_PERSON = r"(?:(?:a|an)\s+)?(?:(?:real|live|actual)\s+)?(?:human(?:\s+being)?|person|agent|representative|operator|manager|supervisor)"
ASK_FOR_PERSON = [re.compile(p, re.I) for p in (
    # talk / speak / chat / connect me / transfer me / put me through ... to|with <someone>
    rf"\b(?:talk|speak|chat|connect|transfer|put|pass|escalate|forward|switch)(?:\s+(?:me|us|this|it))?"
    rf"(?:\s+(?:through|over|back))?\s+(?:to|with)\s+{_WHO}\b",
    # I want / need / would like / can I get ... a human (the request ends there)
    rf"\b(?:i|we)\s+(?:want|need|would\s+like|'d\s+like|wanna|demand|request|get|have|see)\s+{_PERSON}"
    rf"(?=\s*(?:$|[.,;:!?]|please|pls|now|asap|instead|immediately|right\s+now|here|not\b|who\s+can))",
    # someone I can talk to
    r"\b(?:someone|somebody|anyone|anybody|a\s+(?:real\s+)?(?:person|human))\s+(?:i|we)\s+(?:can|could|may)\s+"
    r"(?:talk|speak|chat)\b",
    # "human please", "real person please", "live agent now"
    r"\b(?:human|(?:real|live|actual)\s+(?:person|human|agent))\s+(?:please|pls|plz|now|asap)\b",
    # the whole message is the request: "agent", "Representative!", "a real person please"
    rf"^\W*(?:please\W+)?(?:{_PERSON}|rep|someone|somebody|customer\s+(?:service|support))"
    r"(?:\W+(?:please|pls|plz|now|asap))?\W*$",
)]
HANDOFF_TEXT = "I'm connecting you with a person from our team. They will reply here."
ATTACHMENT_TEXT = ("Thanks, we received your file. I can't open attachments yet \u2014 could you describe "
                   "what you need in a message?")
KEEP_MESSAGES = 50      # transcript kept in the workflow; the database keeps all of it
KEEP_SEEN = 200         # message ids remembered for de-duplication
RECORD_BATCH = 8        # messages projected into the database at once while turns keep coming
RECORD_DELAY = timedelta(seconds=1)  # ... or after this long without a new message
DELIVERY = {"start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=60))}
ACTIVITY = {"start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))}
DECIDE_MIN_S = 30.0     # an attempt of decide_turn may take this long at least (first model load)
# Runs closed by a person while their procedure ran used to end at once (the procedure's later
# messages were lost); histories from before keep replaying on the old side of this patch.
PROCEDURE_OUTLIVES_CLOSE = "procedure-outlives-close"


def asks_for_person(text: str) -> bool:
    """Whether the customer asks to talk to a person (a request, not a mention of one)."""
    return any(p.search(text) for p in ASK_FOR_PERSON)


# Outside the sandbox: it re-enters the sandbox for every payload of every activation, which was
# a fifth of a turn's CPU (bench/conversations.py); this module imports only pure modules (the
# replay tests hold it to its histories) and takes time, ids and randomness from `workflow.*`.
@workflow.defn(name=C.WORKFLOW_NAME, sandboxed=False)
class ConversationWorkflow:
    @workflow.init
    def __init__(self, inp: C.ConversationInput) -> None:
        self.inp = inp
        self.lock = asyncio.Lock()
        carried = dict(inp.carried or {})
        pending = carried.pop("pending", None) or {}
        self.s: dict[str, Any] = carried or {
            "status": C.OPEN, "outcome": None, "rating": None, "customer": dict(inp.customer),
            "messages": [], "seq": 0, "seen": {}, "procedure": None, "handoff": None,
            "ai_paused": False, "answered": False, "resolved_by_procedure": False}
        # A fresh run reads the thread's history first; until then nothing is numbered.
        self.loaded = inp.carried is not None
        self.events: list[dict] = []
        self.unrecorded: list[dict] = list(pending.get("unrecorded") or [])
        self.undelivered: list[dict] = list(pending.get("undelivered") or [])
        self.inbox = 0  # customer messages being handled (or waiting to be)
        self.wake = 0
        self.arriving: list[str] = []  # message ids that came before the history was loaded
        self.dormant = False  # a closed thread's run started only by retries: it ends, still closed
        self.turn_seq: int | None = None  # the customer message the running turn answers
        self.settling = False  # the running turn's reply is what its procedure says meanwhile

    # ---- lifecycle ----------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: C.ConversationInput) -> dict[str, Any]:
        if not self.loaded:
            await self._load()
        while True:
            await self._session(timedelta(seconds=inp.idle_timeout_s))
            # Closed. A turn the close interrupted finishes first; then the close is projected.
            await workflow.wait_condition(lambda: not self.lock.locked())
            await self._flush()
            if self._procedure_running() and workflow.patched(PROCEDURE_OUTLIVES_CLOSE):
                await self._follow_procedure()
            if self.s["status"] != C.CLOSED:
                continue  # the procedure ended badly after the close: people have it again
            if self.dormant:  # the retries it was started for get their answers first
                await workflow.wait_condition(lambda: workflow.all_handlers_finished() or bool(self.inbox))
                await self._flush()  # what came meanwhile (a rating, a channel's note)
            if not self.inbox:
                return {"status": C.CLOSED, "outcome": self.s["outcome"], "rating": self.s["rating"]}
            # The customer wrote while it closed: the same thread goes on, in this run.
            self._reopen(self.s["outcome"])

    async def _follow_procedure(self) -> None:
        """A person closed the conversation while its procedure runs (an approval pending): the
        run stays, closed for the inbox and the AI quiet, and records and delivers what the
        procedure says until it finishes, or until the customer writes again (which reopens the
        thread with the procedure, so a waiting `ask` gets the answer)."""
        while self._procedure_running() and not self.inbox and self.s["status"] == C.CLOSED:
            await workflow.wait_condition(
                lambda: not self._procedure_running() or bool(self.inbox) or bool(self.unrecorded)
                or bool(self.undelivered) or self.s["status"] != C.CLOSED)
            await self._flush()

    async def _session(self, idle: timedelta) -> None:
        """Turns until the conversation closes (idle timeout or a person closing it)."""
        while self.s["status"] != C.CLOSED:
            seen_wake = self.wake
            try:
                # Projection waits until a turn has replied, so it never delays the reply.
                await workflow.wait_condition(
                    lambda: self.wake != seen_wake
                    or ((bool(self.unrecorded) or bool(self.undelivered)) and not self.lock.locked()),
                    timeout=idle)
            except asyncio.TimeoutError:
                if not self._procedure_running() and not self.lock.locked() and not self.inbox:
                    self._close()
            if self.unrecorded and not self.undelivered and self.s["status"] != C.CLOSED:
                # Batch the projection while turns keep coming (each flush is an activity); a
                # reply to deliver, a full batch, a close or a quiet moment flushes it.
                try:
                    await workflow.wait_condition(
                        lambda: len(self.unrecorded) >= RECORD_BATCH or bool(self.undelivered)
                        or self.s["status"] == C.CLOSED, timeout=RECORD_DELAY)
                except asyncio.TimeoutError:
                    pass
            await self._flush()
            if self.s["status"] != C.CLOSED and workflow.info().is_continue_as_new_suggested() \
                    and not self.lock.locked():
                await self._continue_as_new()

    async def _continue_as_new(self) -> None:
        """Continue as new once no handler runs and everything is projected and delivered: a
        message accepted while flushing is a handler again, so wait and flush until both hold."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not (self.unrecorded or self.undelivered):
                break
            await self._flush()
        if self.s["status"] == C.CLOSED:
            return
        workflow.continue_as_new(C.ConversationInput(
            tenant_id=self.inp.tenant_id, channel=self.inp.channel, thread=self.inp.thread,
            customer=self.s["customer"], idle_timeout_s=self.inp.idle_timeout_s,
            turn_timeout_s=self.inp.turn_timeout_s, carried=self._carry()))

    def _carry(self) -> dict[str, Any]:
        carried = dict(self.s)
        carried["messages"] = self.s["messages"][-KEEP_MESSAGES:]
        carried["seen"] = dict(list(self.s["seen"].items())[-KEEP_SEEN:])
        carried["pending"] = {"unrecorded": list(self.unrecorded), "undelivered": list(self.undelivered)}
        return carried

    async def _load(self) -> None:
        """Continue the thread's history: its last seq, customer and rating (a local activity:
        one read, before anything of this run is numbered)."""
        prior = await workflow.execute_local_activity(C.LOAD_CONVERSATION, {
            "tenant_id": self.inp.tenant_id, "conversation_id": workflow.info().workflow_id}, **ACTIVITY)
        if prior:
            self.s["seq"] = max(self.s["seq"], int(prior.get("seq") or 0))
            self.s["customer"] = {**(prior.get("customer") or {}), **self.s["customer"]}
            self.s["rating"] = prior.get("rating")
            for earlier in prior.get("seen") or []:  # oldest first: the newest are kept
                self.s["seen"][earlier["message_id"]] = {"reply": earlier["reply"]}
            self.s["seen"] = dict(list(self.s["seen"].items())[-KEEP_SEEN:])
            closed = prior.get("status") == C.CLOSED
            if prior.get("seq") and closed and not self._fresh_arrival():
                # Only retries of earlier messages (or no message at all): nothing to reopen for;
                # they get their earlier replies and the thread stays as it was.
                self.s["status"], self.s["outcome"], self.dormant = C.CLOSED, prior.get("outcome"), True
            elif prior.get("seq"):
                self._reopen(prior.get("outcome") if closed else None)
        self.loaded = True

    def _fresh_arrival(self) -> bool:
        """Whether a message that came before the history was loaded is new to the thread."""
        return any(not mid or mid not in self.s["seen"] for mid in self.arriving)

    def _reopen(self, previous_outcome: str | None) -> None:
        """A new session of the thread: open, with the AI; the rating stays until re-rated, the
        previous outcome stays in the transcript."""
        self.s.update({"status": C.OPEN, "outcome": None, "handoff": None, "ai_paused": False,
                       "answered": False, "resolved_by_procedure": False, "agent_resolved": False,
                       "close_after_procedure": False})
        self.dormant = False
        was = f" (it was closed: {previous_outcome})" if previous_outcome else ""
        self._note("system", f"conversation reopened{was}", previous_outcome=previous_outcome)
        self.wake += 1

    def _close(self) -> None:
        if self.s["status"] == C.CLOSED:
            return
        if self.s["handoff"] and not self.s.get("agent_resolved"):
            outcome = C.HANDED_OFF
        elif self.s["answered"] or self.s["resolved_by_procedure"] or self.s.get("agent_resolved"):
            outcome = C.RESOLVED
        else:
            outcome = C.ABANDONED
        self.s["status"], self.s["outcome"] = C.CLOSED, outcome
        self._note("system", f"conversation closed ({outcome})", outcome=outcome, rating=self.s["rating"])

    def _procedure_running(self) -> bool:
        proc = self.s["procedure"]
        return bool(proc) and proc["status"] in ("running", "waiting")

    async def _ready(self) -> None:
        """Until this run has loaded the thread's history (a fresh run's first step)."""
        if not self.loaded:
            await workflow.wait_condition(lambda: self.loaded)

    # ---- transcript ---------------------------------------------------------------------
    def _note(self, role: str, text: str, **extra: Any) -> dict:
        self.s["seq"] += 1
        msg = {"seq": self.s["seq"], "role": role, "text": text, "at": workflow.now().isoformat(), **extra}
        self.s["messages"].append(msg)
        del self.s["messages"][:-KEEP_MESSAGES]
        self.unrecorded.append(msg)
        return msg

    def _say(self, text: str, in_turn: bool, **extra: Any) -> dict:
        """Something the AI (or a procedure, or an agent) says to the customer."""
        msg = self._note(extra.pop("role", "assistant"), text, **extra)
        if not in_turn or self.inp.channel != "api":
            self.undelivered.append(msg)
        return msg

    async def _flush(self) -> None:
        """Project new messages into the database and deliver out-of-turn replies (activities)."""
        while self.unrecorded or self.undelivered:
            batch, self.unrecorded = self.unrecorded, []
            outbound, self.undelivered = self.undelivered, []
            payload = {"tenant_id": self.inp.tenant_id, "conversation_id": workflow.info().workflow_id,
                       "channel": self.inp.channel, "thread": self.inp.thread,
                       "status": self.s["status"], "outcome": self.s["outcome"],
                       "rating": self.s["rating"], "customer": self.s["customer"],
                       "handoff": self.s["handoff"], "messages": batch}
            if self.inp.channel == "api":
                # A regular activity: a local one would hold the workflow task, and with it the
                # reply the caller of the `message` update is waiting for.
                await workflow.execute_activity(C.RECORD_CONVERSATION, payload, **ACTIVITY)
            else:
                # Webhook channels: nobody waits on this workflow task (the reply goes out through
                # the channel), so the write runs right in this worker: no activity task through
                # the server and one workflow task less per turn.
                await workflow.execute_local_activity(C.RECORD_CONVERSATION, payload, **ACTIVITY)
            for msg in outbound:
                if self.inp.channel == "api":
                    continue
                try:
                    await workflow.execute_activity(C.DELIVER_MESSAGE, {
                        "tenant_id": self.inp.tenant_id, "channel": self.inp.channel, "thread": self.inp.thread,
                        "customer": self.s["customer"], "message": msg,
                        "idempotency_key": self._delivery_key(msg)}, **DELIVERY)
                except ActivityError as err:
                    # The channel refused for good (or kept failing): the conversation goes on and
                    # the failure is in the transcript for the people in the inbox.
                    cause = getattr(err.cause, "message", None) or str(err.cause or err)
                    self._note("system", f"could not deliver message {msg['seq']}: {cause}")

    def _delivery_key(self, msg: dict) -> str:
        """Unique per message for ever: the thread, its run chain (continue-as-new keeps it; a
        reopened thread gets a new one) and the message's seq, which only grows in a thread."""
        info = workflow.info()
        return f"{info.workflow_id}:{info.first_execution_run_id}:{msg['seq']}"

    # ---- the customer's messages --------------------------------------------------------
    @workflow.update
    async def message(self, m: C.MessageIn) -> dict[str, Any]:
        if m.message_id and m.message_id in self.s["seen"]:
            return self._seen(m.message_id)
        if not self.loaded:
            # A fresh run: the thread's earlier message ids come with its history, and whether
            # anything new came decides if the thread reopens.
            self.arriving.append(m.message_id)
            await self._ready()
            if m.message_id and m.message_id in self.s["seen"]:
                return self._seen(m.message_id)
        self.inbox += 1
        try:
            while True:
                if self.s["status"] == C.CLOSED:
                    # Closing: the run reopens the thread once the close is projected.
                    await workflow.wait_condition(lambda: self.s["status"] != C.CLOSED)
                async with self.lock:
                    if self.s["status"] == C.CLOSED:
                        continue  # closed while this message waited for the previous turn
                    if m.message_id and m.message_id in self.s["seen"]:
                        return self._seen(m.message_id)
                    try:
                        result = await self._turn(m)
                    finally:
                        self.turn_seq, self.settling = None, False
                    if m.message_id:
                        self.s["seen"][m.message_id] = result
                    self.wake += 1
                    return result
        finally:
            self.inbox -= 1

    def _seen(self, message_id: str) -> dict[str, Any]:
        """What a message got the first time. One answered in an earlier run of the thread (from
        the database) has its reply only: the status and procedure are the conversation's now."""
        earlier = self.s["seen"][message_id]
        if "status" in earlier:
            return earlier
        return {**self._result(None), "reply": earlier["reply"]}

    @workflow.signal(name=C.MESSAGE_SIGNAL)
    async def message_signal(self, m: C.MessageIn) -> None:
        """The same turn for channels that acknowledge a webhook at once (signal-with-start); the
        reply goes out through the channel's outbound adapter. Nothing the channel accepted
        vanishes: an over-long text is cut with a marker instead of refused."""
        if isinstance(m.text, str):
            m.text = C.truncate(C.clean_text(m.text))
        m.attachments = C.clean_attachments(m.attachments)
        try:
            self._validate_message(m)
        except ValueError as err:
            workflow.logger.warning("message ignored: %s", err)
            return
        await self.message(m)

    @message.validator
    def _validate_message(self, m: C.MessageIn) -> None:
        if not isinstance(m.text, str):
            raise ValueError("a message's text must be a string")
        if len(m.text) > C.MAX_TEXT:
            raise ValueError("a message is at most 10,000 characters")
        if not isinstance(m.attachments, list):
            raise ValueError("attachments must be a list")
        if len(m.attachments) > C.MAX_ATTACHMENTS:
            raise ValueError(f"a message has at most {C.MAX_ATTACHMENTS} attachments")
        if len(C.clean_attachments(m.attachments)) != len(m.attachments):
            raise ValueError("an attachment needs a url (and a content_type)")
        if not C.clean_text(m.text).strip() and not m.attachments:
            raise ValueError("a message needs text")
        if not isinstance(m.customer, dict) or not isinstance(m.message_id, str):
            raise ValueError("customer must be an object and message_id a string")

    async def _turn(self, m: C.MessageIn) -> dict[str, Any]:
        if m.customer:
            fresh = {k: C.clean_text(v) if isinstance(v, str) else v for k, v in m.customer.items() if v}
            self.s["customer"] = {**self.s["customer"], **fresh}
        text = C.clean_text(m.text).strip()
        attachments = C.clean_attachments(m.attachments)
        extra: dict[str, Any] = {"attachments": attachments} if attachments else {}
        if m.message_id:
            extra["message_id"] = m.message_id  # projected: a retry after a reopen is known
        self.turn_seq = self._note("customer", text, **extra)["seq"]
        if self.s["ai_paused"]:
            return self._result(None)  # a person has the conversation: they will answer
        if not text:
            if self.s["status"] == C.HANDED_OFF:
                return self._result(None)  # a person will look at it
            # Only a file: say so (the procedure waiting for an answer goes on waiting).
            return self._result(self._say(ATTACHMENT_TEXT, True))
        if asks_for_person(text):
            return self._result(self._handoff("the customer asked for a person", in_turn=True))
        proc = self.s["procedure"]
        if proc and proc.get("waiting") == "ask":
            mark = self._mark()
            proc["waiting"] = None
            await workflow.get_external_workflow_handle(proc["workflow_id"]).signal(
                T.ANSWER_SIGNAL, T.Answer(text=text, step_id=proc.get("step_id")))
            return self._result(await self._settle(mark))
        if self.s["status"] == C.HANDED_OFF:
            return self._result(None)  # waiting for a person; the message is in the inbox
        # A local activity: it only reads, and it is most of a turn's latency, so it runs right in
        # this worker without a round trip through the server's task queue. It bounds its LLM
        # work by the turn's time (half of it at most), so a hung LLM falls back offline.
        turn_s = float(self.inp.turn_timeout_s)
        decision = await workflow.execute_local_activity(C.DECIDE_TURN, {
            "tenant_id": self.inp.tenant_id, "text": text, "customer": self.s["customer"],
            "busy_procedure": self._procedure_running(), "turn_s": turn_s,
            "history": [{"role": x["role"], "text": x["text"]} for x in self.s["messages"][-8:]],
        }, start_to_close_timeout=timedelta(seconds=max(turn_s, DECIDE_MIN_S)),
            retry_policy=ACTIVITY["retry_policy"])
        if decision["kind"] == "procedure" and not self._procedure_running():
            mark = self._mark()
            await self._start_procedure(decision)
            return self._result(await self._settle(mark))
        if decision["kind"] == "answer":
            self.s["answered"] = True
            return self._result(self._say(decision["text"], True, citations=decision["citations"],
                                          confidence=decision["confidence"]))
        return self._result(self._handoff(decision.get("reason") or "no confident answer", in_turn=True))

    def _result(self, reply: dict | None) -> dict[str, Any]:
        if reply and "seq" in reply and self.turn_seq is not None:
            reply["reply_to"] = self.turn_seq  # the turn's reply, as projected (not flushed yet)
        proc = self.s["procedure"]
        return {"reply": {"text": reply["text"] if reply else "",
                          "citations": (reply or {}).get("citations", []),
                          "confidence": (reply or {}).get("confidence")},
                "status": self.s["status"],
                "procedure": {k: proc[k] for k in ("id", "run_id", "status")} if proc else None}

    def _handoff(self, reason: str, in_turn: bool, team: str | None = None, **extra: Any) -> dict:
        if self.s["status"] != C.CLOSED:  # a person closed it meanwhile: closed it stays
            self.s["status"] = C.HANDED_OFF
        self.s["handoff"] = {"reason": reason, "team": team, "at": workflow.now().isoformat()}
        self._note("system", f"handed off: {reason}")
        return self._say(HANDOFF_TEXT, in_turn, **extra)

    # ---- procedures ---------------------------------------------------------------------
    async def _start_procedure(self, decision: dict) -> None:
        run_id = f"c{workflow.uuid4().hex[:16]}"
        conv = {"workflow_id": workflow.info().workflow_id, "id": workflow.info().workflow_id,
                "channel": self.inp.channel, "customer": self.s["customer"]}
        run = T.RunInput(tenant_id=self.inp.tenant_id, run_id=run_id, procedure_id=decision["procedure_id"],
                         version=decision["version"], sha256=decision["sha256"],
                         definition=decision["definition"], inputs=decision.get("inputs") or {},
                         conversation=conv)
        wf_id = T.workflow_id(self.inp.tenant_id, decision["procedure_id"], run_id)
        self.s["procedure"] = {"id": decision["procedure_id"], "run_id": run_id, "workflow_id": wf_id,
                               "status": "running", "waiting": None, "step_id": None}
        self._note("system", f"started procedure {decision['procedure_id']} ({decision.get('how', 'match')})")
        # ABANDON: the run outlives a continue-as-new of this workflow; it reports by signal.
        await workflow.start_child_workflow(
            T.WORKFLOW_NAME, run, id=wf_id, task_queue=workflow.info().task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=run_search_attributes(run, self.inp.channel))

    def _mark(self) -> int:
        """Where the turn's procedure events start: what it says from here on is the reply."""
        self.settling = True
        return len(self.events)

    async def _settle(self, mark: int) -> dict | None:
        """Wait until the procedure asks, waits or ends; the reply is what it said meanwhile."""
        def settled() -> bool:
            return any(e["kind"] in ("waiting", "finished") for e in self.events[mark:])
        try:
            await workflow.wait_condition(settled, timeout=timedelta(seconds=self.inp.turn_timeout_s))
        except asyncio.TimeoutError:
            pass
        said = [e["message"] for e in self.events[mark:] if e.get("message")]
        if not said:
            return None
        return {"text": "\n\n".join(m["text"] for m in said), "citations": [], "confidence": None}

    @workflow.signal(name=T.PROCEDURE_EVENT)
    async def procedure_event(self, event: dict) -> None:
        await self._ready()
        proc = self.s.get("procedure")
        if not proc or event.get("run_id") != proc["run_id"]:
            return
        in_turn = self.lock.locked()
        # part of the reply of the turn waiting for it (projected with it, for a later retry)
        reply = {"reply_to": self.turn_seq} if in_turn and self.settling and self.turn_seq else {}
        kind = event.get("kind")
        if kind == "message":
            event = {**event, "message": self._say(event["text"], in_turn, procedure=proc["id"], **reply)}
        elif kind == "waiting":
            proc["status"], proc["waiting"], proc["step_id"] = "waiting", event.get("wait"), event.get("step_id")
        elif kind == "finished":
            proc["status"], proc["waiting"] = event.get("status"), None
            if event.get("status") == T.SUCCEEDED:
                self.s["resolved_by_procedure"] = True
            elif event.get("status") in (T.HANDED_OFF, T.FAILED):
                if self.s["status"] == C.CLOSED and workflow.patched(PROCEDURE_OUTLIVES_CLOSE):
                    # It ended badly after a person closed the conversation (a refund refused or
                    # failed after approval): the customer is told a person will follow up, so
                    # the thread goes back to the inbox.
                    self._reopen(self.s["outcome"])
                if event.get("status") == T.HANDED_OFF:
                    result = event.get("result") or {}
                    msg = self._handoff(result.get("reason") or "the procedure handed off", in_turn,
                                        result.get("team"), **reply)
                else:
                    err = event.get("error") or {}
                    msg = self._handoff(f"procedure {proc['id']} failed: {err.get('name')}", in_turn, **reply)
                event = {**event, "message": msg}
            if self.s.get("close_after_procedure") and self.s["status"] == C.OPEN:
                self._close()  # the call ended while it ran
        self.events.append(event)
        self.wake += 1

    # ---- the channel ----------------------------------------------------------------------
    @workflow.signal(name=C.CHANNEL_EVENT)
    async def channel_event(self, event: dict) -> None:
        """What happened on the channel outside a message, told by the inbound relay, e.g. a
        phone call's end `{"kind": "call_ended", "status": "completed", "duration_s": 42}`: noted
        in the transcript; a call's end closes the conversation by the usual rules, unless people
        have it (handed off or taken over: theirs to close) or a procedure still runs (closed when
        it finishes). Other kinds are only noted."""
        await self._ready()
        event = event if isinstance(event, dict) else {}
        kind = C.clean_short(event.get("kind"), 64) or "unknown"
        if kind != "call_ended":
            self._note("system", f"channel event ignored: {kind}", channel_event=kind)
            self.wake += 1
            return
        status = C.clean_short(event.get("status"), 32) or "ended"
        duration = event.get("duration_s")
        duration = duration if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0 else None
        detail = f"{status}, {duration} s" if duration is not None else status
        self._note("system", f"call ended ({detail})", channel_event=kind, call_status=status, duration_s=duration)
        if self.s["status"] == C.OPEN:
            if self._procedure_running():
                self.s["close_after_procedure"] = True
            else:
                self._close()
        self.wake += 1

    # ---- people -------------------------------------------------------------------------
    @workflow.signal
    async def agent_action(self, action: C.AgentAction) -> None:
        await self._ready()
        if self.s["status"] == C.CLOSED:
            # Closing: a person's reply still reaches the customer; nothing else changes.
            if action.kind == "reply" and action.text.strip():
                self._say(C.clean_text(action.text).strip(), False, role="agent", agent=action.agent)
            return
        if action.kind == "reply" and action.text.strip():
            self._say(C.clean_text(action.text).strip(), False, role="agent", agent=action.agent)
            self.s["ai_paused"] = True
            self.s["status"] = C.HANDED_OFF
        elif action.kind == "takeover":
            self.s["ai_paused"], self.s["status"] = True, C.HANDED_OFF
            self.s["handoff"] = self.s["handoff"] or {"reason": f"taken over by {action.agent}", "team": None,
                                                      "at": workflow.now().isoformat()}
            self._note("system", f"taken over by {action.agent or 'an agent'}")
        elif action.kind == "release":
            self.s["ai_paused"], self.s["status"], self.s["agent_resolved"] = False, C.OPEN, True
            self._note("system", f"returned to the AI by {action.agent or 'an agent'}")
        elif action.kind == "close":
            self.s["agent_resolved"] = True
            self._close()
        self.wake += 1

    @workflow.signal
    async def rate(self, rating: int) -> None:
        await self._ready()
        if isinstance(rating, int) and 1 <= rating <= 5:
            self.s["rating"] = rating
            self._note("system", f"rated {rating}/5")
            self.wake += 1

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {"status": self.s.get("status"), "outcome": self.s.get("outcome"),
                "rating": self.s.get("rating"), "customer": self.s.get("customer"),
                "procedure": self.s.get("procedure"), "handoff": self.s.get("handoff"),
                "messages": self.s.get("messages", [])}
