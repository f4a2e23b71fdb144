"""Knowledge-base workflows: ingestion of a source (crawl / uploaded files), indexing of one
article changed through the API, and search.

Every Chroma access happens in an activity on a worker: embedded Chroma cannot be shared by
several processes, and only workers load the embedding model. Deterministic orchestration only
(no I/O, no clock but workflow.now()).

IngestWorkflow (id `ingest/{tenant}/{source_id}`): record running -> collect (crawl or extract
the uploads; the activity stores one article per page/file, a new version only when the text
changed, records the crawl's progress in the source row every few pages, and returns small
references, never the texts) -> index the changed articles in batches (progress recorded after
each) -> (url sources) retire the articles of pages that disappeared -> record the outcome.
With `resync_every_s` it then sleeps and continues-as-new for the next cycle.

Deleting a source (the `remove` signal, sent with start so a finished workflow runs again with
`remove=True`): the current step ends (the collect activity stops at its next progress record,
as the source row says "deleting"), every article of the source is retired as a new deleted
version (restorable by rollback), the source is recorded "deleted", and no cycle follows.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

INGEST_WORKFLOW = "KnowledgeIngest"
INDEX_WORKFLOW = "KnowledgeIndexArticle"
SEARCH_WORKFLOW = "KnowledgeSearch"

# Activity names (the workflows never import the activities' I/O code).
COLLECT = "knowledge_collect"
INDEX_ARTICLES = "knowledge_index_articles"
RETIRE_MISSING = "knowledge_retire_missing"
RECORD_SOURCE = "knowledge_record_source"
SEARCH = "knowledge_search"
REMOVE_SIGNAL = "remove"

INDEX_BATCH = 10
# Errors whose retry cannot help (the activity also marks them non-retryable).
PERMANENT = ["HostileFile", "UnsupportedFile", "TooLarge", "CrawlError", "NotFound", "KnowledgeError",
             "SourceRemoved"]
PROGRESS_KEYS = ("phase", "pages_fetched", "pages_seen", "pages_indexed", "articles_changed", "errors", "cycle",
                 "next_sync_at")

_DB = {"start_to_close_timeout": timedelta(seconds=30),
       "retry_policy": RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10))}
_INDEX = {"start_to_close_timeout": timedelta(minutes=5),
          "retry_policy": RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=30),
                                      non_retryable_error_types=["NotFound"])}


def index_workflow_id(tenant_id: str, article_id: str, version: int) -> str:
    return f"knowledge-index/{tenant_id}/{article_id}/v{version}"


@dataclass
class IngestInput:
    tenant_id: str
    source_id: str
    type: str                          # url | file
    url: str | None = None
    max_pages: int = 50
    max_depth: int = 3
    resync_every_s: int | None = None
    cycle: int = 1
    remove: bool = False               # started by a deletion: retire the source's articles, end


@dataclass
class IndexInput:
    tenant_id: str
    article_id: str
    version: int


@dataclass
class SearchInput:
    tenant_id: str
    query: str
    k: int = 5


def _error_text(err: BaseException) -> str:
    cause = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message or str(cause)
    return str(cause) or type(cause).__name__


@workflow.defn(name=INGEST_WORKFLOW)
class IngestWorkflow:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {"status": "pending", "phase": None, "pages_fetched": 0, "pages_seen": 0,
                                      "pages_indexed": 0, "articles_changed": 0, "errors": 0, "cycle": 1,
                                      "error": None, "next_sync_at": None}
        self.removing = False

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """{status, phase, pages_fetched, pages_seen, pages_indexed, articles_changed, errors, cycle,
        error, next_sync_at} (during a crawl the source row is fresher: the activity records it)."""
        return dict(self.state)

    @workflow.signal(name=REMOVE_SIGNAL)
    def remove(self) -> None:
        """Delete the source: stop the current cycle and the re-sync, retire its articles."""
        self.removing = True

    def _progress(self) -> dict[str, Any]:
        return {k: self.state[k] for k in PROGRESS_KEYS}

    async def _record(self, inp: IngestInput, status: str, error: str | None = None) -> None:
        self.state["status"] = status
        self.state["error"] = error
        await workflow.execute_activity(RECORD_SOURCE, {
            "tenant_id": inp.tenant_id, "source_id": inp.source_id, "status": status,
            "progress": self._progress(), "error": error}, **_DB)

    @workflow.run
    async def run(self, inp: IngestInput) -> dict[str, Any]:
        self.state["cycle"] = inp.cycle
        if inp.remove or self.removing:
            return await self._remove(inp)
        self.state["phase"] = "crawling" if inp.type == "url" else "extracting"
        await self._record(inp, "running")
        try:
            await self._cycle(inp)
            if self.removing:
                return await self._remove(inp)
            self.state["phase"] = None
            await self._record(inp, "succeeded")
        except ActivityError as err:
            if self.removing:
                return await self._remove(inp)
            self.state["phase"] = None
            self.state["errors"] += 1
            await self._record(inp, "failed", _error_text(err))
        if inp.resync_every_s and not self.removing:
            delay = timedelta(seconds=inp.resync_every_s)
            self.state["next_sync_at"] = (workflow.now() + delay).isoformat()
            await self._record(inp, self.state["status"], self.state["error"])
            try:
                await workflow.wait_condition(lambda: self.removing, timeout=delay)
            except asyncio.TimeoutError:
                workflow.continue_as_new(replace(inp, cycle=inp.cycle + 1))
        if self.removing:
            return await self._remove(inp)
        return dict(self.state)

    async def _cycle(self, inp: IngestInput) -> None:
        pages = max(inp.max_pages, 1)
        collected = await workflow.execute_activity(COLLECT, {
            "tenant_id": inp.tenant_id, "source_id": inp.source_id, "type": inp.type, "url": inp.url,
            "max_pages": inp.max_pages, "max_depth": inp.max_depth},
            start_to_close_timeout=timedelta(seconds=60 + 15 * pages),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=2),
                                     non_retryable_error_types=PERMANENT))
        refs: list[dict[str, Any]] = collected["articles"]
        self.state["pages_fetched"] = int(collected.get("fetched", len(refs)))
        self.state["pages_seen"] = len(refs)
        self.state["errors"] += int(collected.get("errors", 0))
        self.state["articles_changed"] = sum(1 for r in refs if r["changed"])
        todo = [r["article_id"] for r in refs if r["needs_index"]]
        self.state["pages_indexed"] = len(refs) - len(todo)
        self.state["phase"] = "indexing"
        for start in range(0, len(todo), INDEX_BATCH):
            if self.removing:
                return
            await self._record(inp, "running")  # the counts so far, for GET /v1/knowledge/sources
            batch = todo[start:start + INDEX_BATCH]
            result = await workflow.execute_activity(INDEX_ARTICLES, {
                "tenant_id": inp.tenant_id, "article_ids": batch}, **_INDEX)
            self.state["pages_indexed"] += len(result["indexed"])
            self.state["errors"] += len(result.get("failed", []))
        if inp.type == "url" and refs and not self.removing:
            self.state["phase"] = "retiring"
            retired = await workflow.execute_activity(RETIRE_MISSING, {
                "tenant_id": inp.tenant_id, "source_id": inp.source_id,
                "keep": [r["article_id"] for r in refs]}, **_INDEX)
            self.state["articles_changed"] += len(retired["deleted"])

    async def _remove(self, inp: IngestInput) -> dict[str, Any]:
        """Retire every article of the source (a deleted version each), record it deleted."""
        self.state.update(status="deleting", phase="deleting", next_sync_at=None)
        retired = await workflow.execute_activity(RETIRE_MISSING, {
            "tenant_id": inp.tenant_id, "source_id": inp.source_id, "keep": [],
            "note": f"source {inp.source_id} deleted"}, **_INDEX)
        self.state["articles_changed"] = len(retired["deleted"])
        self.state["phase"] = None
        await self._record(inp, "deleted")
        return dict(self.state)


@workflow.defn(name=INDEX_WORKFLOW)
class IndexArticleWorkflow:
    """Index the newest version of one article (id `knowledge-index/{tenant}/{article}/v{n}`)."""

    @workflow.run
    async def run(self, inp: IndexInput) -> dict[str, Any]:
        result = await workflow.execute_activity(INDEX_ARTICLES, {
            "tenant_id": inp.tenant_id, "article_ids": [inp.article_id]}, **_INDEX)
        return {"article_id": inp.article_id, "version": inp.version,
                "indexed": bool(result["indexed"]), "failed": result.get("failed", [])}


@workflow.defn(name=SEARCH_WORKFLOW)
class SearchWorkflow:
    """One knowledge search on a worker (where the index and the embedding model live)."""

    @workflow.run
    async def run(self, inp: SearchInput) -> list[dict[str, Any]]:
        return await workflow.execute_activity(SEARCH, {
            "tenant_id": inp.tenant_id, "query": inp.query, "k": inp.k},
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=PERMANENT))
