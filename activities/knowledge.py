"""Activities of the knowledge base: collect a source (crawl or extract uploads) into versioned
articles, index articles, retire vanished pages, record a source's status, search.

All are idempotent: articles are written through the unique (tenant, article, version) key and a
write equal to the newest version is a no-op; indexing replaces an article's chunks.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import asdict
from functools import cached_property
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.services import Services
from db.engine import session_scope
from db.errors import NotFound
from db.knowledge import (
    ID_PATTERN,
    delete_article,
    file_article_id,
    get_article,
    list_articles,
    list_uploads,
    mark_indexed,
    page_article_id,
    record_collect_progress,
    save_article,
    update_source,
)
from knowledge.errors import KnowledgeError, UnsupportedFile
from workflows import ingest as W

log = logging.getLogger("flywheel.knowledge")

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
_shared: dict[str, Any] = {}


def _article_lock(tenant_id: str, article_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((tenant_id, article_id), threading.Lock())


def shared_index(settings: Any) -> Any:
    """One KnowledgeIndex per worker process (its BM25 cache must see every write)."""
    from knowledge.embed import get_embedder
    from knowledge.index import KnowledgeIndex

    with _locks_guard:
        index = _shared.get("index")
        if index is None:
            index = _shared["index"] = KnowledgeIndex(settings, get_embedder(settings))
        return index


def _knowledge_failure(err: KnowledgeError) -> ApplicationError:
    return ApplicationError(err.message, type=type(err).__name__, non_retryable=True)


def split_hosts(text: str) -> list[str]:
    return [h.strip() for h in (text or "").split(",") if h.strip()]


class KnowledgeActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @cached_property
    def index(self) -> Any:
        return shared_index(self.services.settings)

    def all(self) -> list:
        return [self.collect, self.index_articles, self.retire_missing, self.record_source, self.search]

    # ---- collect -------------------------------------------------------------------------

    @activity.defn(name=W.COLLECT)
    async def collect(self, p: dict[str, Any]) -> dict[str, Any]:
        """Crawl the URL or extract the uploaded files, store one article per page/file.

        Returns {articles: [{article_id, version, changed, needs_index}], fetched, errors}. A
        crawl stores its pages and records its progress as it goes (_CrawlRecorder); a file that
        cannot be extracted (hostile, unsupported, too large) fails the whole source before any
        article is written."""
        tenant_id, source_id = p["tenant_id"], p["source_id"]
        beat = asyncio.create_task(self._heartbeat())
        try:
            if p["type"] == "url":
                return await self._crawl(p)
            docs = await asyncio.to_thread(self._extract_uploads, tenant_id, source_id)
        except KnowledgeError as err:
            raise _knowledge_failure(err) from None
        finally:
            beat.cancel()
        refs: dict[str, dict] = {}
        await self.services.db(store_docs, tenant_id, source_id, docs, refs)
        return {"articles": list(refs.values()), "fetched": len(docs), "errors": 0}

    async def _heartbeat(self) -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(5)

    async def _crawl(self, p: dict[str, Any]) -> dict[str, Any]:
        from knowledge.crawl import Crawler

        # Only the operator's setting may open internal addresses to the crawler: a tenant's
        # allowed_hosts (its own connector APIs, set with its own key) never applies here.
        allowed = split_hosts(self.services.settings.crawl_allowed_hosts)
        recorder = _CrawlRecorder(self.services, p["tenant_id"], p["source_id"])
        crawler = Crawler(p["url"], max_pages=p["max_pages"], max_depth=p["max_depth"], allowed_hosts=allowed,
                          timeout=10, on_progress=recorder, time_budget=_crawl_budget())
        pages = await crawler.run()
        await recorder.flush(crawler)
        if not any(page.text.strip() for page in pages):
            raise ApplicationError(f"no pages with text found at {p['url']} (check the URL, robots.txt "
                                   "and that the pages are HTML)", type="CrawlError", non_retryable=True)
        return {"articles": list(recorder.refs.values()), "fetched": crawler.fetched, "errors": 0}

    def _extract_uploads(self, tenant_id: str, source_id: str) -> list[dict[str, Any]]:
        from knowledge.extract import extract

        with session_scope(self.services.engine) as session:
            uploads = list_uploads(session, tenant_id, source_id)
        if not uploads:
            raise ApplicationError(f"source {source_id!r} has no uploaded files", type="NotFound",
                                   non_retryable=True)
        docs = []
        for up in uploads:
            try:
                got = extract(up.filename, up.data, up.content_type,
                              max_bytes=self.services.settings.max_upload_bytes)
            except KnowledgeError as err:
                raise type(err)(f"{up.filename}: {err.message}") from None
            article_id = got.article_id or file_article_id(up.filename)
            if not ID_PATTERN.match(article_id):
                raise UnsupportedFile(f"{up.filename}: front matter id {article_id!r} must be 1-128 characters "
                                      "of a-z, 0-9, '.', '_', '-' starting with a letter or digit")
            docs.append({"article_id": article_id, "title": got.title, "text": got.text, "url": got.url,
                         "questions": list(got.questions), "handoff": got.handoff})
        return docs


    # ---- index ---------------------------------------------------------------------------

    @activity.defn(name=W.INDEX_ARTICLES)
    async def index_articles(self, p: dict[str, Any]) -> dict[str, Any]:
        """Index the newest version of each article (chunks replaced; deleted -> removed)."""
        indexed, failed = [], []
        for article_id in p["article_ids"]:
            activity.heartbeat(article_id)
            try:
                indexed.append(await asyncio.to_thread(self.index_newest, p["tenant_id"], article_id))
            except NotFound as err:
                failed.append({"article_id": article_id, "error": str(err)})
        return {"indexed": indexed, "failed": failed}

    def index_newest(self, tenant_id: str, article_id: str) -> dict[str, Any]:
        """Bring the index to the article's newest version; loops if a newer one appears meanwhile
        (so concurrent indexers converge on the newest)."""
        from knowledge.chunk import chunk_text

        with _article_lock(tenant_id, article_id):
            for _ in range(5):
                with session_scope(self.services.engine) as session:
                    row = get_article(session, tenant_id, article_id, include_deleted=True)
                if row.deleted:
                    self.index.delete_article(tenant_id, article_id)
                else:
                    chunks = chunk_text(row.title, row.body)
                    self.index.upsert_article(tenant_id, article_id, row.version, row.title,
                                              row.url or "", chunks, list(row.questions or []),
                                              handoff=bool(row.handoff))
                with session_scope(self.services.engine) as session:
                    mark_indexed(session, tenant_id, article_id, row.version)
                    newest = get_article(session, tenant_id, article_id, include_deleted=True)
                if newest.version == row.version:
                    break
            return {"article_id": article_id, "version": row.version, "deleted": row.deleted}

    # ---- retire / record / search --------------------------------------------------------

    @activity.defn(name=W.RETIRE_MISSING)
    async def retire_missing(self, p: dict[str, Any]) -> dict[str, Any]:
        """Mark deleted the source's articles whose pages were not seen this cycle (all of them
        when the source is deleted: `keep` empty, `note` says why)."""
        tenant_id, keep = p["tenant_id"], set(p["keep"])
        note = p.get("note") or "page no longer on the site"

        def gone(session: Any) -> list[str]:
            out = []
            for row in list_articles(session, tenant_id, source_id=p["source_id"]):
                if row.article_id not in keep:
                    delete_article(session, tenant_id, row.article_id, note=note)
                    out.append(row.article_id)
            return out

        deleted = await self.services.db(gone)
        for article_id in deleted:
            await asyncio.to_thread(self.index_newest, tenant_id, article_id)
        return {"deleted": deleted}

    @activity.defn(name=W.RECORD_SOURCE)
    async def record_source(self, p: dict[str, Any]) -> None:
        await self.services.db(lambda s: update_source(
            s, p["tenant_id"], p["source_id"], status=p["status"], progress=p["progress"],
            error=p.get("error"), clear_error=p.get("error") is None))

    @activity.defn(name=W.SEARCH)
    async def search(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            hits = await asyncio.to_thread(self.index.search, p["tenant_id"], p["query"], int(p.get("k", 5)))
        except KnowledgeError as err:
            raise _knowledge_failure(err) from None
        return [asdict(hit) for hit in hits]


def store_docs(session: Any, tenant_id: str, source_id: str, docs: list[dict], refs: dict[str, dict]) -> None:
    """Save each doc as its article's next version (nothing new when unchanged); ``refs`` (by
    article id) collects {article_id, version, changed, needs_index} across calls."""
    for doc in docs:
        row, created = save_article(session, tenant_id, doc["article_id"], doc["title"], doc["text"],
                                    doc["url"], source_id=source_id, questions=doc.get("questions"),
                                    handoff=bool(doc.get("handoff")))
        previous = refs.get(row.article_id)
        refs[row.article_id] = {"article_id": row.article_id, "version": row.version,
                                "changed": created or bool(previous and previous["changed"]),
                                "needs_index": row.indexed_at is None}


def _crawl_budget() -> float:
    """Seconds the crawl may take: the activity's timeout less a margin to store and return."""
    timeout = activity.info().start_to_close_timeout
    return max((timeout.total_seconds() if timeout else 600.0) - 30.0, 30.0)


class _CrawlRecorder:
    """The crawl's ``on_progress``: every few pages (or second), stores the new pages as
    articles and records the counts in the source row, where GET /v1/knowledge/sources reads
    them while the crawl runs. A source being deleted stops the crawl (SourceRemoved)."""

    EVERY_PAGES = 5
    EVERY_S = 1.0

    def __init__(self, services: Services, tenant_id: str, source_id: str) -> None:
        self.services, self.tenant_id, self.source_id = services, tenant_id, source_id
        self.refs: dict[str, dict] = {}
        self._stored = 0
        self._fetched = 0
        self._at = time.monotonic()

    async def __call__(self, crawler: Any) -> None:
        if crawler.fetched - self._fetched >= self.EVERY_PAGES or time.monotonic() - self._at >= self.EVERY_S:
            await self.flush(crawler)

    async def flush(self, crawler: Any) -> None:
        new = crawler.pages[self._stored:]
        docs = [{"article_id": page_article_id(page.url), "title": page.title or page.url, "text": page.text,
                 "url": page.url} for page in new if page.text.strip()]
        status = await self.services.db(self._write, docs, crawler.fetched)
        self._stored += len(new)
        self._fetched, self._at = crawler.fetched, time.monotonic()
        activity.heartbeat()
        if status in ("deleting", "deleted"):
            raise ApplicationError(f"source {self.source_id} was deleted during the crawl", type="SourceRemoved",
                                   non_retryable=True)

    def _write(self, session: Any, docs: list[dict], fetched: int) -> str:
        store_docs(session, self.tenant_id, self.source_id, docs, self.refs)
        changed = sum(1 for ref in self.refs.values() if ref["changed"])
        return record_collect_progress(session, self.tenant_id, self.source_id, {
            "pages_fetched": fetched, "pages_seen": len(self.refs), "articles_changed": changed})
