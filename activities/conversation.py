"""Activities of conversations: deciding a turn (procedure trigger, knowledge answer, handoff),
loading a thread's history, projecting the conversation into the database, delivering replies
through the channel."""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, partial
from typing import Any, Callable

from sqlalchemy import func
from sqlmodel import select
from temporalio import activity

from activities.services import Services
from db.conversations import conversation_history, record_conversation
from db.models import ProcedureVersion
from db.procedures import list_procedures
from procedures.inputs import validate_inputs
from workflows import conversation_types as C

log = logging.getLogger("flywheel.conversation")
# Work that embeds through a remote endpoint (`openai_embedding_model`) runs in threads of its
# own: a turn stops waiting when its LLM budget is spent, but the call's thread only ends at the
# client's own timeout, so a hung endpoint holds at most these threads and never the event
# loop's default executor (the database calls of every activity).
REMOTE_EMBED_THREADS = 4
_remote_pool = ThreadPoolExecutor(REMOTE_EMBED_THREADS, thread_name_prefix="remote-embed")
# Work with the local model (retrieval, intent matching, the extractive answer) is CPU-bound and
# serialized on the model; it runs in threads of its own too, as many as the default executor
# has, so that under load the turns' database reads and writes (the default executor) never
# queue behind searches waiting for the model: each turn would wait twice.
LOCAL_EMBED_THREADS = min(32, (os.cpu_count() or 1) + 4)
_local_pool = ThreadPoolExecutor(LOCAL_EMBED_THREADS, thread_name_prefix="local-embed")


async def _in_local_pool(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_local_pool, partial(fn, *args))


def public_citations(citations: list[dict]) -> list[dict[str, Any]]:
    """Citations as the API promises them: {article_id, title, url}, a missing url None (the
    index stores it as "")."""
    return [{"article_id": c.get("article_id"), "title": c.get("title"), "url": c.get("url") or None}
            for c in citations or []]


def procedure_inputs(definition: dict, customer: dict) -> dict[str, Any]:
    """A conversation-started run's input: the customer's fields the procedure's schema declares."""
    schema = definition.get("inputs") or {}
    declared = (schema.get("properties") or {}).keys()
    return {k: v for k, v in (customer or {}).items() if v and (k in declared or not schema)}


class ConversationActivities:
    def __init__(self, services: Services, index: Any = None) -> None:
        self.services = services
        self._index = index
        self._trigger_cache: dict[str, tuple[int | None, dict]] = {}

    @cached_property
    def embedder(self):
        from knowledge.embed import get_embedder
        return get_embedder(self.services.settings)

    @cached_property
    def local_embedder(self):
        """The bundled model: what intent matching and the extractive answer fall back to when
        the remote embedder does not answer within the turn's budget (both compare texts they
        embed themselves, so any embedder will do; retrieval cannot: the index holds the remote
        model's vectors)."""
        from knowledge.embed import get_embedder
        return get_embedder(self.services.settings.model_copy(update={"openai_embedding_model": ""}))

    @property
    def index(self):
        """The worker's one index (its lexical cache sees the ingestion activities' writes), or
        the one given."""
        if self._index is not None:
            return self._index
        from activities.knowledge import shared_index
        return shared_index(self.services.settings)

    def _remote_embedder(self) -> bool:
        return self.embedder.name.startswith("openai:")

    async def _embedding(self, budget: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` (work that embeds with `self.embedder`) in a thread. With a remote
        embedder the network call is LLM time: it gets what is left of the turn's `budget` and
        raises TimeoutError past it (or when nothing is left), like the chat calls."""
        if budget is None or not self._remote_embedder():
            return await _in_local_pool(fn, *args)
        from activities.llm import MIN_CALL_S

        left = budget.remaining()
        if left < MIN_CALL_S:
            raise TimeoutError("no time left of the turn's LLM budget")
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(_remote_pool, partial(fn, *args)), timeout=left)

    async def _embedding_or_local(self, budget: Any, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args, embedder)` with the turn's embedder, else (the remote one timed out or
        failed) with the local model."""
        from knowledge.errors import KnowledgeError

        try:
            return await self._embedding(budget, fn, *args, self.embedder)
        except (TimeoutError, asyncio.TimeoutError, KnowledgeError) as exc:
            log.warning("%s: the remote embedder did not answer within the turn's budget (%s); "
                        "using the local model", what, type(exc).__name__)
            return await _in_local_pool(fn, *args, self.local_embedder)

    def _triggers(self, session, tenant_id: str) -> dict[str, dict]:
        """The tenant's procedures that have triggers, newest versions; re-read only after a
        publish (the newest version row id changes)."""
        newest = session.exec(select(func.max(ProcedureVersion.id))
                              .where(ProcedureVersion.tenant_id == tenant_id)).one()
        cached = self._trigger_cache.get(tenant_id)
        if cached and cached[0] == newest:
            return cached[1]
        found = {}
        for row in list_procedures(session, tenant_id):
            trigger = (row.definition or {}).get("trigger") or {}
            if trigger.get("keywords") or trigger.get("intents"):
                found[row.procedure_id] = {"trigger": trigger, "row": row}
        self._trigger_cache[tenant_id] = (newest, found)
        return found

    @activity.defn(name=C.DECIDE_TURN)
    async def decide_turn(self, p: dict[str, Any]) -> dict[str, Any]:
        """Which way this turn goes: a procedure, an answer with citations, or a person.

        The LLM (when configured) gets one budget for the whole turn (`activities.llm.Budget`),
        inside the turn's bound `turn_s`, and the same gate as the offline path: an
        instruction-like message or no confident passage hands off before it is asked. A remote
        embedder (`openai_embedding_model`) spends the same budget: past it, intent matching and
        the extractive answer use the local model, and a search that could not finish hands off."""
        from knowledge.answer import answerable, compose_answer, handed_off, is_prompt_injection
        from knowledge.intents import match_trigger

        settings = self.services.settings
        text, tenant = p["text"], p["tenant_id"]
        budget = None
        if settings.openai_base_url:
            from activities.llm import turn_budget
            budget = turn_budget(settings, p.get("turn_s"))
        if not p.get("busy_procedure"):
            triggers = await self.services.db(self._triggers, tenant)
            match = None if not triggers else await self._embedding_or_local(
                budget, "intent matching", lambda text, found, embedder: match_trigger(
                    text, found, embedder, settings.intent_threshold),
                text, {k: v["trigger"] for k, v in triggers.items()})
            chosen = (match.procedure_id, match.how, match.score) if match is not None else None
            if chosen is None and budget is not None and triggers:
                from activities.llm import llm_choose_procedure, procedure_summary
                picked = await llm_choose_procedure(settings, text, {
                    k: procedure_summary(v["row"].definition or {}) for k, v in triggers.items()}, budget)
                if picked in triggers:
                    chosen = (picked, "llm", None)
            if chosen is not None:
                row = triggers[chosen[0]]["row"]
                inputs = procedure_inputs(row.definition, p.get("customer") or {})
                problems = validate_inputs(row.definition.get("inputs"), inputs)
                if problems:
                    return {"kind": "handoff",
                            "reason": f"procedure {row.procedure_id} needs {'; '.join(problems)}"}
                return {"kind": "procedure", "procedure_id": row.procedure_id, "version": row.version,
                        "sha256": row.sha256, "definition": row.definition, "inputs": inputs,
                        "how": chosen[1], "score": chosen[2]}
        if is_prompt_injection(text):
            return {"kind": "handoff", "reason": "the message tries to instruct the assistant"}
        try:
            hits, query_vector = await self._embedding(budget, self.index.search_with_vector, tenant, text, 5)
        except (TimeoutError, asyncio.TimeoutError):
            # The index holds the remote model's vectors: no other embedder can search it.
            log.warning("knowledge search: the remote embedder did not answer within the turn's budget")
            return {"kind": "handoff", "reason": "the knowledge base could not be searched in time"}
        index_embedder = self.index.embedder_name
        confident = answerable(hits, settings.answer_threshold, settings.answer_passage_floor,
                               settings.answer_handoff_match)
        if not confident:
            if hits and handed_off(hits[0], settings.answer_handoff_match):
                return {"kind": "handoff", "reason": "a question the knowledge base hands to a person"}
            return {"kind": "handoff", "reason": "no confident answer in the knowledge base"}
        answer = None
        if budget is not None:
            from activities.llm import DECLINED, llm_answer
            answer = await llm_answer(settings, text, confident, p.get("history") or [], budget)
            if answer == DECLINED:
                return {"kind": "handoff", "reason": "the knowledge base does not answer this (LLM)"}
        if answer is None:
            answer = await self._embedding_or_local(
                budget, "the extractive answer", lambda text, hits, embedder: compose_answer(
                    text, hits, embedder, settings.answer_threshold, settings.answer_passage_floor,
                    # the search's vector of the message, unless this is another model's turn
                    query_vector=query_vector if embedder.name == index_embedder else None,
                    handoff_match=settings.answer_handoff_match),
                text, hits)
        if answer is None:
            return {"kind": "handoff", "reason": "no confident answer in the knowledge base"}
        return {"kind": "answer", "text": answer.text, "citations": public_citations(answer.citations),
                "confidence": round(float(answer.confidence), 4)}

    @activity.defn(name=C.LOAD_CONVERSATION)
    async def load_conversation(self, p: dict[str, Any]) -> dict[str, Any] | None:
        """The thread's history a new run continues from (None for a new thread)."""
        return await self.services.db(conversation_history, p["tenant_id"], p["conversation_id"])

    @activity.defn(name=C.RECORD_CONVERSATION)
    async def record_conversation(self, p: dict[str, Any]) -> dict[str, Any]:
        new = await self.services.db(lambda s: record_conversation(
            s, tenant_id=p["tenant_id"], conversation_id=p["conversation_id"], channel=p["channel"],
            thread=p["thread"], status=p["status"], outcome=p.get("outcome"), rating=p.get("rating"),
            customer=p.get("customer") or {}, handoff=p.get("handoff"), messages=p.get("messages") or []))
        return {"new": new}

    @activity.defn(name=C.DELIVER_MESSAGE)
    async def deliver_message(self, p: dict[str, Any]) -> dict[str, Any]:
        from channels.outbound import deliver
        return await deliver(self.services, p)

    def all(self) -> list:
        return [self.decide_turn, self.load_conversation, self.record_conversation, self.deliver_message]
