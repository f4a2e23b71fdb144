"""Knowledge base: versioned articles, sources (help-center crawls, file uploads), search.

Every article change is a new immutable version, indexed by a Temporal workflow on a worker
(`KnowledgeIndexArticle`): the request waits up to INDEX_WAIT_S for it, so a 2xx with
`indexed: true` means search already reflects the change; otherwise indexing completes later.
Sources are ingested by `KnowledgeIngest` workflows (202 + progress on GET, recorded in the
source row while the crawl runs); deleting a source stops its re-sync and retires its articles.
Search also runs on a worker (`KnowledgeSearch`): the index and the embedding model live only
there (embedded Chroma cannot be shared between processes).
"""
from __future__ import annotations

import asyncio
import difflib
import logging
import uuid
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import current_tenant, get_session, get_settings, get_temporal
from api.errors import InvalidBody, TooLarge, Unavailable
from api.temporal_errors import temporal_call
from db.knowledge import (
    add_upload,
    create_article,
    create_source,
    delete_article,
    get_article,
    get_article_version,
    get_source,
    list_article_versions,
    list_articles,
    list_sources,
    list_uploads,
    rollback_article,
    strip_nul,
    update_article,
    update_source,
)
from db.models import KnowledgeArticle, KnowledgeSource, Tenant
from knowledge.errors import UnsupportedFile
from procedures.durations import parse_duration
from procedures.errors import ProcedureError
from workflows import ingest as W

log = logging.getLogger("flywheel.api")
router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])

INDEX_WAIT_S = 60.0
SEARCH_WAIT_S = 60.0
DELETE_WAIT_S = 30.0
MAX_FILES = 20
MIN_RESYNC_S = 60
SUPPORTED_SUFFIXES = {".pdf", ".docx", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt", ".text"}
SUPPORTED_TYPES = {
    "application/pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text/html", "application/xhtml+xml", "text/markdown", "text/x-markdown", "text/plain"}


# ---- bodies and views ------------------------------------------------------------------------

def _no_controls(url: str | None) -> str | None:
    if url is not None and any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("a URL cannot contain control characters (NUL, newline, tab...)")
    return url


class ArticleIn(BaseModel):
    """An article's content. `questions`: example customer questions it answers (at most 20, each
    at most 300 characters), used to route questions to it and never quoted; omitted = none (a
    PUT replaces the whole content, like `url`). Their limits are checked by the store (422).
    `handoff`: a hand-off article: its `questions` are ones the knowledge base does NOT answer,
    and a customer message close to one is handed to a person instead of answered (its body is
    a note for the team: never indexed nor quoted). It needs questions (422 without)."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(max_length=2_000_000)
    url: str | None = Field(default=None, max_length=2000)
    questions: list[str] | None = Field(default=None, max_length=1000)
    handoff: bool = False

    @field_validator("title", "body", mode="before")
    @classmethod
    def _strip_nul(cls, value: object) -> object:
        """NUL characters are dropped before the length checks (a title of NULs is empty)."""
        return strip_nul(value) if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return _no_controls(url)


class NewArticle(ArticleIn):
    id: str | None = Field(default=None, max_length=128)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^url$")
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    max_pages: int = Field(default=50, ge=1, le=500)
    max_depth: int = Field(default=3, ge=0, le=10)
    resync_every: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _no_controls(url) or url


def _summary(row: KnowledgeArticle) -> dict[str, Any]:
    return {"id": row.article_id, "version": row.version, "title": row.title, "url": row.url,
            "source_id": row.source_id, "sha256": row.sha256, "deleted": row.deleted,
            "handoff": bool(row.handoff), "note": row.note,
            "created_at": row.created_at, "indexed": row.indexed_at is not None}


def _detail(row: KnowledgeArticle) -> dict[str, Any]:
    return {**_summary(row), "body": row.body, "questions": list(row.questions or [])}


def _source_view(row: KnowledgeSource, files: list[str] | None = None) -> dict[str, Any]:
    view = {"source_id": row.source_id, "type": row.type, "url": row.url, "filename": row.filename,
            "max_pages": row.max_pages, "max_depth": row.max_depth, "status": row.status,
            "progress": row.progress, "error": row.error, "resync_every_s": row.resync_every_s,
            "workflow_id": row.workflow_id, "created_at": row.created_at, "updated_at": row.updated_at}
    if files is not None:
        view["files"] = files
    return view


# ---- indexing through the worker -------------------------------------------------------------

async def _index(client: Client, request: Request, row: KnowledgeArticle) -> bool:
    """Index the article's newest version in a workflow; True when done within INDEX_WAIT_S."""
    settings = get_settings(request)
    inp = W.IndexInput(tenant_id=row.tenant_id, article_id=row.article_id, version=row.version)
    async with temporal_call("index article"):
        handle = await client.start_workflow(
            W.INDEX_WORKFLOW, inp, id=W.index_workflow_id(row.tenant_id, row.article_id, row.version),
            task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    try:
        result = await asyncio.wait_for(handle.result(), INDEX_WAIT_S)
    except TimeoutError:
        log.warning("indexing %s v%s is taking long; it completes in the background",
                    row.article_id, row.version)
        return False
    except Exception:
        log.exception("indexing %s v%s failed", row.article_id, row.version)
        return False
    return bool(result.get("indexed"))


async def _changed(client: Client, request: Request, row: KnowledgeArticle, created: bool) -> dict[str, Any]:
    indexed = await _index(client, request, row) if created or row.indexed_at is None else True
    return {"id": row.article_id, "version": row.version, "created": created, "deleted": row.deleted,
            "indexed": indexed}


# ---- articles --------------------------------------------------------------------------------

@router.post("/articles", status_code=201)
async def create(body: NewArticle, request: Request, tenant: Tenant = Depends(current_tenant),
                 session: Session = Depends(get_session),
                 client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """A new article (version 1): id = slug of the title + random suffix, or `id` if given (409
    if taken). Indexed before the response when the worker is quick enough (`indexed`)."""
    row = create_article(session, tenant.id, body.title, body.body, body.url, article_id=body.id,
                         questions=body.questions, handoff=body.handoff)
    return await _changed(client, request, row, True)


@router.get("/articles")
def list_all(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session),
             source_id: str | None = Query(default=None, max_length=64)) -> list[dict[str, Any]]:
    """The newest version of every article that is not deleted (optionally of one source)."""
    return [_summary(r) for r in list_articles(session, tenant.id, source_id=source_id)]


@router.get("/articles/{article_id}")
def read(article_id: str, tenant: Tenant = Depends(current_tenant),
         session: Session = Depends(get_session)) -> dict[str, Any]:
    """The newest version (404 when deleted)."""
    return _detail(get_article(session, tenant.id, article_id))


@router.put("/articles/{article_id}")
async def update(article_id: str, body: ArticleIn, request: Request, tenant: Tenant = Depends(current_tenant),
                 session: Session = Depends(get_session),
                 client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """A new version with this content (example questions included); the same content as the
    newest creates nothing (`created: false`)."""
    row, created = update_article(session, tenant.id, article_id, body.title, body.body, body.url,
                                  body.questions, body.handoff)
    return await _changed(client, request, row, created)


@router.delete("/articles/{article_id}")
async def remove(article_id: str, request: Request, tenant: Tenant = Depends(current_tenant),
                 session: Session = Depends(get_session),
                 client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Publish a "deleted" version and remove the article from the index."""
    row, created = delete_article(session, tenant.id, article_id)
    return await _changed(client, request, row, created)


@router.get("/articles/{article_id}/versions")
def versions(article_id: str, tenant: Tenant = Depends(current_tenant),
             session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    """Every version, oldest first (deletions included)."""
    return [_summary(r) for r in list_article_versions(session, tenant.id, article_id)]


@router.get("/articles/{article_id}/versions/{version}")
def version_detail(article_id: str, version: int, tenant: Tenant = Depends(current_tenant),
                   session: Session = Depends(get_session)) -> dict[str, Any]:
    return _detail(get_article_version(session, tenant.id, article_id, version))


def _as_text(row: KnowledgeArticle) -> list[str]:
    head = [f"# {row.title}"] + ([f"URL: {row.url}"] if row.url else []) + ([] if not row.deleted else ["(deleted)"])
    head += ["Hand-off article: its questions are handed to a person"] if row.handoff else []
    head += [f"{'Hand-off question' if row.handoff else 'Question'}: {q}" for q in row.questions or []]
    return [line + "\n" for line in head + [""] + row.body.splitlines()]


@router.get("/articles/{article_id}/diff")
def diff(article_id: str, from_version: int = Query(alias="from", ge=1), to_version: int = Query(alias="to", ge=1),
         tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> dict[str, Any]:
    """Unified diff (title, URL, example questions and body) between two versions."""
    old = get_article_version(session, tenant.id, article_id, from_version)
    new = get_article_version(session, tenant.id, article_id, to_version)
    text = "".join(difflib.unified_diff(_as_text(old), _as_text(new), f"{article_id} v{old.version}",
                                        f"{article_id} v{new.version}"))
    return {"id": article_id, "from_version": old.version, "to_version": new.version, "diff": text,
            "title_changed": old.title != new.title, "url_changed": old.url != new.url,
            "questions_changed": list(old.questions or []) != list(new.questions or [])}


@router.post("/articles/{article_id}/rollback")
async def roll_back(article_id: str, body: RollbackIn, request: Request, tenant: Tenant = Depends(current_tenant),
                    session: Session = Depends(get_session),
                    client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Publish an old version's content again as a new version (nothing new if it is the newest)."""
    row, created = rollback_article(session, tenant.id, article_id, body.version)
    return await _changed(client, request, row, created)


# ---- search ----------------------------------------------------------------------------------

@router.get("/search")
async def search(request: Request, q: str = Query(min_length=1, max_length=1000), k: int = Query(default=5, ge=1, le=20),
                 tenant: Tenant = Depends(current_tenant), client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Hybrid (vector + BM25) search of the tenant's articles, best first, with confidence `score`."""
    settings = get_settings(request)
    inp = W.SearchInput(tenant_id=tenant.id, query=q, k=k)
    async with temporal_call("search"):
        try:
            hits = await client.execute_workflow(
                W.SEARCH_WORKFLOW, inp, id=f"knowledge-search/{tenant.id}/{uuid.uuid4().hex}",
                task_queue=settings.task_queue, execution_timeout=timedelta(seconds=SEARCH_WAIT_S))
        except WorkflowFailureError as err:
            log.warning("knowledge search failed: %s", err.cause)
            raise Unavailable("search did not complete (is a worker running?); try again") from None
    return {"query": q, "hits": hits}


# ---- sources ---------------------------------------------------------------------------------

def _resync_seconds(text: str | None) -> int | None:
    if not text:
        return None
    try:
        seconds = int(parse_duration(text).total_seconds())
    except ProcedureError as err:
        raise InvalidBody(f"resync_every: {err}") from None
    if seconds < MIN_RESYNC_S:
        raise InvalidBody(f"resync_every must be at least {MIN_RESYNC_S}s")
    return seconds


async def _start_ingest(client: Client, request: Request, session: Session, row: KnowledgeSource) -> None:
    inp = W.IngestInput(tenant_id=row.tenant_id, source_id=row.source_id, type=row.type, url=row.url,
                        max_pages=row.max_pages, max_depth=row.max_depth, resync_every_s=row.resync_every_s)
    try:
        async with temporal_call("start ingestion"):
            try:
                await client.start_workflow(W.INGEST_WORKFLOW, inp, id=row.workflow_id,
                                            task_queue=get_settings(request).task_queue)
            except WorkflowAlreadyStartedError:
                pass
    except Exception:
        update_source(session, row.tenant_id, row.source_id, status="failed",
                      error="could not start the ingestion workflow (Temporal unavailable); add the source again")
        raise


@router.post("/sources", status_code=202)
async def add_source(body: SourceIn, request: Request, tenant: Tenant = Depends(current_tenant),
                     session: Session = Depends(get_session),
                     client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Crawl a help center (breadth-first, robots.txt honoured) into articles; `resync_every`
    ("24h") re-crawls periodically. Progress: GET /v1/knowledge/sources/{source_id}."""
    row = create_source(session, tenant.id, "url", url=body.url, max_pages=body.max_pages,
                        max_depth=body.max_depth, resync_every_s=_resync_seconds(body.resync_every))
    await _start_ingest(client, request, session, row)
    return {"source_id": row.source_id, "workflow_id": row.workflow_id, "status": row.status}


def _check_type(filename: str, content_type: str) -> None:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES and content_type not in SUPPORTED_TYPES:
        raise UnsupportedFile(f"{filename!r} is not a supported file type: upload PDF, DOCX, HTML, "
                              "Markdown or text files")


@router.post("/files", status_code=202)
async def upload_files(request: Request, tenant: Tenant = Depends(current_tenant),
                       session: Session = Depends(get_session),
                       client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Upload one or more files (multipart field `file`, repeated): stored, then extracted and
    indexed by an ingestion workflow (one article per file). 413 over max_upload_bytes per file."""
    limit = get_settings(request).max_upload_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise InvalidBody("send the files as multipart/form-data, field name 'file'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit * MAX_FILES + 1_000_000:
        raise TooLarge(f"upload is larger than {MAX_FILES} files of {limit} bytes")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=10)
    except Exception as exc:
        raise InvalidBody(f"could not read the multipart body: {exc}") from None
    files: list[tuple[str, str, bytes]] = []
    try:
        for upload in form.getlist("file"):
            if isinstance(upload, str):
                raise InvalidBody("field 'file' must be a file, not text")
            raw_name = strip_nul(upload.filename) or "upload"
            name = PurePosixPath(raw_name.replace("\\", "/")).name or "upload"
            media = (upload.content_type or "").split(";")[0].strip().lower()
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise TooLarge(f"{name!r} is larger than the upload limit of {limit:,} bytes")
            _check_type(name, media)
            files.append((name, media, data))
    finally:
        await form.close()
    if not files:
        raise InvalidBody("multipart body must contain at least one file field named 'file'")
    row = create_source(session, tenant.id, "file", filename=", ".join(n for n, _, _ in files)[:1000])
    for seq, (name, media, data) in enumerate(files):
        add_upload(session, tenant.id, row.source_id, seq, name, media or None, data)
    await _start_ingest(client, request, session, row)
    return {"source_id": row.source_id, "workflow_id": row.workflow_id, "status": row.status,
            "files": [n for n, _, _ in files]}


@router.get("/sources")
def sources(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session),
            include_deleted: bool = False) -> list[dict[str, Any]]:
    """The tenant's sources, newest first, with status and progress (deleted sources only with
    `include_deleted=true`)."""
    return [_source_view(r) for r in list_sources(session, tenant.id, include_deleted=include_deleted)]


@router.get("/sources/{source_id}")
def source(source_id: str, tenant: Tenant = Depends(current_tenant),
           session: Session = Depends(get_session)) -> dict[str, Any]:
    """Status (pending, running, succeeded, failed, deleting, deleted) and progress {phase,
    pages_fetched, pages_seen, pages_indexed, articles_changed, errors, cycle, next_sync_at}: the
    crawl records it every few pages, the workflow after each step."""
    row = get_source(session, tenant.id, source_id)
    files = [u.filename for u in list_uploads(session, tenant.id, source_id)] if row.type == "file" else None
    return _source_view(row, files)


@router.delete("/sources/{source_id}", status_code=202)
async def delete_source(source_id: str, request: Request, response: Response,
                        tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session),
                        client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Delete a source: its ingestion (and re-sync) stops, and each of its articles gets a new,
    deleted version (nothing is lost: a rollback restores one). 200 with status "deleted" when
    done within DELETE_WAIT_S, else 202 "deleting" (GET the source to follow it)."""
    row = get_source(session, tenant.id, source_id)
    if row.status == "deleted":
        response.status_code = 200
        return _source_view(row)
    row = update_source(session, tenant.id, source_id, status="deleting")
    inp = W.IngestInput(tenant_id=row.tenant_id, source_id=row.source_id, type=row.type, url=row.url,
                        max_pages=row.max_pages, max_depth=row.max_depth, remove=True)
    async with temporal_call("delete source"):
        # a running ingestion gets the signal; a finished one runs again, with remove=True
        handle = await client.start_workflow(W.INGEST_WORKFLOW, inp, id=row.workflow_id,
                                             task_queue=get_settings(request).task_queue,
                                             start_signal=W.REMOVE_SIGNAL)
    try:
        await asyncio.wait_for(handle.result(), DELETE_WAIT_S)
    except TimeoutError:
        log.info("deleting source %s continues in the background", source_id)
    except Exception:
        log.exception("deleting source %s failed", source_id)
    session.refresh(row)
    if row.status == "deleted":
        response.status_code = 200
    return _source_view(row)
